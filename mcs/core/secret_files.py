"""Secrets kept in files of their own (the deploy secret, the local Redis's administrator password): created once
with 256 random bits, readable only by their owner (0600, in a 0700 folder), never printed."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def read_or_create_secret(path: Path) -> str:
    """The secret in ``path``; created (atomically, exclusively) when the file does not exist yet."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            return path.read_text().strip()
        secret = secrets.token_hex(32)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        return secret
