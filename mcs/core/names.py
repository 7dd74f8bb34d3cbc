"""Rules for the names that travel into Python identifiers, Docker names and tags, Celery queues and paths.

A task or queue name must be safe in all of those places at once, so one strict rule serves them all:
lowercase ASCII letter first, then lowercase letters, digits or underscores, at most 63 characters, and not a
Python keyword. Anything else (``../x``, ``$(id)``, ``Foo``, fullwidth lookalikes, ``__init__``) is refused with
an error that names the value and the rule.
"""

from __future__ import annotations

import builtins
import keyword
import re
from typing import Any

from mcs.core.errors import InvalidInput

NAME_RULE = (
    "use 1-63 characters: a lowercase ASCII letter first, then lowercase letters, digits or '_' "
    "(pattern ^[a-z][a-z0-9_]{0,62}$), and not a Python keyword"
)
CATEGORY_RULE = "use 1-64 characters: a lowercase ASCII letter first, then lowercase letters, digits, '_' or '-'"
IDENTIFIER_RULE = "use a Python identifier of ASCII letters, digits and '_' (not starting with a digit), not a keyword"

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_CATEGORY = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")

MAX_DESCRIPTION_CHARS = 2000


def _require_str(field: str, value: Any, rule: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, value, f"expected a string; {rule}")
    return value


def validate_name(value: Any, field: str = "task_name") -> str:
    """Return ``value`` if it is a valid task or queue name, else raise InvalidInput naming the rule."""
    _require_str(field, value, NAME_RULE)
    if not _NAME.fullmatch(value) or keyword.iskeyword(value):
        raise InvalidInput(field, value, NAME_RULE)
    return value


# Names a task must not take, whichever tool it comes through: the generated app's own names and Python's builtins
# (a task function of that name would shadow what the app, `celery -A` and the other tasks rely on).
RESERVED_TASK_NAMES = frozenset({"app", "celery", "celery_app"}) | frozenset(
    name for name in dir(builtins) if not name.startswith("_")
)
RESERVED_RULE = (
    "this name is taken by the generated app or a Python builtin (app, celery, celery_app, sum, list, ...); "
    "choose a more specific name"
)


def validate_task_name(value: Any, field: str = "task_name") -> str:
    """A task's name as generate, register, deploy and trigger all accept it: NAME_RULE, and not reserved."""
    validate_name(value, field)
    if value in RESERVED_TASK_NAMES:
        raise InvalidInput(field, value, RESERVED_RULE)
    return value


# Keys kombu's Redis transport keeps in the broker DB: a queue of that name would corrupt them.
KOMBU_RESERVED_QUEUES = frozenset({"unacked", "unacked_index", "unacked_mutex"})


def validate_queue(value: Any, field: str = "queue") -> str:
    """A task queue: a name by NAME_RULE, and not one of kombu's own broker keys."""
    validate_name(value, field)
    if value in KOMBU_RESERVED_QUEUES:
        raise InvalidInput(field, value, "reserved by the broker (kombu keeps its bookkeeping under this name)")
    return value


def validate_category(value: Any, field: str = "category") -> str:
    _require_str(field, value, CATEGORY_RULE)
    if not _CATEGORY.fullmatch(value):
        raise InvalidInput(field, value, CATEGORY_RULE)
    return value


def validate_identifier(value: Any, field: str) -> str:
    """A Python identifier (parameter names): ASCII only, so no lookalike can shadow another name."""
    _require_str(field, value, IDENTIFIER_RULE)
    if not _IDENTIFIER.fullmatch(value) or keyword.iskeyword(value):
        raise InvalidInput(field, value, IDENTIFIER_RULE)
    return value


def validate_description(value: Any, field: str = "description") -> str:
    rule = f"a string of at most {MAX_DESCRIPTION_CHARS} characters"
    _require_str(field, value, rule)
    if len(value) > MAX_DESCRIPTION_CHARS:
        raise InvalidInput(field, f"<{len(value)} characters>", rule)
    return value
