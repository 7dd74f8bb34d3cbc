"""The one grammar for a task's requirement lines: exactly pinned ``name[extras]==version``, nothing else.

Options (``-e``, ``--index-url``, ``-r``: anything starting with '-'), URLs, paths, ``@`` references, markers,
ranges and wildcards are refused, so a requirement line can never steer pip somewhere else.
"""

from __future__ import annotations

import re
from typing import Any

from mcs.errors import InvalidInput

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
