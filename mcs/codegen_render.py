"""Rendering of a task folder's files from the ``string.Template`` files in ``templates/``, and their syntax check.

Every value that lands in generated code is either a checked name (``^[a-z][a-z0-9_]*$``), a Python literal made
by ``repr()`` (descriptions, task names in strings, defaults, retry policies, the Celery configuration), JSON (the
Dockerfile's exec forms, the manifest ``mcs.json``), or a type annotation re-printed from its checked syntax tree.
The function bodies are the only caller text placed in code as it is, because they are code by design.
"""

from __future__ import annotations

import ast
import io
import os
import tokenize
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mcs.codegen_validate import TaskPlan
from mcs.core.celery_app import celery_task_name, task_worker_config
from mcs.core.errors import InvalidInput, MCSError
from mcs.core.lifecycle import TestCase
from mcs.core.manifest import MANIFEST_FILE, MAX_MANIFEST_BYTES, DeployChoices, Manifest, ManifestTask
from mcs.core.settings import Settings
from mcs.core.worker_image import WORKER_PYTHON, load_template

BODY_INDENT = "    "


@dataclass(frozen=True)
class BodySpan:
    """Where a task's body sits in the rendered app file, to point a syntax error at the caller's own line."""

    task: TaskPlan
    first_line: int
    line_count: int


def render_app(settings: Settings, queue: str, tasks: list[TaskPlan]) -> tuple[str, list[BodySpan]]:
    blocks = [_render_task(queue, task) for task in tasks]
    typing_names = sorted(set().union(*(_typing_names(task) for task in tasks)))
    source = load_template("app.py.tmpl").substitute(
        queue=queue,
        typing_import=f"from typing import {', '.join(typing_names)}\n" if typing_names else "",
        celery_config=_dict_literal(task_worker_config(settings)),
        max_deliveries=str(int(settings.max_deliveries)),
        tasks="\n\n\n".join(blocks),
    )
    spans = []
    position = 0
    for task, block in zip(tasks, blocks, strict=True):
        # Blocks appear in order, each ending with its body.
        position = source.index(block, position)
        body_lines = task.body.rstrip().count("\n") + 1
        last_line = source.count("\n", 0, position) + block.count("\n") + 1
        spans.append(BodySpan(task, last_line - body_lines + 1, body_lines))
        position += len(block)
    return source, spans


def _typing_names(task: TaskPlan) -> set[str]:
    return set(task.returns.typing_names).union(*(p.annotation.typing_names for p in task.params))


def _dict_literal(values: dict[str, Any]) -> str:
    """A dict as a Python literal, one key a line (repr of JSON-like values round-trips)."""
    return "{\n" + "".join(f"    {key!r}: {value!r},\n" for key, value in values.items()) + "}"


def _string_literal(text: str, indent: str) -> str:
    """``text`` as a Python string literal: one repr()'d piece per line, joined by implicit concatenation.

    repr() escapes quotes, backslashes and every non-printable character, so no text can end the literal early.
    """
    pieces = [line + "\n" for line in text.split("\n")]
    pieces[-1] = pieces[-1][:-1]
    if len(pieces) == 1:
        return repr(text)
    return "(\n" + "".join(f"{indent}    {piece!r}\n" for piece in pieces) + f"{indent})"


def _render_task(queue: str, task: TaskPlan) -> str:
    signature = ", ".join(
        f"{p.name}: {p.annotation.source}" + ("" if p.required else f" = {p.default_source}") for p in task.params
    )
    return (
        load_template("task.py.tmpl")
        .substitute(
            celery_name=repr(celery_task_name(task.name)),
            queue=repr(queue),
            retry=repr(task.retry.model_dump() if task.retry is not None else None),
            function_name=task.name,
            signature=signature,
            return_annotation=task.returns.source,
            docstring=_string_literal(_docstring(task), BODY_INDENT),
            body=indent_body(task.body),
        )
        .rstrip("\n")
    )


def _docstring(task: TaskPlan) -> str:
    lines = [task.description.strip() or f"Task {task.name}.", ""]
    if task.params:
        lines.append("Parameters:")
        for p in task.params:
            extra = "" if p.required else f", optional, default {p.default_source}"
            line = f"    {p.name} ({p.annotation.source}{extra})"
            lines.append(f"{line}: {p.description}" if p.description else line)
    lines.append(f"Returns: {task.returns.source}")
    return "\n".join(lines)


def indent_body(body: str) -> str:
    """Dedent the body and indent it one level, like textwrap.dedent then indent, except that the inner lines of
    multi-line strings are kept verbatim (neither counted for the common indentation nor shifted)."""
    lines = body.rstrip().split("\n")
    verbatim = _string_continuation_lines(body)
    code = [line for number, line in enumerate(lines, start=1) if number not in verbatim and line.strip()]
    indents = [line[: len(line) - len(line.lstrip())] for line in code]
    margin = os.path.commonprefix(indents)  # noqa: RUF071 (whitespace strings, not paths: as textwrap.dedent)
    return "\n".join(
        line if number in verbatim else (BODY_INDENT + line.removeprefix(margin) if line.strip() else "")
        for number, line in enumerate(lines, start=1)
    )


