"""Checks on call arguments before anything is sent: shape, JSON-ness, size, and the task's declared parameters."""

from __future__ import annotations

import json
import math
from typing import Any

from mcs.core.errors import InvalidInput
from mcs.core.models import TaskRecord

JSON_RULE = "values must be JSON: objects, arrays, strings, numbers, booleans, null"


def encoded_size(value: Any, field: str) -> int:
    """Bytes of ``value`` as strict JSON; NaN, Infinity and non-JSON types are refused."""
    try:
        return len(json.dumps(value, allow_nan=False, ensure_ascii=False).encode())
    except ValueError:
        raise InvalidInput(field, _find_non_finite(value), "NaN and Infinity are not valid JSON numbers") from None
    except TypeError as exc:
        raise InvalidInput(field, str(exc), JSON_RULE) from None


def check_call_arguments(
    record: TaskRecord, args: Any, kwargs: Any, max_bytes: int
) -> tuple[list[Any], dict[str, Any]]:
    """Validate ``args``/``kwargs`` for a call of ``record``; returns them normalised (None -> empty)."""
    args = [] if args is None else args
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(args, list):
        raise InvalidInput("args", args, "args must be a JSON array (list) of positional arguments")
    if not isinstance(kwargs, dict):
        raise InvalidInput("kwargs", kwargs, "kwargs must be a JSON object of keyword arguments")
    size = encoded_size(args, "args") + encoded_size(kwargs, "kwargs")
    if size > max_bytes:
        rule = f"arguments must be at most {max_bytes} bytes as JSON (MCS_MAX_PAYLOAD_BYTES)"
        raise InvalidInput("args/kwargs", f"<{size} bytes>", rule)
    # The generated function puts required parameters first (a Python signature must): positions follow that order.
    declared = [p.name for p in sorted(record.parameters, key=lambda p: not p.required)]
    if len(args) > len(declared):
        rule = f"task {record.name!r} takes at most {len(declared)} positional argument(s): {declared}"
        raise InvalidInput("args", f"<{len(args)} values>", rule)
    positional = set(declared[: len(args)])
    unknown = sorted(set(kwargs) - set(declared))
    if unknown:
        raise InvalidInput("kwargs", unknown, f"task {record.name!r} accepts only these parameters: {declared}")
    twice = sorted(positional & set(kwargs))
    if twice:
        raise InvalidInput("kwargs", twice, "given both positionally (args) and by name (kwargs)")
    missing = [p.name for p in record.parameters if p.required and p.name not in positional and p.name not in kwargs]
    if missing:
        raise InvalidInput("kwargs", missing, f"missing required parameter(s) of task {record.name!r}")
    return args, kwargs


def _find_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
    for item in items:
        found = _find_non_finite(item)
        if found is not None:
            return found
    return None
