"""The one grammar of type annotations MCS accepts (a parameter's ``type``, a task's ``return_type``), for every
tool: generate_startMain_code renders them into code, register_task_info and deploy_task store them.

A type is parsed with ``ast`` and rebuilt from a small allow-list, node by node (no eval), so what reaches generated
code is the re-printed syntax tree, never the caller's text.
"""

from __future__ import annotations

import ast
import builtins
import typing
from dataclasses import dataclass
from typing import Any

from mcs.core.errors import InvalidInput

MAX_TYPE_CHARS = 200

BUILTIN_TYPES: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in ("str", "int", "float", "bool", "bytes", "dict", "list", "tuple", "set", "frozenset", "object")
}
TYPING_NAMES = frozenset(
    {"Any", "Optional", "Union", "List", "Dict", "Tuple", "Set", "FrozenSet", "Literal", "Sequence", "Mapping",
     "Iterable"}
)  # fmt: skip
TYPE_RULE = (
    "use a type made of " + ", ".join(sorted(BUILTIN_TYPES)) + ", None and the typing names "
    + ", ".join(sorted(TYPING_NAMES)) + " (bare or as typing.X), combined with [...] and |; e.g. 'int', "
    "'list[str]', 'Optional[dict]', 'int | None', \"Literal['a', 'b']\""
)  # fmt: skip


@dataclass(frozen=True)
class Annotation:
    """A checked type annotation: its source re-printed from the syntax tree, and the typing names it uses."""

    source: str
    typing_names: frozenset[str]


def parse_annotation(text: Any, field: str) -> Annotation:
    """Check a type written as text; refuse calls, attributes other than typing.X, strings, lambdas and the rest."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TYPE_CHARS:
        raise InvalidInput(field, text, f"a non-empty string of at most {MAX_TYPE_CHARS} characters; {TYPE_RULE}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise InvalidInput(field, text, f"not a valid type expression ({exc.msg}); {TYPE_RULE}") from None
    used: set[str] = set()
    try:
        _evaluate(tree.body, used, field, text)
    except InvalidInput:
        raise
    except Exception as exc:  # e.g. TypeError from int[str] or Optional[int, str]
        raise InvalidInput(field, text, f"not a valid type ({type(exc).__name__}: {exc}); {TYPE_RULE}") from None
    return Annotation(ast.unparse(_StripTypingPrefix().visit(tree)), frozenset(used))


def _evaluate(node: ast.AST, used: set[str], field: str, text: str) -> Any:
    """Build the typing object of an allow-listed expression, node by node (no eval): proves it is a valid type."""
    if isinstance(node, ast.Name) and node.id in BUILTIN_TYPES:
        return BUILTIN_TYPES[node.id]
    if isinstance(node, ast.Name) and node.id in TYPING_NAMES:
        used.add(node.id)
        return getattr(typing, node.id)
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "typing"
        and node.attr in TYPING_NAMES
    ):
        used.add(node.attr)
        return getattr(typing, node.attr)
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _evaluate(node.left, used, field, text) | _evaluate(node.right, used, field, text)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name | ast.Attribute):
        generic = _evaluate(node.value, used, field, text)
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if generic is typing.Literal:
            args = tuple(_literal_value(item, field, text) for item in items)
        else:
            args = tuple(
                ... if isinstance(item, ast.Constant) and item.value is ... else _evaluate(item, used, field, text)
                for item in items
            )
        return generic[args if len(args) > 1 else args[0]]
    shown = ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__
    raise InvalidInput(field, text, f"{shown!r} is not an accepted type; {TYPE_RULE}")


def _literal_value(node: ast.AST, field: str, text: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int | bool | bytes | type(None)):
        return node.value
    raise InvalidInput(field, text, "Literal[...] takes only str, int, bool, bytes or None constants")


class _StripTypingPrefix(ast.NodeTransformer):
    """``typing.Optional[int]`` -> ``Optional[int]``: the generated file imports the bare names."""

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id == "typing":
            return ast.copy_location(ast.Name(id=node.attr, ctx=ast.Load()), node)
        return node
