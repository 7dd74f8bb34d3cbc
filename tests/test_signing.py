"""Signed deploy messages: verify, refuse forged, tampered, replayed-as-other-kind and stale messages."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mcs.core.signing import Unauthorized, deploy_secret, sign, verify
from tests.helpers import make_settings

pytestmark = pytest.mark.unit

SECRET = b"k" * 64


def test_round_trip() -> None:
    message = sign(SECRET, "deploy", {"task_name": "simple_add"})
    assert verify(SECRET, "deploy", message) == {"task_name": "simple_add"}


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(Unauthorized, match="bad signature"):
        verify(b"x" * 64, "deploy", sign(SECRET, "deploy", {"a": 1}))


def test_tampered_payload_is_refused() -> None:
    message = sign(SECRET, "deploy", {"task_name": "simple_add"})
    message["payload"]["task_name"] = "evil"
    with pytest.raises(Unauthorized, match="bad signature"):
        verify(SECRET, "deploy", message)


def test_a_message_signed_for_one_kind_is_not_another() -> None:
    message = sign(SECRET, "list", {"task_name": "simple_add"})
    with pytest.raises(Unauthorized, match="signed for 'list'"):
        verify(SECRET, "undeploy", message)
    message["kind"] = "undeploy"
    with pytest.raises(Unauthorized, match="bad signature"):
        verify(SECRET, "undeploy", message)


def test_stale_message_is_refused() -> None:
    message = sign(SECRET, "deploy", {})
    with pytest.raises(Unauthorized, match="outside the accepted window"):
        verify(SECRET, "deploy", message, max_age_s=-1)


@pytest.mark.parametrize(
    "message",
    [None, {}, {"payload": {}}, "deploy", {"kind": "deploy", "payload": {}, "issued_at": "now", "signature": "x"}],
)
def test_malformed_messages_are_refused(message) -> None:
    with pytest.raises(Unauthorized):
        verify(SECRET, "deploy", message)


def test_secret_file_is_created_once_with_owner_only_mode(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, deploy_secret_file=tmp_path / "cfg" / "deploy_secret")
    first = deploy_secret(settings)
    assert len(first) == 64 and deploy_secret(settings) == first
    mode = stat.S_IMODE(os.stat(tmp_path / "cfg" / "deploy_secret").st_mode)
    assert mode == 0o600


def test_explicit_secret_wins(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, deploy_secret="s" * 40, deploy_secret_file=tmp_path / "unused")
    assert deploy_secret(settings) == b"s" * 40
    assert not (tmp_path / "unused").exists()


def test_a_message_is_accepted_once() -> None:
    seen: set[str] = set()

    def first_use(nonce: str) -> bool:
        new = nonce not in seen
        seen.add(nonce)
        return new

    message = sign(SECRET, "undeploy", {"task_name": "simple_add"})
    assert verify(SECRET, "undeploy", message, first_use=first_use) == {"task_name": "simple_add"}
    with pytest.raises(Unauthorized, match="replayed"):
        verify(SECRET, "undeploy", message, first_use=first_use)
    assert sign(SECRET, "undeploy", {})["nonce"] != sign(SECRET, "undeploy", {})["nonce"]
