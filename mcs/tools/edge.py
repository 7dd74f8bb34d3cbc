"""The MCP edge: turns plain functions that return result models into MCP tools.

A registered tool returns its model as ``structuredContent`` (with an ``outputSchema`` derived from the model)
and as JSON text. Any ``MCSError`` becomes an ``isError`` result whose JSON carries ``success: false``, the error
code, the message (what was wrong, which value, what is accepted) and its details, so the model can correct
itself; every tool's outputSchema describes that shape too (``$defs.ErrorResult``). An unexpected exception is
logged with its traceback (to stderr) and reported with its type and message: the server never crashes on input
and never answers a bare "unknown error".

Every call of a tool that changes something (``mcs.core.audit.CHANGING_TOOLS``, by name) is appended to the audit log
when the server has an auditor (``MCSServer.auditor``, set by ``build_server``): the tool modules need nothing.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from mcp.types import Tool as MCPTool
from pydantic import BaseModel, ValidationError

from mcs.core.audit import CHANGING_TOOLS
from mcs.core.errors import InvalidInput, MCSError
from mcs.core.results import ErrorResult

log = logging.getLogger(__name__)

WAITING_THREADS = 64  # threads for tools that wait (trigger, deploy); the SDK's default pool stays for the rest


def success_result(model: BaseModel) -> CallToolResult:
    data = model.model_dump(mode="json")
    return CallToolResult(content=[_text(data)], structured_content=data)


def error_result(exc: MCSError) -> CallToolResult:
    data = {"success": False, **exc.to_dict()}
    return CallToolResult(content=[_text(data)], structured_content=data, is_error=True)


def _text(data: dict[str, Any]) -> TextContent:
    return TextContent(type="text", text=json.dumps(data, ensure_ascii=False, default=str))


ERROR_SCHEMA = ErrorResult.model_json_schema()
ERROR_NOTE = (
    "On failure (isError true) structuredContent is instead an ErrorResult ($defs.ErrorResult): success false, "
    "error (a code), message, and the error's details (field, rule, suggestions, task_id, ...)."
)


def with_error_shape(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (a success model's) plus ``$defs.ErrorResult`` and a note saying when it applies.

    The root stays the success shape, so a client that validates successful results against outputSchema (the
    SDK's does) keeps validating exactly what it did; neither the SDK's server nor its client validates an isError
    result, so the error shape is documented there rather than merged into a union."""
    described = schema.get("description")
    return {
        **schema,
        "description": f"{described}\n\n{ERROR_NOTE}" if described else ERROR_NOTE,
        "$defs": {**schema.get("$defs", {}), "ErrorResult": ERROR_SCHEMA},
    }


class MCSServer(MCPServer):
    """MCPServer whose argument-validation failures come back like every other MCS error: a structured result
    with success false, error "invalid_input", the field, the value and what is accepted (the SDK's own answer is
    plain text). Unknown tools stay protocol-level errors. Over stdio, every line is answered (``stdio_guard``)."""

    def __init__(self, *args: Any, max_json_depth: int = 64, auditor: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_json_depth = max_json_depth
        #: records the calls of changing tools (``mcs.auditing.Auditor``); None: nothing is recorded
        self.auditor = auditor

    async def run_stdio_async(self) -> None:
        from mcs.tools.stdio_guard import guarded_stdio

        async with guarded_stdio(self.max_json_depth) as (read_stream, write_stream):
            await self._lowlevel_server.run(
                read_stream, write_stream, self._lowlevel_server.create_initialization_options()
            )

    async def list_tools(self) -> list[MCPTool]:
        """The tools, each outputSchema also describing the error result (``with_error_shape``)."""
        tools = await super().list_tools()
        for tool in tools:
            if tool.output_schema is not None:
                tool.output_schema = with_error_shape(tool.output_schema)
        return tools

    def tool_inputs(self) -> dict[str, set[str]]:
        """Each registered tool's parameter names (build_server describes in its instructions what is there)."""
        return {t.name: set(t.parameters.get("properties", {})) for t in self._tool_manager.list_tools()}

    def set_instructions(self, text: str) -> None:
        """Replace the instructions the server sends at initialize (composed once every tool is registered)."""
        self._lowlevel_server.instructions = text

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError) and not isinstance(exc, UnexpectedToolError):
                first = cause.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "arguments"
                log.info("tool %s: invalid_input (%s)", name, where)
                error = InvalidInput(where, first.get("input"), first["msg"])
                if self.auditor is not None and name in CHANGING_TOOLS:  # refused before it ran: recorded as such
                    await anyio.to_thread.run_sync(self.auditor.record, name, dict(arguments or {}), error, 0.0)
                return error_result(error)
            raise