def _string_continuation_lines(code: str) -> set[int]:
    string_tokens = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    lines: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type in string_tokens and token.end[0] > token.start[0]:
                lines.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass  # the syntax check after rendering reports the error with its line
    return lines


def render_readme(queue: str, tasks: list[TaskPlan], helper_files: Iterable[str]) -> str:
    task_list = "\n".join(
        f"- `{celery_task_name(task.name)}`: `{task.name}({_short_signature(task)}) -> {task.returns.source}`. "
        f"{_one_line(task.description)}".rstrip()
        for task in tasks
    )
    helpers = "".join(f"- `{path}`: supplied with the task (additional_files).\n" for path in helper_files)
    return load_template("README.md.tmpl").substitute(
        queue=queue, task_name=tasks[0].name, task_list=task_list, helper_files=helpers
    )


def _short_signature(task: TaskPlan) -> str:
    return ", ".join(p.name if p.required else f"{p.name}=..." for p in task.params)


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_requirements(requirements: list[str]) -> str:
    return "".join(line + "\n" for line in requirements)


def render_manifest(
    queue: str,
    tasks: list[TaskPlan],
    tests: dict[str, list[TestCase]],
    requirements: list[str],
    network: str | None,
    sandbox: str | None,
    capacity: dict[str, int] | None = None,
) -> str:
    """The folder's ``mcs.json``: every task (the main one first) with what its deploy registers and checks."""
    manifest = Manifest(
        queue=queue,
        tasks=[
            ManifestTask(
                name=task.name,
                description=task.description,
                parameters=[p.spec for p in task.params],  # in signature order, as positional arguments go
                return_type=task.returns.source,
                category=task.category,
                retry=task.retry,
                tests=tests.get(task.name, []),
            )
            for task in tasks
        ],
        requirements=requirements,
        deploy=DeployChoices(network=network, sandbox=sandbox, **(capacity or {})),
    )
    text = manifest.render()
    size = len(text.encode("utf-8"))
    if size > MAX_MANIFEST_BYTES:
        raise InvalidInput(
            MANIFEST_FILE,
            f"<{size} bytes>",
            f"at most {MAX_MANIFEST_BYTES} bytes: shorten the descriptions (of tasks and parameters) or the test cases",
        )
    return text


def check_python_files(
    files: dict[str, str], main_file: str, spans: list[BodySpan], file_fields: dict[str, str]
) -> list[str]:
    """Compile every .py file (never run it); a syntax error becomes InvalidInput with file, line and message.

    ``file_fields`` maps each additional file to its input field. Returns the compiler's warnings, located.
    """
    found: list[str] = []
    for path, source in files.items():
        if not path.endswith(".py"):
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                # The worker image runs Python 3.11: newer syntax must fail here, not at the worker's start.
                tree = ast.parse(source, path, "exec", feature_version=WORKER_PYTHON)
                compile(tree, path, "exec", dont_inherit=True)  # some errors only show here ('return' outside...)
            except SyntaxError as exc:
                raise _syntax_error(exc, path, main_file, spans, file_fields) from None
        found += [f"{_where(path, w.lineno, main_file, spans)[0]}: {w.message}" for w in caught]
        if path == main_file:
            _refuse_generator_tasks(tree, spans)
    return found


def _where(path: str, line: int | None, main_file: str, spans: list[BodySpan]) -> tuple[str, BodySpan | None, int]:
    """A readable location, the task whose body holds the line (if any) and the line within that body."""
    text = f"{path} line {line}"
    if path != main_file or line is None:
        return text, None, 0
    before = [span for span in spans if span.first_line <= line]
    if not before:
        return text, None, 0
    span = before[-1]
    body_line = line - span.first_line + 1
    if body_line > span.line_count:
        return f"{text} (just after the function_body of task {span.task.name!r})", span, 0
    return f"{text} (line {body_line} of the function_body of task {span.task.name!r})", span, body_line


def _syntax_error(
    exc: SyntaxError, path: str, main_file: str, spans: list[BodySpan], file_fields: dict[str, str]
) -> MCSError:
    where, span, body_line = _where(path, exc.lineno, main_file, spans)
    rule = f"syntax error at {where}: {exc.msg}"
    details = {"file": path, "line": exc.lineno}
    if path in file_fields:
        return InvalidInput(file_fields[path], (exc.text or "").strip(), rule, **details)
    if span is None:  # not caused by any caller text: a defect of MCS's own templates
        return MCSError(f"the generated {path} does not compile: {rule}", **details)
    field = span.task.field + "function_body"
    return InvalidInput(field, (exc.text or "").strip(), rule, task=span.task.name, body_line=body_line, **details)


def _refuse_generator_tasks(tree: ast.Module, spans: list[BodySpan]) -> None:
    by_name = {span.task.name: span.task for span in spans}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in by_name and _yields(node):
            task = by_name[node.name]
            raise InvalidInput(
                task.field + "function_body",
                task.name,
                "a task must return a JSON value; 'yield' makes it a generator, which Celery cannot send back",
            )


def _yields(function: ast.FunctionDef) -> bool:
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Yield | ast.YieldFrom):
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))
    return False
