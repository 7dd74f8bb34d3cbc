"""Checks on call arguments before anything is sent: shape, JSON-ness, size, and the task's declared parameters:
their names, the required ones, and each value against the parameter's declared type.

A declared type (``mcs.core.types``' grammar) is compiled once into a small checker (cached by its text), so a
call costs a walk over its values and nothing more. The checks are JSON's: int (not bool), float (an int is fine),
str, bool, None, list / tuple / set / Sequence (a JSON array, each item checked), dict / Mapping (a JSON object,
each value checked: JSON keys are strings), Optional / Union / ``X | None``, Literal. Any, object, bytes and any
type outside the grammar (a record stored by an older version) accept every value.
"""

from __future__ import annotations

import ast
import functools
import json
import math
from collections.abc import Callable
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
    specs = {p.name: p for p in record.parameters}
    for index, value in enumerate(args):
        _check_value(record.name, specs[declared[index]], value, f"args[{index}]")
    for name, value in kwargs.items():
        _check_value(record.name, specs[name], value, f"kwargs.{name}")
    return args, kwargs


# -- declared types -------------------------------------------------------------------------------------------

# A checker returns None when the value fits, else (where inside the value, what was expected, the value found).
Failure = tuple[str, str, Any]
Checker = Callable[[Any], Failure | None]

MAX_SHOWN_CHARS = 80


def _check_value(task_name: str, spec: Any, value: Any, field: str) -> None:
    checker = value_checker(spec.type)
    if checker is None or (value is None and not spec.required and spec.default is None):
        return  # anything goes, or None for a parameter whose default is None
    failure = checker(value)
    if failure is None:
        return
    where, expected, found = failure
    inside = f" (at {spec.name}{where})" if where else ""
    hint = _hint(expected, found)
    rule = (
        f"parameter {spec.name!r} of task {task_name!r} is declared {spec.type}: expected {expected}{inside}, "
        f"got {json_type(found)} {_shown(found)}{hint}"
    )
    raise InvalidInput(field, value, rule, parameter=spec.name, expected=spec.type, got=json_type(found))


def json_type(value: Any) -> str:
    """The JSON name of a value's type, as the caller wrote it."""
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def _hint(expected: str, found: Any) -> str:
    if isinstance(found, str) and expected in ("int", "float"):
        try:
            float(found)
        except ValueError:
            return ""
        return ": send the number itself, without quotes"
    if isinstance(found, bool) and expected in ("int", "float"):
        return ": a boolean is not a number here"
    return ""


@functools.lru_cache(maxsize=1024)
def value_checker(type_text: str) -> Checker | None:
    """The checker of a declared type, or None when the type accepts every value (Any, object, a type outside
    the grammar, text that does not parse)."""
    try:
        tree = ast.parse(type_text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    try:
        return _compile(tree.body)
    except _Unknown:
        return None


class _Unknown(Exception):
    """A part of a type the checker does not interpret: the whole type then accepts every value."""


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "typing":
        return node.attr
    return None


def _exact(*types: type, label: str) -> Checker:
    def check(value: Any) -> Failure | None:
        return None if type(value) in types else ("", label, value)

    return check


_SCALARS: dict[str, Checker] = {
    "int": _exact(int, label="int"),
    "float": _exact(float, int, label="float"),
    "str": _exact(str, label="str"),
    "bool": _exact(bool, label="bool"),
}
_ANY = frozenset({"Any", "object", "bytes"})  # bytes: JSON carries none, a task declared so receives what it gets
_ARRAYS = frozenset({"list", "List", "tuple", "Tuple", "set", "Set", "frozenset", "FrozenSet", "Sequence"})
_OBJECTS = frozenset({"dict", "Dict", "Mapping"})
_ARRAY = _exact(list, label="array")
_OBJECT = _exact(dict, label="object")
_NONE = _exact(type(None), label="None")


def _compile(node: ast.AST) -> Checker | None:
    """None: every value fits."""
    if isinstance(node, ast.Constant) and node.value is None:
        return _NONE
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([node.left, node.right], ast.unparse(node))
    if isinstance(node, ast.Subscript):
        return _generic(_name(node.value), node.slice, ast.unparse(node))
    name = _name(node)
    if name in _SCALARS:
        return _SCALARS[name]
    if name in _ANY or name in ("Optional", "Union", "Literal"):
        return None
    if name in _ARRAYS:
        return _ARRAY
    if name in _OBJECTS:
        return _OBJECT
    if name == "Iterable":
        return _exact(list, str, dict, label="array")
    raise _Unknown(name)


def _generic(name: str | None, index: ast.AST, label: str) -> Checker | None:
    items = index.elts if isinstance(index, ast.Tuple) else [index]
    if name == "Optional":
        return _union([*items, ast.Constant(None)], label)
    if name == "Union":
        return _union(items, label)
    if name == "Literal":
        return _literal(items, label)
    if name in _OBJECTS:
        return _object_of(_compile(items[-1]) if len(items) == 2 else None, label)
    if name in ("tuple", "Tuple") and not (len(items) == 2 and _is_ellipsis(items[1])):
        return _tuple_of([_compile(item) for item in items], label)
    if name in _ARRAYS or name == "Iterable":
        return _array_of(_compile(items[0]), label, strings=name == "Iterable")
    raise _Unknown(name)


def _is_ellipsis(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is ...


def _union(nodes: list[ast.AST], label: str) -> Checker | None:
    checkers = [_compile(node) for node in nodes]
    if any(c is None for c in checkers):
        return None
    branches = tuple(c for c in checkers if c is not None)
    values = [c for c in branches if c is not _NONE]
    only = values[0] if len(values) == 1 else None  # Optional[X]: a value that is not None is told about X

    def check(value: Any) -> Failure | None:
        for branch in branches:
            if branch(value) is None:
                return None
        return only(value) if only is not None else ("", label, value)

    return check


def _literal(nodes: list[ast.AST], label: str) -> Checker | None:
    if not all(isinstance(node, ast.Constant) for node in nodes):
        raise _Unknown("Literal")
    allowed = tuple((type(node.value), node.value) for node in nodes if isinstance(node, ast.Constant))

    def check(value: Any) -> Failure | None:
        return None if (type(value), value) in allowed else ("", label, value)

    return check


def _array_of(item: Checker | None, label: str, strings: bool = False) -> Checker:
    def check(value: Any) -> Failure | None:
        if type(value) is not list:
            if strings and type(value) in (str, dict):
                return None
            return ("", label, value)
        if item is not None:
            for index, element in enumerate(value):
                failure = item(element)
                if failure is not None:
                    return (f"[{index}]{failure[0]}", failure[1], failure[2])
        return None

    return check


def _tuple_of(items: list[Checker | None], label: str) -> Checker:
    def check(value: Any) -> Failure | None:
        if type(value) is not list or len(value) != len(items):
            return ("", f"{label} (an array of {len(items)})", value)
        for index, (checker, element) in enumerate(zip(items, value, strict=True)):
            failure = checker(element) if checker is not None else None
            if failure is not None:
                return (f"[{index}]{failure[0]}", failure[1], failure[2])
        return None

    return check


def _object_of(values: Checker | None, label: str) -> Checker:
    def check(value: Any) -> Failure | None:
        if type(value) is not dict:
            return ("", label, value)
        if values is not None:
            for key, element in value.items():
                failure = values(element)
                if failure is not None:
                    return (f"[{json.dumps(key, ensure_ascii=False)}]{failure[0]}", failure[1], failure[2])
        return None

    return check


def _find_non_finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
    for item in items:
        found = _find_non_finite(item)
        if found is not None:
            return found
    return None
