"""Safe relative paths inside a folder: the one rule for file names that arrive from outside.

A path is '/'-separated segments of ASCII letters, digits, '_', '-' and '.', each starting and ending with a
letter, digit or '_': so no absolute path, no '..', no backslash, no NUL, no hidden file, no empty segment, no
URL-encoded tricks (``%2e%2e`` is simply refused). ``inside`` then checks a resolved path by components
(``os.path.commonpath``), never by string prefix, so ``/base2`` is not inside ``/base``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mcs.core.errors import InvalidInput

MAX_PATH_CHARS = 200
MAX_PATH_DEPTH = 8


def relative_path_rule(max_depth: int = MAX_PATH_DEPTH) -> str:
    return (
        f"use a relative path of at most {MAX_PATH_CHARS} characters and {max_depth} segments separated by '/', "
        "each segment of ASCII letters, digits, '_', '-' or '.', starting and ending with a letter, digit or '_' "
        "(so no absolute path, '..', backslash, hidden file or empty segment)"
    )


PATH_RULE = relative_path_rule()
_SEGMENT = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,98}[A-Za-z0-9_])?")


def check_relative_path(name: Any, field: str, *, max_depth: int = MAX_PATH_DEPTH, rule: str = PATH_RULE) -> list[str]:
    """The segments of ``name`` if it is a safe relative path, else InvalidInput with ``rule``."""
    if not isinstance(name, str) or not name or len(name) > MAX_PATH_CHARS:
        raise InvalidInput(field, name, rule)
    segments = name.split("/")
    if len(segments) > max_depth or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise InvalidInput(field, name, rule)
    return segments


def inside(base: Path, path: Path) -> bool:
    """True when the real path of ``path`` is ``base`` or below it (symlinks resolved, compared by component)."""
    real_base = os.path.realpath(base)
    real = os.path.realpath(path)
    return os.path.commonpath([real_base, real]) == real_base
