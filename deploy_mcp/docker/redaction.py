"""Keeping a worker's secrets (the Redis password) out of logs and error messages that leave the Docker runtime."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

REDACTED = "[redacted]"

_SENSITIVE_KEY = re.compile(r"(?i)pass|secret|token|key|auth|cred|url")


def secret_values(environment: Mapping[str, str]) -> list[str]:
    """Values to keep out of logs and messages: those of PASSWORD/SECRET/TOKEN/KEY/AUTH/URL-like variables."""
    found: set[str] = set()
    for key, value in environment.items():
        if isinstance(value, str) and len(value) >= 3 and _SENSITIVE_KEY.search(key):
            found.add(value)
            found.add(quote(value, safe=""))
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every one of ``secrets`` (longest first, as :func:`secret_values` orders them) replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
