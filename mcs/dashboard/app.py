"""The dashboard's web app: Starlette (the web stack the MCP SDK brings) and Jinja2 templates, autoescaped.

Pages are rendered on the server; each live part of a page is a fragment at its own URL (``/fragments/...``) that
a few lines of plain JavaScript (``static/dashboard.js``) fetch again every ``MCS_DASHBOARD_REFRESH_S`` and put in
place, so the page stays current without a front-end framework. Nothing is escaped by hand: every value goes
through Jinja2's autoescape. The page's scripts and styles come only from the dashboard itself (a strict
Content-Security-Policy), and forms post only to it.

Routes: ``/`` (every task), ``/tasks/{name}`` (one task), ``/audit`` (the audit log), ``/metrics`` (Prometheus),
``/login`` and ``/logout``, ``POST /tasks/{name}/{scale|rollback|undeploy}``, ``/healthz``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mcs.core.audit import CHANGING_TOOLS, check_tool_name, parse_since
from mcs.core.errors import MCSError, Unauthorized
from mcs.core.names import validate_name
from mcs.dashboard import actions
from mcs.dashboard.events import EventMonitor
from mcs.dashboard.follow import AuditFollower
from mcs.dashboard.metrics import CONTENT_TYPE_LATEST, LiveCollector, Metrics
from mcs.dashboard.snapshot import Snapshotter
from mcs.services import Services

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
AUDIT_PAGE_ENTRIES = 200


def environment() -> Environment:
    """Jinja2 with autoescape on for every template (they are all HTML), undefined names an error."""
    env = Environment(
        loader=PackageLoader("mcs.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ms"] = _ms
    env.filters["json"] = _json
    return env


def _json(value: Any) -> str:
    """JSON as a person reads it (non-ASCII kept as it is); a plain string, so autoescape escapes it."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _when(value: Any) -> str:
    """An epoch time, a datetime or an ISO string as 'YYYY-MM-DD HH:MM:SS' (UTC)."""
    if value is None or value == "":
        return "–"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ms(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "–"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


class Dashboard:
    """The app's state: services, event monitor, metrics, snapshots, the audit follower and the templates."""

    def __init__(self, services: Services, listen_events: bool = True) -> None:
        self.services = services
        self.settings = services.settings
        self.metrics = Metrics()
        self.monitor = EventMonitor(self.settings, on_event=self.metrics.on_task_event) if listen_events else None
        self.snapshots = Snapshotter(services, self.monitor, self.metrics)
        self.metrics.registry.register(LiveCollector(self.snapshots))
        self.follower = AuditFollower(services, self.metrics.on_audit)
        self.templates = environment()

    def start(self) -> None:
        self.snapshots.refresh()
        self.snapshots.start()
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()
        self.snapshots.stop()

    # -- rendering ------------------------------------------------------------------------------------------

    def render(self, request: Request, name: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        cookie = request.cookies.get(actions.SESSION_COOKIE)
        logged_in = actions.logged_in(self.settings, cookie)
        context = {
            "snapshot": self.snapshots.latest(),
            "refresh_s": self.settings.dashboard_refresh_s,
            "logged_in": logged_in,
            "actions_enabled": self.settings.dashboard_token is not None,
            "csrf": actions.csrf_value(self.settings) if logged_in else "",
            "scale_available": actions.scale_available(self.services),
            "notice": request.query_params.get("notice", "")[:500],
            "problem": request.query_params.get("problem", "")[:500],
            **values,
        }
        html = self.templates.get_template(name).render(context)
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    # -- pages ----------------------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return self.render(request, "index.html")

    async def tasks_fragment(self, request: Request) -> Response:
        return self.render(request, "_tasks.html")

    async def task_page(self, request: Request) -> Response:
        detail = await self._detail(request, with_logs=True)
        if detail is None:
            return self._unknown(request)
        return self.render(request, "task.html", detail=detail)

    async def task_fragment(self, request: Request) -> Response:
        detail = await self._detail(request, with_logs=request.query_params.get("logs") == "1")
        if detail is None:
            return self._unknown(request)
        part = "_task_logs.html" if request.query_params.get("logs") == "1" else "_task_live.html"
        return self.render(request, part, detail=detail)

    async def _detail(self, request: Request, with_logs: bool) -> Any:
        name = request.path_params["name"]
        try:
            validate_name(name)
        except MCSError:
            return None
        return await anyio.to_thread.run_sync(self.snapshots.detail, name, with_logs)

    def _unknown(self, request: Request) -> Response:
        name = request.path_params["name"]
        return self.render(request, "message.html", 404, title="Unknown task", text=f"No task {name} is registered.")

    async def audit_page(self, request: Request) -> Response:
        query = request.query_params
        task, tool, since = query.get("task") or None, query.get("tool") or None, query.get("since") or None
        problem = ""
        entries: list[Any] = []
        try:
            task = validate_name(task, "task") if task else None
            tool = check_tool_name(tool) if tool else None
            when = parse_since(since) if since else None
            entries = await anyio.to_thread.run_sync(
                lambda: self.services.audit_log.read(task, tool, when, AUDIT_PAGE_ENTRIES)
            )
        except MCSError as exc:
            problem = exc.message
        filters = {"task": task or "", "tool": tool or "", "since": since or ""}
        return self.render(
            request, "audit.html", entries=entries, filters=filters, tools=sorted(CHANGING_TOOLS), audit_problem=problem
        )

    async def metrics_page(self, request: Request) -> Response:
        body = await anyio.to_thread.run_sync(self.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    # -- session and actions --------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self.render(request, "login.html")

    async def login(self, request: Request) -> Response:
        form = await request.form()
        if not actions.token_matches(self.settings, str(form.get("token") or "")):
            why = "the dashboard is read-only (no MCS_DASHBOARD_TOKEN)" if self.settings.dashboard_token is None else ""
            return self.render(request, "login.html", 403, login_problem=why or "that is not the dashboard token")
        response = RedirectResponse("/?notice=logged+in", status_code=303, headers=SECURITY_HEADERS)
        response.set_cookie(
            actions.SESSION_COOKIE, actions.session_value(self.settings) or "", httponly=True, samesite="strict"
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/?notice=logged+out", status_code=303, headers=SECURITY_HEADERS)
        response.delete_cookie(actions.SESSION_COOKIE)
        return response

    async def act(self, request: Request) -> Response:
        name, action = request.path_params["name"], request.path_params["action"]
        form = dict(await request.form())
        try:
            if not _same_origin(request):
                raise Unauthorized("refused: the form was posted from another site")
            actions.authorize(self.settings, request.cookies.get(actions.SESSION_COOKIE), form.get("csrf"))
            message = await anyio.to_thread.run_sync(actions.run_action, self.services, action, name, form)
        except Unauthorized as exc:
            return self.render(request, "message.html", 403, title="Refused", text=exc.message, task_name=name)
        except MCSError as exc:
            status = 501 if exc.code == "not_available" else 400 if exc.code == "invalid_input" else 409
            return self.render(request, "message.html", status, title=f"{action} failed", text=exc.message)
        await anyio.to_thread.run_sync(self.snapshots.refresh)
        target = "/" if action == "undeploy" else f"/tasks/{name}"
        return RedirectResponse(f"{target}?{_query(notice=message)}", status_code=303, headers=SECURITY_HEADERS)


def _same_origin(request: Request) -> bool:
    """A browser's Origin header (sent with every POST) must name this dashboard; a client without one (curl) still
    needs the session cookie and the CSRF field."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def _query(**values: str) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v[:300] for k, v in values.items()})


def build_app(services: Services | None = None, dashboard: Dashboard | None = None) -> Starlette:
    """The dashboard's ASGI app; its background work (snapshots, event receivers, audit follower) runs while the
    app is served (Starlette's lifespan)."""
    if dashboard is None:
        from mcs.core.settings import load_settings

        dashboard = Dashboard(services or Services(load_settings()))
    d = dashboard

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(d.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(d.stop)

    from importlib.resources import files

    static = StaticFiles(directory=str(files("mcs.dashboard") / "static"))
    routes = [
        Route("/", d.index),
        Route("/fragments/tasks", d.tasks_fragment),
        Route("/tasks/{name}", d.task_page),
        Route("/fragments/tasks/{name}", d.task_fragment),
        Route("/tasks/{name}/{action}", d.act, methods=["POST"]),
        Route("/audit", d.audit_page),
        Route("/metrics", d.metrics_page),
        Route("/login", d.login_page, methods=["GET"]),
        Route("/login", d.login, methods=["POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Route("/healthz", d.healthz),
        Mount("/static", static, name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dashboard = d
    return app