def add_tool(
    server: MCPServer,
    fn: Callable[..., Any],
    *,
    read_only: bool,
    destructive: bool = False,
    idempotent: bool = False,
    open_world: bool = False,
    title: str | None = None,
    waits: bool = False,
) -> None:
    """Register ``fn`` (sync or async, returning a pydantic model) as a tool named after it; one call per tool.

    ``waits``: a sync tool that may block for long (a trigger, a deploy) runs in threads of its own limiter
    (``WAITING_THREADS``), so a burst of long waits cannot take every thread the quick tools need."""
    name = fn.__name__
    signature = inspect.signature(fn, eval_str=True)
    model = signature.return_annotation
    auditor = getattr(server, "auditor", None)
    if auditor is not None and name in CHANGING_TOOLS:
        fn = audited(fn, signature, auditor)

    def handle(exc: Exception) -> CallToolResult:
        if isinstance(exc, MCSError):
            log.info("tool %s: %s", name, exc.code)
            return error_result(exc)
        log.exception("tool %s raised unexpectedly", name)
        return error_result(MCSError(f"{name} failed unexpectedly: {type(exc).__name__}: {exc}"))

    if waits and not inspect.iscoroutinefunction(fn):
        limiter: dict[str, anyio.CapacityLimiter] = {}

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> CallToolResult:
            if not limiter:  # made on first use: a limiter belongs to the running event loop
                limiter["it"] = anyio.CapacityLimiter(WAITING_THREADS)
            try:
                call = functools.partial(fn, *args, **kwargs)
                return success_result(await anyio.to_thread.run_sync(call, limiter=limiter["it"]))
            except Exception as exc:
                return handle(exc)

    elif inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> CallToolResult:
            try:
                return success_result(await fn(*args, **kwargs))
            except Exception as exc:
                return handle(exc)

    else:

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> CallToolResult:
            try:
                return success_result(fn(*args, **kwargs))
            except Exception as exc:
                return handle(exc)

    returns = Annotated[CallToolResult, model]
    wrapper.__signature__ = signature.replace(return_annotation=returns)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{p.name: p.annotation for p in signature.parameters.values()}, "return": returns}
    server.add_tool(
        wrapper,
        name=name,
        title=title,
        description=inspect.cleandoc(fn.__doc__ or ""),
        annotations=ToolAnnotations(
            title=title,
            read_only_hint=read_only,
            destructive_hint=destructive,
            idempotent_hint=idempotent,
            open_world_hint=open_world,
        ),
    )


def audited(fn: Callable[..., Any], signature: inspect.Signature, auditor: Any) -> Callable[..., Any]:
    """``fn`` whose every call is recorded by ``auditor`` (``mcs.auditing.Auditor``): its arguments as given (the
    request context left out), its outcome and its time. A sync tool is recorded in the thread it runs in; an async
    one records from a worker thread, so a slow Redis never stalls the event loop."""
    name = fn.__name__

    def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = signature.bind_partial(*args, **kwargs).arguments
        return {k: v for k, v in bound.items() if not isinstance(v, Context)}

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def recorded_async(*args: Any, **kwargs: Any) -> Any:
            started = anyio.current_time()
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                elapsed_ms = (anyio.current_time() - started) * 1000
                await anyio.to_thread.run_sync(auditor.record, name, arguments(args, kwargs), exc, elapsed_ms)
                raise
            elapsed_ms = (anyio.current_time() - started) * 1000
            await anyio.to_thread.run_sync(auditor.record, name, arguments(args, kwargs), result, elapsed_ms)
            return result

        return recorded_async

    @functools.wraps(fn)
    def recorded(*args: Any, **kwargs: Any) -> Any:
        return auditor.call(name, arguments(args, kwargs), functools.partial(fn, *args, **kwargs))

    return recorded
