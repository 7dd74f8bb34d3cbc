"""The audit log's rules: which tools it records, what of their arguments it keeps, and the shape of an entry.

An entry says what an agent (or a person on the dashboard) changed: when, which tool, which task, the arguments, the
outcome and how long it took. Arguments are kept without secrets and without file contents: a content field
(function bodies, file contents, the files of a bundle) or any long string is replaced by its digest,
``sha256:<12 hex>``, and its length, so the log says *that* something was given and lets two entries be compared,
without holding it; a value whose name looks like a secret (password, token, secret, credential, api key, ...) is
replaced by its length alone. The store is
``Redis.audit.AuditLog`` (a Redis stream bounded by ``MCS_AUDIT_MAX_ENTRIES``).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from mcs.core.errors import InvalidInput

#: The tools that change something: every call of one is appended to the audit log (by the MCP edge, by name, so
#: a tool module needs nothing of its own). Tools that only read, or only run registered tasks, are not recorded.
CHANGING_TOOLS = frozenset(
    {
        "generate_startMain_code",
        "deploy_task",
        "undeploy_task",
        "register_task_info",
        "scale_task",
        "rollback_task",
        "promote_task",
        "cancel_celery_task",
    }
)
#: The changing tools that start or stop workers: their entries are a task's deploy history (and deploy metrics).
DEPLOY_TOOLS = frozenset({"deploy_task", "undeploy_task", "scale_task", "rollback_task", "promote_task"})

#: Names whose values are secrets (a word of the name: redis_password, deploy_secret, api_key, auth_token, ...).
_SECRET_NAME = re.compile(
    r"(^|[_-])(pass(word|wd)?|secrets?|tokens?|credentials?|api[_-]?keys?|private[_-]?keys?|auth|cookies?)($|[_-])",
    re.I,
)
#: Names whose values are code or file contents.
CONTENT_NAMES = frozenset({"function_body", "content", "contents", "main_content", "files", "data", "bundle"})
MAX_PLAIN_CHARS = 200  # a longer string is digested: it is content, not a name or a choice
MAX_ITEMS = 50  # list items and dict keys kept per level (the rest are counted)
MAX_DEPTH = 6
TOOL_RULE = "a tool name of letters, digits and '_' (e.g. deploy_task)"
_TOOL = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
SINCE_RULE = "an ISO-8601 time (2026-12-01T10:00:00Z) or an age: a number and s, m, h or d (e.g. 30m, 2h, 7d)"
_AGE = re.compile(r"(\d{1,9})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def digest(value: Any) -> str:
    """``sha256:<first 12 hex>`` of a value's text (JSON for anything but a string)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def digested(value: Any) -> dict[str, Any]:
    """What stands for a withheld value: its digest and its size (characters of a string, items of a collection)."""
    size = len(value) if isinstance(value, str | list | dict) else len(str(value))
    return {"digest": digest(value), "length": size}


def withheld(value: Any) -> dict[str, Any]:
    """What stands for a secret: only that one was given, and its length. No digest: a short secret's hash could be
    guessed back, and no one needs to compare two secrets from the log."""
    return {"withheld": "secret", "length": len(value) if isinstance(value, str) else len(str(value))}


def redact(value: Any, name: str = "", depth: int = 0) -> Any:
    """``value`` as the audit log keeps it: secrets, contents and long strings digested, big collections cut."""
    if name and _SECRET_NAME.search(name):
        return withheld(value)
    if name in CONTENT_NAMES:
        return digested(value)
    if isinstance(value, str):
        return value if len(value) <= MAX_PLAIN_CHARS else digested(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= MAX_DEPTH:
        return digested(value)
    if isinstance(value, dict):
        kept = {str(k): redact(v, str(k), depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
        if len(value) > MAX_ITEMS:
            kept["..."] = f"{len(value) - MAX_ITEMS} more keys"
        return kept
    if isinstance(value, list | tuple):
        items = [redact(v, name, depth + 1) for v in list(value)[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"... {len(value) - MAX_ITEMS} more items")
        return items
    return digested(str(value))  # anything else (an object a tool was given): named by its digest only


def redact_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """A tool's arguments for the log: each redacted by its name (see :func:`redact`)."""
    return {name: redact(value, name) for name, value in arguments.items()}


class AuditEntry(BaseModel):
    """One recorded call of a changing tool (or a dashboard action)."""

    id: str = Field("", description="the entry's id in the stream (time-ordered)")
    at: str = Field(description="when the call ended (UTC, ISO-8601)")
    tool: str
    task_name: str | None = Field(None, description="the task it concerned, when there was one")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="the arguments, secrets and contents replaced by sha256 digest and length"
    )
    outcome: str = Field(description="ok, or the error code (invalid_input, conflict, deploy_failed, ...)")
    message: str | None = Field(None, description="the error's message (an error outcome), shortened")
    duration_ms: float = 0.0
    via: str = Field("mcp", description="mcp (a tool call) or dashboard (a person's action)")


class AuditLogResult(BaseModel):
    """get_audit_log: the entries that match, newest first."""

    success: bool = True
    message: str
    entries: list[AuditEntry]
    count: int
    max_entries: int = Field(description="about how many entries the log keeps (MCS_AUDIT_MAX_ENTRIES)")


def check_tool_name(value: Any, field: str = "tool") -> str:
    if not isinstance(value, str) or not _TOOL.fullmatch(value):
        raise InvalidInput(field, value, TOOL_RULE)
    return value


def parse_since(value: Any, now: datetime | None = None) -> datetime:
    """``since`` of get_audit_log: an ISO-8601 time (naive times are UTC) or an age such as ``30m``."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("since", value, SINCE_RULE)
    text = value.strip()
    age = _AGE.fullmatch(text)
    if age:
        return (now or datetime.now(UTC)) - timedelta(seconds=int(age[1]) * _UNITS[age[2]])
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise InvalidInput("since", value, SINCE_RULE) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def short_message(message: str | None, limit: int = 300) -> str | None:
    if message is None:
        return None
    return message if len(message) <= limit else message[: limit - 3] + "..."
