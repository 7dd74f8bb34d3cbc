"""The version history store (Redis/versions.py) on a real Redis server, and its rules on fakeredis."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fakeredis
import pytest

from mcs.core.errors import InvalidInput, NotFound, ServiceUnavailable
from mcs.core.lifecycle import CaseOutcome, TestCase, TestRun, VersionEntry
from mcs.core.settings import Settings
from Redis.versions import MIN_PREFIX, SHOWN_VERSIONS, VersionHistory
from tests.helpers import make_settings

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def entry(version: str, minutes: int = 0, status: str = "kept", **extra) -> VersionEntry:
    return VersionEntry(version=version, deployed_at=T0 + timedelta(minutes=minutes), status=status, **extra)


@pytest.fixture(
    params=[pytest.param("real", marks=pytest.mark.integration), pytest.param("fake", marks=pytest.mark.unit)]
)
def history(request: pytest.FixtureRequest, tmp_path: Path) -> VersionHistory:
    if request.param == "fake":
        return VersionHistory(make_settings(tmp_path), client=fakeredis.FakeRedis(decode_responses=True))
    settings: Settings = request.getfixturevalue("settings")
    return VersionHistory(settings)


def test_round_trip_keeps_every_field(history: VersionHistory) -> None:
    run = TestRun(
        ran_at=T0,
        total=1,
        passed=1,
        failed=0,
        cases=[CaseOutcome(task="add", args=[1, 2], kwargs={}, passed=True, expected=3, got=3)],
    )
    original = entry(
        "0123456789abcdef",
        status="serving",
        image="mcs-add:0123456789ab",
        serve_queue="add_q",
        tests=run,
        tasks=[{"name": "add", "queue": "add_q"}],
        cases=[TestCase(args=[1, 2], expect=3)],
        options={"memory_mb": 256},
        dockerfile="FROM python:3.12-slim\n",
        rollback_of="fedcba9876543210",  # extra fields are kept (VersionEntry allows them)  # pragma: allowlist secret
    )
    history.record("add", original)
    got = history.get("add", "0123456789abcdef")
    assert got == original
    assert got.model_dump() == original.model_dump()
    assert got.tests is not None and got.tests.ok
    assert history.get("add", "0123456789abcdee") is None  # pragma: allowlist secret
    assert history.get("other", "0123456789abcdef") is None  # per task
    raw = history.client.hget(history.keys.versions("add"), "0123456789abcdef")
    assert VersionEntry.model_validate_json(raw) == original


def test_record_overwrites_the_same_version(history: VersionHistory) -> None:
    history.record("add", entry("aaaaaa0001", status="refused"))
    history.record("add", entry("aaaaaa0001", minutes=5, status="serving"))
    (only,) = history.list("add")
    assert only.status == "serving" and only.deployed_at == T0 + timedelta(minutes=5)


def test_list_is_newest_first(history: VersionHistory) -> None:
    assert history.list("add") == []
    for version, minutes in [("bbbbbb01", 10), ("cccccc01", 30), ("aaaaaa01", 20), ("dddddd01", -5)]:
        history.record("add", entry(version, minutes))
    assert [e.version for e in history.list("add")] == ["cccccc01", "aaaaaa01", "bbbbbb01", "dddddd01"]
    history.record("add", entry("eeeeee01", 30))  # same instant as cccccc01: a stable order by version
    assert [e.version for e in history.list("add")][:2] == ["cccccc01", "eeeeee01"]


def test_find_by_full_version_or_unique_prefix(history: VersionHistory) -> None:
    history.record("add", entry("abcdef0123456789", 1))
    history.record("add", entry("abcdef9999999999", 2))
    history.record("add", entry("1234567890abcdef", 3))  # pragma: allowlist secret
    assert history.find("add", "abcdef0123456789").version == "abcdef0123456789"
    assert history.find("add", "abcdef0").version == "abcdef0123456789"
    assert history.find("add", "123456").version == "1234567890abcdef"  # pragma: allowlist secret (MIN_PREFIX chars)
    assert history.find("add", "ABCDEF9").version == "abcdef9999999999"  # case-insensitive


def test_find_refuses_an_ambiguous_prefix(history: VersionHistory) -> None:
    history.record("add", entry("abcdef0123456789", 1))
    history.record("add", entry("abcdef9999999999", 2))
    with pytest.raises(InvalidInput) as caught:
        history.find("add", "abcdef")
    assert caught.value.field == "version"
    assert "2 versions" in caught.value.message
    assert sorted(caught.value.details["matches"]) == ["abcdef0123456789", "abcdef9999999999"]


@pytest.mark.parametrize("bad", ["abcde", "", "abcdefg", "../abcdef", "abc def", 123456, None])
def test_find_refuses_a_malformed_or_short_prefix(history: VersionHistory, bad) -> None:
    history.record("add", entry("abcdef0123456789"))
    with pytest.raises(InvalidInput) as caught:
        history.find("add", bad)
    assert caught.value.field == "version"
    assert str(MIN_PREFIX) in caught.value.rule


def test_a_short_full_version_is_still_found_exactly(history: VersionHistory) -> None:
    history.record("add", entry("abc", 1))  # shorter than a prefix may be, but it is the version itself
    assert history.find("add", "abc").version == "abc"


def test_find_unknown_names_the_known_versions_bounded(history: VersionHistory) -> None:
    with pytest.raises(NotFound) as caught:
        history.find("add", "abcdef")
    assert caught.value.details["known_versions"] == []
    assert "no recorded versions" in caught.value.message
    for i in range(SHOWN_VERSIONS + 3):
        history.record("add", entry(f"{i:02x}" * 8, minutes=i))
    with pytest.raises(NotFound) as caught:
        history.find("add", "abcdef")
    known = caught.value.details["known_versions"]
    assert len(known) == SHOWN_VERSIONS
    assert known[0] == f"{SHOWN_VERSIONS + 2:02x}" * 8  # newest first
    assert "and 3 more" in caught.value.message
    assert caught.value.details["task_name"] == "add" and caught.value.details["version"] == "abcdef"


def test_set_status_updates_status_and_fields(history: VersionHistory) -> None:
    history.record("add", entry("abcdef01", status="serving", image="img:1"))
    run = TestRun(ran_at=T0, total=2, passed=1, failed=1)
    updated = history.set_status("add", "abcdef01", "refused", tests=run, refused_because="a test failed")
    assert updated is not None and updated.status == "refused"
    stored = history.get("add", "abcdef01")
    assert stored == updated
    assert stored.tests == run and not stored.tests.ok
    assert stored.image == "img:1"  # untouched fields are kept
    assert stored.model_extra == {"refused_because": "a test failed"}
    assert history.set_status("add", "abcdef01", "kept").status == "kept"
    assert history.get("add", "abcdef01").tests == run


def test_set_status_of_an_unknown_version_writes_nothing(history: VersionHistory) -> None:
    assert history.set_status("add", "abcdef01", "kept") is None
    assert history.list("add") == []
    assert not history.client.exists(history.keys.versions("add"))


def test_set_status_refuses_bad_values(history: VersionHistory) -> None:
    history.record("add", entry("abcdef01"))
    with pytest.raises(InvalidInput) as caught:
        history.set_status("add", "abcdef01", "")
    assert caught.value.field == "status"
    with pytest.raises(InvalidInput) as caught:
        history.set_status("add", "abcdef01", "kept", deployed_at="not a time")
    assert caught.value.field == "deployed_at"
    assert history.get("add", "abcdef01") == entry("abcdef01")  # nothing half-written


def test_removal(history: VersionHistory) -> None:
    history.record("add", entry("aaaaaa01"))
    history.record("add", entry("bbbbbb01", 1))
    history.record("mul", entry("aaaaaa01"))
    assert history.remove("add", "aaaaaa01") is True
    assert history.remove("add", "aaaaaa01") is False
    assert [e.version for e in history.list("add")] == ["bbbbbb01"]
    assert history.remove_task("add") is True
    assert history.remove_task("add") is False
    assert history.list("add") == []
    assert [e.version for e in history.list("mul")] == ["aaaaaa01"]  # another task's history is its own


@pytest.mark.parametrize("bad_task", ["../x", "Add", "", "a" * 64, "class"])
def test_task_names_are_validated(history: VersionHistory, bad_task: str) -> None:
    for call in (
        lambda: history.record(bad_task, entry("abcdef01")),
        lambda: history.get(bad_task, "abcdef01"),
        lambda: history.find(bad_task, "abcdef01"),
        lambda: history.list(bad_task),
        lambda: history.set_status(bad_task, "abcdef01", "kept"),
        lambda: history.remove(bad_task, "abcdef01"),
        lambda: history.remove_task(bad_task),
    ):
        with pytest.raises(InvalidInput) as caught:
            call()
        assert caught.value.field == "task_name"


@pytest.mark.parametrize("bad_version", ["", "ABCDEF01", "v1", "ab:cd", "a" * 65])
def test_versions_written_must_be_lowercase_hex(history: VersionHistory, bad_version: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        history.record("add", entry(bad_version))
    assert caught.value.field == "version"
    with pytest.raises(InvalidInput):
        history.get("add", bad_version)


def test_an_unreadable_entry_is_skipped_not_fatal(history: VersionHistory) -> None:
    history.record("add", entry("aaaaaa01"))
    history.client.hset(history.keys.versions("add"), "bbbbbb01", "{not json")
    assert [e.version for e in history.list("add")] == ["aaaaaa01"]
    assert history.get("add", "bbbbbb01") is None
    assert history.set_status("add", "bbbbbb01", "kept") is None


def test_key_schema(history: VersionHistory) -> None:
    assert history.keys.versions("add") == f"{history.settings.metadata_prefix}versions:add"
    history.record("add", entry("abcdef01"))
    assert history.client.type(history.keys.versions("add")) == "hash"
    assert history.client.hkeys(history.keys.versions("add")) == ["abcdef01"]


@pytest.mark.integration
def test_concurrent_set_status_loses_no_field(settings: Settings) -> None:
    """Each writer changes its own field; with WATCH/MULTI none of them overwrites another's."""
    VersionHistory(settings).record("add", entry("abcdef01"))
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            store = VersionHistory(settings)
            for n in range(20):
                store.set_status("add", "abcdef01", f"s{i}", **{f"field_{i}": n})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    final = VersionHistory(settings).get("add", "abcdef01")
    assert final.model_extra == {f"field_{i}": 19 for i in range(4)}


@pytest.mark.integration
def test_redis_down_is_service_unavailable(tmp_path: Path) -> None:
    from Redis.server import free_port

    port = free_port()  # nothing listens there
    store = VersionHistory(make_settings(tmp_path, redis_port=port, redis_retries=0, redis_socket_timeout_s=1))
    for call in (lambda: store.list("add"), lambda: store.record("add", entry("abcdef01"))):
        with pytest.raises(ServiceUnavailable, match=rf"127.0.0.1:{port} is not reachable") as caught:
            call()
        assert caught.value.details["service"] == "redis"
