"""Checks on the helper files and requirements of a generated task folder, before anything is written.

A helper file's path must be a plain relative path inside the folder, of a Python or plain-text file, not one of the
files MCS writes itself nor one the build owns, and not a module name that would shadow the standard library or
the worker's own packages.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict

from mcs.core.errors import InvalidInput
from mcs.core.models import parse_model
from mcs.core.paths import check_relative_path, relative_path_rule
from mcs.core.worker_image import WORKER_MODULES

MAX_PATH_DEPTH = 5

TEXT_SUFFIXES = frozenset(
    {".py", ".txt", ".md", ".rst", ".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".csv", ".tsv", ".sql",
     ".html", ".xml", ".j2", ".jinja", ".tmpl"}
)  # fmt: skip

PATH_RULE = relative_path_rule(MAX_PATH_DEPTH) + ", ending in one of " + ", ".join(sorted(TEXT_SUFFIXES))


class FileInput(BaseModel):
    """One entry of ``additional_files``."""

    model_config = ConfigDict(extra="forbid")

    filename: str
    content: str


# Characters that split lines for str.splitlines and editors but not for Python's tokenizer (or, form feed, that
# reset its indentation): code shown with them is not the code that runs.
LINE_SPLITTERS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def check_text(text: str, field: str) -> None:
    if "\x00" in text:
        raise InvalidInput(field, "<text with a NUL character>", "text without NUL characters")
    found = LINE_SPLITTERS.search(text)
    if found is not None:
        line = text.count("\n", 0, found.start()) + 1
        raise InvalidInput(
            field,
            f"<{found.group()!r} on line {line}>",
            "no form feed, vertical tab or other line separator (\\x0b \\x0c \\x1c-\\x1e \\x85 \\u2028 \\u2029): "
            "they change how lines split, so what main_content shows would not be what runs",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(field, text[exc.start : exc.end], "text encodable as UTF-8 (no lone surrogates)") from None


def check_additional_files(files: Any, reserved: set[str], max_files: int, max_file_bytes: int) -> dict[str, str]:
    """Return {relative path: content}; ``reserved`` holds the paths MCS writes itself (compared case-blind).

    ``max_files`` and ``max_file_bytes`` come from the settings (``MCS_GENERATED_max_files``, ...)."""
    if files is None:
        return {}
    if not isinstance(files, list | tuple):
        raise InvalidInput("additional_files", files, "a list of {filename, content}")
    if len(files) > max_files:
        raise InvalidInput("additional_files", f"<{len(files)} files>", f"at most {max_files} files")
    result: dict[str, str] = {}
    seen: dict[str, str] = {name.casefold(): name for name in reserved}
    for index, item in enumerate(files):
        where = f"additional_files[{index}]"
        spec: FileInput = parse_model(FileInput, item, where)
        path = check_file_path(spec.filename, where + ".filename")
        if path.casefold() in seen:
            raise InvalidInput(
                where + ".filename",
                path,
                f"{seen[path.casefold()]!r} is already in the folder (MCS writes Dockerfile, requirements.txt, "
                "README.md, mcs.json and the app file itself; names are compared ignoring case)",
            )
        seen[path.casefold()] = path
        check_text(spec.content, where + ".content")
        size = len(spec.content.encode("utf-8"))
        if size > max_file_bytes:
            raise InvalidInput(where + ".content", f"<{size} bytes>", f"at most {max_file_bytes} bytes per file")
        result[path] = spec.content
    _check_no_file_is_a_folder(result, reserved)
    return result


def check_file_path(name: Any, field: str) -> str:
    segments = check_relative_path(name, field, max_depth=MAX_PATH_DEPTH, rule=PATH_RULE)
    top = segments[0].casefold()
    if top in ("dockerfile", "wheelhouse") or "__pycache__" in segments:
        raise InvalidInput(field, name, "Dockerfile, wheelhouse/ and __pycache__ belong to the build; " + PATH_RULE)
    suffix = "." + segments[-1].rsplit(".", 1)[-1] if "." in segments[-1] else ""
    if suffix not in TEXT_SUFFIXES:
        raise InvalidInput(field, name, "only Python source and plain text files are accepted; " + PATH_RULE)
    if suffix == ".py":
        module = segments[0].removesuffix(".py")
        if module in sys.stdlib_module_names or module in WORKER_MODULES:
            raise InvalidInput(
                field,
                name,
                f"a module named {module!r} next to the app would shadow the standard library or the worker's own "
                "packages; choose another name",
            )
    return name


def _check_no_file_is_a_folder(files: dict[str, str], reserved: set[str]) -> None:
    folders = {path.rsplit("/", i)[0].casefold() for path in files for i in range(1, path.count("/") + 1)}
    for path in [*files, *reserved]:
        if path.casefold() in folders:
            raise InvalidInput("additional_files", path, "a path cannot be both a file and a folder")
