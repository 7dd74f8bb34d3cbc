"""The dashboard's actions (scale, roll back, undeploy) and who may take them.

Reading needs nothing; acting needs the token of ``MCS_DASHBOARD_TOKEN``. A person gives it once on the login form:
the dashboard answers with a session cookie (HttpOnly, SameSite=Strict) that holds an HMAC of the token, never the
token itself, and every action form carries a second HMAC (a CSRF field) that another site cannot know. Both are
compared in constant time (``hmac.compare_digest``). Without a token configured, the dashboard is read-only.

Each action goes to the deploy worker as the MCP tools send it (signed, through ``DeployClient``) and is recorded in
the audit log with ``via: "dashboard"``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from mcs.core import protocol
from mcs.core.errors import InvalidInput, MCSError, Unauthorized
from mcs.core.lifecycle import check_version_ref
from mcs.core.names import validate_name

if TYPE_CHECKING:
    from mcs.core.settings import Settings
    from mcs.services import Services

SESSION_COOKIE = "mcs_dashboard_session"
UNDEPLOY_TIMEOUT_S = 120.0
ACTIONS = ("scale", "rollback", "undeploy")


class NotAvailable(MCSError):
    """An action this MCS cannot take (its deploy client has no such operation)."""

    code = "not_available"


def _mac(settings: Settings, purpose: str) -> str | None:
    token = settings.dashboard_token
    if token is None or not token.get_secret_value():
        return None
    return hmac.new(token.get_secret_value().encode(), purpose.encode(), hashlib.sha256).hexdigest()


def token_matches(settings: Settings, given: str) -> bool:
    token = settings.dashboard_token
    if token is None or not token.get_secret_value() or not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(), token.get_secret_value().encode())


def session_value(settings: Settings) -> str | None:
    """The session cookie's value once logged in (an HMAC of the token, so the cookie never holds the token)."""
    return _mac(settings, "mcs-dashboard-session")


def csrf_value(settings: Settings) -> str | None:
    """The hidden field every action form carries."""
    mac = _mac(settings, "mcs-dashboard-csrf")
    return mac[:32] if mac else None


def logged_in(settings: Settings, cookie: str | None) -> bool:
    expected = session_value(settings)
    return bool(expected and cookie and hmac.compare_digest(cookie.encode(), expected.encode()))


def authorize(settings: Settings, cookie: str | None, csrf: str | None) -> None:
    """Unauthorized unless the session cookie and the form's CSRF field are both right (a token is configured)."""
    if settings.dashboard_token is None:
        raise Unauthorized(
            "the dashboard is read-only: actions need a token, set MCS_DASHBOARD_TOKEN and restart the dashboard"
        )
    expected = csrf_value(settings) or ""
    if not logged_in(settings, cookie) or not csrf or not hmac.compare_digest(csrf.encode(), expected.encode()):
        raise Unauthorized("refused: this action needs the dashboard token (log in with MCS_DASHBOARD_TOKEN first)")


def scale_available(services: Services) -> bool:
    return callable(getattr(services.deploy_client, "scale", None))


def run_action(services: Services, action: str, task_name: str, form: dict[str, Any]) -> str:
    """Take one action and record it in the audit log; the message to show. Raises the MCSError it met."""
    if action not in ACTIONS:
        raise InvalidInput("action", action, f"one of {', '.join(ACTIONS)}")
    validate_name(task_name, "task_name")
    if action == "scale":
        replicas = _replicas(form.get("replicas"), services.settings.max_replicas)
        arguments: dict[str, Any] = {"task_name": task_name, "replicas": replicas}
        tool = "scale_task"
    elif action == "rollback":
        arguments = {"task_name": task_name, "version": check_version_ref(form.get("version"))}
        tool = "rollback_task"
    else:
        arguments = {"task_name": task_name}
        tool = "undeploy_task"
    result = services.auditor.call(tool, arguments, lambda: _send(services, action, arguments), via="dashboard")
    return str(result.get("message") or f"{action} of {task_name}: done")


def _send(services: Services, action: str, arguments: dict[str, Any]) -> dict[str, Any]:
    client = services.deploy_client
    if action == "scale":
        scale = getattr(client, "scale", None)
        if not callable(scale):
            raise NotAvailable("scaling is not available in this MCS: its deploy client has no scale operation yet")
        answer = scale(arguments["task_name"], arguments["replicas"])
        return answer if isinstance(answer, dict) else _as_dict(answer)
    if action == "rollback":
        return client.call(protocol.ROLLBACK, arguments, services.settings.deploy_timeout_s)
    return client.call(protocol.UNDEPLOY, arguments, UNDEPLOY_TIMEOUT_S)


def _replicas(value: Any, max_replicas: int) -> int:
    try:
        replicas = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput("replicas", value, f"a whole number from 0 to {max_replicas}") from None
    if not 0 <= replicas <= max_replicas:
        raise InvalidInput("replicas", value, f"a whole number from 0 to {max_replicas}")
    return replicas


def _as_dict(answer: Any) -> dict[str, Any]:
    dump = getattr(answer, "model_dump", None)
    return dump(mode="json") if callable(dump) else {"message": str(answer)}
