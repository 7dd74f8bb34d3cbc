"""Recording what changed: one audit entry per call of a changing tool (or a dashboard action), with its outcome.

The MCP edge wraps every tool named in ``mcs.core.audit.CHANGING_TOOLS`` with :meth:`Auditor.call`, so a tool module
needs nothing of its own; the dashboard records its actions the same way (``via="dashboard"``). Recording never
changes a tool's answer: an audit log that cannot be written (Redis gone) is reported on stderr, and the tool's own
result, or its own error, goes back as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from mcs.core.audit import AuditEntry, redact_arguments, short_message
from mcs.core.errors import MCSError

if TYPE_CHECKING:
    from Redis.audit import AuditLog

log = logging.getLogger(__name__)
T = TypeVar("T")


class Auditor:
    """Appends entries to the audit log given by ``store`` (a callable, so that nothing connects until the first
    changing call)."""

    def __init__(self, store: Callable[[], AuditLog]) -> None:
        self._store = store

    def call(self, tool: str, arguments: dict[str, Any], fn: Callable[[], T], via: str = "mcp") -> T:
        """Run ``fn`` (the tool's work) and record it: ok, or the error's code and message. Returns or raises as
        ``fn`` did."""
        started = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            self.record(tool, arguments, exc, (time.perf_counter() - started) * 1000, via)
            raise
        self.record(tool, arguments, result, (time.perf_counter() - started) * 1000, via)
        return result

    def record(self, tool: str, arguments: dict[str, Any], outcome: Any, duration_ms: float, via: str = "mcp") -> None:
        """Append one entry; ``outcome`` is the tool's result, or the exception it raised."""
        try:
            self._store().append(entry_for(tool, arguments, outcome, duration_ms, via))
        except Exception as exc:  # the tool's own answer matters more than its record: say so, never mask it
            log.warning("audit log: could not record %s (%s: %s)", tool, type(exc).__name__, exc)


def entry_for(tool: str, arguments: dict[str, Any], outcome: Any, duration_ms: float, via: str) -> AuditEntry:
    """The entry of one call: the task from the arguments, else from the result or the error's details."""
    task = arguments.get("task_name")
    if isinstance(outcome, BaseException):
        details = outcome.details if isinstance(outcome, MCSError) else {}
        code = outcome.code if isinstance(outcome, MCSError) else "unexpected_error"
        message = outcome.message if isinstance(outcome, MCSError) else f"{type(outcome).__name__}: {outcome}"
        task = task or details.get("task_name")
    else:
        code, message = "ok", None
        task = task or getattr(outcome, "task_name", None)
    return AuditEntry(
        at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        tool=tool,
        task_name=task if isinstance(task, str) else None,
        arguments=redact_arguments({k: v for k, v in arguments.items() if v is not None}),
        outcome=code,
        message=short_message(message),
        duration_ms=round(duration_ms, 1),
        via=via,
    )
