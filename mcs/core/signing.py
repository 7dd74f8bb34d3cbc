"""Signed deploy messages: only holders of the deploy secret can make the deploy worker act.

Anyone who can reach Redis can push a message onto the deploy queue, so the deploy worker trusts a message only
when its HMAC-SHA256 signature (over the canonical JSON of kind, payload, issue time and nonce) verifies with the
shared secret, it is not older than ``MAX_AGE_S``, and its nonce was not seen before (no replay). The check runs
before anything touches the disk or Docker.
The secret comes from ``MCS_DEPLOY_SECRET`` or, when unset, from ``deploy_secret_file`` (created on first use with
mode 0600, 256 random bits). It never appears in messages, logs or results.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcs.core.errors import Unauthorized
from mcs.core.secret_files import read_or_create_secret
from mcs.core.settings import Settings

__all__ = ["CLOCK_SKEW_S", "MAX_AGE_S", "Unauthorized", "deploy_secret", "sign", "verify"]

MAX_AGE_S = 3600.0
CLOCK_SKEW_S = 60.0


def deploy_secret(settings: Settings) -> bytes:
    if settings.deploy_secret is not None:
        return settings.deploy_secret.get_secret_value().encode()
    return _read_or_create(settings.deploy_secret_file)


def _read_or_create(path: Path) -> bytes:
    secret = read_or_create_secret(path)
    if len(secret) < 32:
        raise Unauthorized(f"the deploy secret in {path} is too short (at least 32 characters); delete it to renew")
    return secret.encode()


def _digest(secret: bytes, kind: str, payload: Any, issued_at: float, nonce: str) -> str:
    body = json.dumps(
        {"kind": kind, "payload": payload, "issued_at": issued_at, "nonce": nonce},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    ).encode()
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def sign(secret: bytes, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A message for the deploy worker: ``kind`` names the operation, so a signed undeploy is not a deploy."""
    issued_at = time.time()
    nonce = secrets.token_hex(16)
    return {
        "kind": kind,
        "payload": payload,
        "issued_at": issued_at,
        "nonce": nonce,
        "signature": _digest(secret, kind, payload, issued_at, nonce),
    }


def verify(
    secret: bytes, kind: str, message: Any, max_age_s: float = MAX_AGE_S, first_use: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """The payload of a message that verifies, else Unauthorized (which says why, never with the secret).

    ``first_use(nonce)`` records the nonce and says whether it is new (the deploy worker: Redis SET NX with a TTL
    of the accepted window), so a copied message cannot be replayed."""
    if not isinstance(message, dict) or set(message) != {"kind", "payload", "issued_at", "nonce", "signature"}:
        raise Unauthorized("deploy message refused: not a signed MCS message")
    if message["kind"] != kind:
        raise Unauthorized(f"deploy message refused: signed for {message['kind']!r}, not {kind!r}")
    issued_at, nonce, signature = message["issued_at"], message["nonce"], message["signature"]
    if (
        not isinstance(issued_at, int | float)
        or not isinstance(nonce, str)
        or not isinstance(signature, str)
        or not isinstance(message["payload"], dict)
    ):
        raise Unauthorized("deploy message refused: malformed signature fields")
    expected = _digest(secret, kind, message["payload"], issued_at, nonce)
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("deploy message refused: bad signature (is MCS_DEPLOY_SECRET the same on both sides?)")
    age = time.time() - issued_at
    if age > max_age_s or age < -CLOCK_SKEW_S:
        raise Unauthorized(f"deploy message refused: issued {age:.0f} s ago, outside the accepted window")
    if first_use is not None and not first_use(nonce):
        raise Unauthorized("deploy message refused: already used once (a replayed message)")
    return message["payload"]
