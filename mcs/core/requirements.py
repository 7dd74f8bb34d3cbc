"""The one grammar for a task's requirement lines: exactly pinned ``name[extras]==version``, nothing else.

Options (``-e``, ``--index-url``, ``-r``: anything starting with '-'), URLs, paths, ``@`` references, markers,
ranges and wildcards are refused, so a requirement line can never steer pip somewhere else.
"""

from __future__ import annotations

import re
from typing import Any

from mcs.core.errors import InvalidInput
from mcs.core.worker_image import BASE_IMAGE_PACKAGES

MAX_REQUIREMENT_CHARS = 200
REQUIREMENT_RULE = (
    "use one pinned requirement 'name==version', optionally with extras (e.g. 'requests[socks]==2.32.3'); "
    "options (anything starting with '-'), URLs, paths, markers, version ranges and wildcards are not accepted"
)
_REQUIREMENT = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?)"
    r"(?:\[(?P<extras>\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(?:,\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*)*)\])?"
    r"\s*==\s*"
    r"(?P<version>[A-Za-z0-9](?:[A-Za-z0-9.+!_-]{0,62}[A-Za-z0-9])?)"
)


def parse_requirement(line: Any, field: str) -> tuple[str, str]:
    """(normalised project name, normalised line) of one pinned requirement, else InvalidInput naming ``field``."""
    if not isinstance(line, str):
        raise InvalidInput(field, line, "expected a string; " + REQUIREMENT_RULE)
    text = line.strip()
    if text.startswith("-"):
        raise InvalidInput(field, line, "pip options are not accepted; " + REQUIREMENT_RULE)
    match = _REQUIREMENT.fullmatch(text) if len(text) <= MAX_REQUIREMENT_CHARS else None
    if match is None:
        raise InvalidInput(field, line, REQUIREMENT_RULE)
    extras = match["extras"]
    extras_part = "[" + ",".join(sorted({e.strip() for e in extras.split(",")})) + "]" if extras else ""
    name = re.sub(r"[-_.]+", "-", match["name"]).lower()
    return name, f"{match['name']}{extras_part}=={match['version']}"


def check_requirements(requirements: Any, max_count: int, *, from_file: bool = False) -> list[str]:
    """The normalised pinned lines of a task's requirements, each checked by :func:`parse_requirement`.

    ``requirements`` is the list a caller gave (fields ``requirements[i]``) or, with ``from_file``, the lines of a
    folder's ``requirements.txt`` (fields ``requirements line n``; blank lines and ``#`` comments are dropped).
    Refused: more than ``max_count`` (``MCS_MAX_REQUIREMENTS``), a package of the base image (its version is the
    worker's own), and the same package twice.
    """
    if requirements is None:
        return []
    if not isinstance(requirements, list | tuple):
        raise InvalidInput("requirements", requirements, "a list of 'name==version' strings")
    if not from_file and len(requirements) > max_count:
        raise InvalidInput("requirements", f"<{len(requirements)} items>", f"at most {max_count} requirements")
    seen: dict[str, str] = {}
    result: list[str] = []
    for index, line in enumerate(requirements):
        where = f"requirements line {index + 1}" if from_file else f"requirements[{index}]"
        if from_file and isinstance(line, str) and (not line.strip() or line.strip().startswith("#")):
            continue
        name, normalised = parse_requirement(line, where)
        if name in BASE_IMAGE_PACKAGES:
            rule = "provided by the worker's base image (" + ", ".join(sorted(BASE_IMAGE_PACKAGES)) + "); remove it"
            raise InvalidInput(where, line, rule)
        if name in seen:
            raise InvalidInput(where, line, f"{name} is already pinned ({seen[name]!r})")
        seen[name] = line
        result.append(normalised)
    if len(result) > max_count:
        raise InvalidInput("requirements", f"<{len(result)} lines>", f"at most {max_count} requirements")
    return result
