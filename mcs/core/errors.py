"""The one root error type of MCS and its few subclasses.

Every error carries a short machine-readable ``code`` and a message that says what was wrong, with which value,
and what would be accepted. Foreign errors (Redis, Celery, Docker) are translated into these at one boundary each,
and the MCP edge turns them into tool results the model can act on.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MCSError(Exception):
    """Root of every error MCS raises on purpose."""

    code = "mcs_error"
    _by_code: ClassVar[dict[str, type[MCSError]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        MCSError._by_code.setdefault(cls.code, cls)

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MCSError:
        """The typed error that ``to_dict`` wrote (e.g. a deploy worker's answer): the subclass of its code, with
        its message and details. A code this side does not know keeps its code on a plain MCSError."""
        code = str(data.get("error") or DeployError.code)
        details = {k: v for k, v in data.items() if k not in ("success", "error", "message")}
        kind = cls._by_code.get(code, MCSError)
        error = kind.__new__(kind)
        MCSError.__init__(error, str(data.get("message") or code), **details)
        if isinstance(error, InvalidInput):
            error.field, error.rule = details.get("field", ""), details.get("rule", "")
        if kind is MCSError and code != MCSError.code:
            error.code = code
        return error


class InvalidInput(MCSError):
    """A value given by a caller breaks a rule; ``field`` names it and ``rule`` says what is accepted."""

    code = "invalid_input"

    def __init__(self, field: str, value: Any, rule: str, **details: Any) -> None:
        shown = _shorten(value)
        super().__init__(f"invalid {field} {shown}: {rule}", field=field, rule=rule, **details)
        self.field = field
        self.value = value
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


class WorkerLost(TaskFailed):
    """A call ended its worker (a signal, most often the memory limit) on each delivery and is not tried again."""

    code = "worker_lost"


class DeployError(MCSError):
    """A deploy could not complete; details carry the step and the tail of the relevant log."""

    code = "deploy_failed"


class Unauthorized(MCSError):
    """A deploy message whose signature, age or shape does not verify."""

    code = "unauthorized"


def _shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
