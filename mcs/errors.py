"""The one root error type of MCS and its few subclasses.

Every error carries a short machine-readable ``code`` and a message that says what was wrong, with which value,
and what would be accepted. Foreign errors (Redis, Celery, Docker) are translated into these at one boundary each,
and the MCP edge turns them into tool results the model can act on.
"""

from __future__ import annotations

from typing import Any


class MCSError(Exception):
    """Root of every error MCS raises on purpose."""

    code = "mcs_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class InvalidInput(MCSError):
    """A value given by a caller breaks a rule; ``field`` names it and ``rule`` says what is accepted."""

    code = "invalid_input"

    def __init__(self, field: str, value: Any, rule: str, **details: Any) -> None:
        shown = _shorten(value)
        super().__init__(f"invalid {field} {shown}: {rule}", field=field, rule=rule, **details)
        self.field = field
        self.rule = rule


class NotFound(MCSError):
    """A task, task id or deployment MCS does not know."""

    code = "not_found"


class Conflict(MCSError):
    """The request collides with existing state (a folder already there, a deploy in progress)."""

    code = "conflict"


class ServiceUnavailable(MCSError):
    """Redis, the Celery broker or the Docker daemon did not answer."""

    code = "service_unavailable"


class TaskTimeout(MCSError):
    """A task did not finish within the time the caller allowed; ``task_id`` lets the caller follow up."""

    code = "timeout"


class TaskFailed(MCSError):
    """A task ran and raised; details carry the exception type, message and a bounded traceback."""

    code = "task_failed"


class DeployError(MCSError):
    """A deploy could not complete; details carry the step and the tail of the relevant log."""

    code = "deploy_failed"


def _shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
