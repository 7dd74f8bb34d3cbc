"""Task calls on fakes (fast tier): declared types checked before sending, several ids at once, cancel, and the
liveness check of a deployed task's worker."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from mcs.core.errors import InvalidInput, NotFound, ServiceUnavailable
from mcs.invoker import ALIVE_FOR_S, TaskInvoker
from mcs.payload import check_call_arguments, value_checker
from Redis.issued import IssuedTasks
from Redis.keys import Keys
from Redis.registry import TaskRegistry
from tests.helpers import make_settings

pytestmark = pytest.mark.unit

# -- declared types -------------------------------------------------------------------------------------------

OK, NO = True, False
TYPE_TABLE: list[tuple[str, Any, bool]] = [
    ("int", 3, OK),
    ("int", -7, OK),
    ("int", True, NO),  # a bool is not an int
    ("int", 3.0, NO),
    ("int", "3", NO),
    ("int", None, NO),
    ("float", 2, OK),  # an int where a float is declared is fine
    ("float", 2.5, OK),
    ("float", "2", NO),
    ("float", False, NO),
    ("str", "x", OK),
    ("str", 1, NO),
    ("str", ["x"], NO),
    ("bool", False, OK),
    ("bool", 0, NO),
    ("bool", "true", NO),
    ("list", [1, "a"], OK),
    ("list", {"a": 1}, NO),
    ("list", "abc", NO),
    ("dict", {"a": [1]}, OK),
    ("dict", [1], NO),
    ("list[int]", [1, 2, 3], OK),
    ("list[int]", [], OK),
    ("list[int]", [1, "2"], NO),
    ("list[int]", [1, True], NO),
    ("List[float]", [1, 2.5], OK),
    ("dict[str, Any]", {"a": object()}, OK),
    ("dict[str, int]", {"a": 1}, OK),
    ("dict[str, int]", {"a": "1"}, NO),
    ("Dict[str, list[int]]", {"a": [1, 2]}, OK),
    ("Dict[str, list[int]]", {"a": [1, "x"]}, NO),
    ("list[dict[str, float]]", [{"x": 1}, {"y": 2.5}], OK),
    ("list[dict[str, float]]", [{"x": 1}, {"y": "2.5"}], NO),
    ("Optional[float]", None, OK),
    ("Optional[float]", 1.5, OK),
    ("Optional[float]", "1.5", NO),
    ("typing.Optional[int]", None, OK),
    ("int | None", None, OK),
    ("int | None", 4, OK),
    ("int | None", 4.5, NO),
    ("Union[int, str]", "a", OK),
    ("Union[int, str]", 1.5, NO),
    ("int | str | None", None, OK),
    ("Any", {"anything": [None]}, OK),
    ("object", 1, OK),
    ("Literal['a', 'b']", "a", OK),
    ("Literal['a', 'b']", "c", NO),
    ("Literal[1, 2]", 2, OK),
    ("Literal[1, 2]", True, NO),
    ("tuple[int, str]", [1, "a"], OK),
    ("tuple[int, str]", [1, 2], NO),
    ("tuple[int, str]", [1], NO),
    ("tuple[int, ...]", [1, 2, 3], OK),
    ("tuple[int, ...]", [1, "x"], NO),
    ("set[str]", ["a", "b"], OK),
    ("Sequence[int]", [1], OK),
    ("Mapping[str, str]", {"a": "b"}, OK),
    ("Mapping[str, str]", {"a": 1}, NO),
    ("Iterable[str]", ["a"], OK),
    ("bytes", "whatever", OK),  # JSON carries no bytes: not checked
    ("SomeClass", 1, OK),  # a type outside the grammar (an older record): not checked
    ("np.ndarray", [1], OK),
    ("not a type (", 1, OK),
    ("list[SomeClass]", [1, "x"], OK),
]


@pytest.mark.parametrize(("declared", "value", "ok"), TYPE_TABLE, ids=[f"{t}-{v!r}" for t, v, _ in TYPE_TABLE])
def test_a_value_fits_its_declared_type_or_not(declared: str, value: Any, ok: bool) -> None:
    checker = value_checker(declared)
    assert (checker is None or checker(value) is None) is ok


def test_checkers_are_compiled_once_per_type() -> None:
    assert value_checker("list[int]") is value_checker("list[int]")
    assert value_checker("Any") is None and value_checker("Optional[Any]") is None


def _record(registry: TaskRegistry, **overrides: Any):
    params = [
        {"name": "x", "type": "float"},
        {"name": "items", "type": "list[int]"},
        {"name": "label", "type": "Optional[str]", "required": False},
        {"name": "flag", "type": "bool", "required": False, "default": None},
    ]
    registry.register(name="typed_task", parameters=overrides.get("parameters", params), queue="tq")
    return registry.get("typed_task")


@pytest.fixture
def registry(tmp_path: Path) -> TaskRegistry:
    return TaskRegistry(make_settings(tmp_path), client=fakeredis.FakeRedis(decode_responses=True))


def test_typed_arguments_pass_unchanged(registry: TaskRegistry) -> None:
    record = _record(registry)
    assert check_call_arguments(record, [1, [2]], {"label": None}, 10_000) == ([1, [2]], {"label": None})
    assert check_call_arguments(record, None, {"x": 1.5, "items": [], "flag": None}, 10_000)[1]["flag"] is None


@pytest.mark.parametrize(
    ("args", "kwargs", "field", "parameter", "fragments"),
    [
        (None, {"x": "2", "items": []}, "kwargs.x", "x", ["declared float", 'got string "2"', "without quotes"]),
        (["2", []], None, "args[0]", "x", ["declared float", "string"]),
        ([1, [1, "2"]], None, "args[1]", "items", ["declared list[int]", "at items[1]", "expected int"]),
        (None, {"x": True, "items": []}, "kwargs.x", "x", ["boolean"]),
        (None, {"x": 1, "items": [], "flag": "yes"}, "kwargs.flag", "flag", ["declared bool"]),
        (None, {"x": 1, "items": [], "label": 5}, "kwargs.label", "label", ["Optional[str]", "expected str"]),
    ],
)
def test_a_mistyped_argument_names_parameter_type_and_value(
    registry: TaskRegistry, args: Any, kwargs: Any, field: str, parameter: str, fragments: list[str]
) -> None:
    record = _record(registry)
    with pytest.raises(InvalidInput) as refused:
        check_call_arguments(record, args, kwargs, 10_000)
    assert refused.value.field == field
    for fragment in fragments:
        assert fragment in refused.value.message, (fragment, refused.value.message)
    declared = {p.name: p.type for p in record.parameters}
    assert refused.value.details["parameter"] == parameter
    assert refused.value.details["expected"] == declared[parameter]


def test_the_value_shown_is_bounded(registry: TaskRegistry) -> None:
    record = _record(registry)
    with pytest.raises(InvalidInput) as refused:
        check_call_arguments(record, None, {"x": 1, "items": ["y" * 5000]}, 100_000)
    assert len(refused.value.message) < 600 and "..." in refused.value.message


def test_type_checks_are_cheap(registry: TaskRegistry) -> None:
    record = _record(registry)
    started = time.perf_counter()
    for _ in range(10_000):
        check_call_arguments(record, None, {"x": 1.5, "items": [1, 2, 3], "label": "a"}, 10_000)
    per_call_us = (time.perf_counter() - started) / 10_000 * 1e6
    assert per_call_us < 100, f"{per_call_us:.1f} us per call"


# -- fakes of Celery: results, control, apps --------------------------------------------------------------------


class FakeResult:
    def __init__(self, app: FakeApp, task_id: str) -> None:
        self.app, self.id = app, task_id

    @property
    def state(self) -> str:
        return self.app.states.get(self.id, ("PENDING", None))[0]

    @property
    def result(self) -> Any:
        return self.app.states.get(self.id, ("PENDING", None))[1]

    traceback = None


class FakeControl:
    def __init__(self, app: FakeApp) -> None:
        self.app = app

    def ping(self, destination, timeout, limit):
        self.app.pings.append((destination, timeout, limit))
        return [{h: {"ok": "pong"}} for h in destination if h in self.app.alive]

    def revoke(self, task_id, destination=None, terminate=False, signal="SIGTERM"):
        self.app.revokes.append((task_id, destination, terminate))


class FakeBackend:
    def __init__(self, app: FakeApp, client) -> None:
        self.app, self.client = app, client

    def mark_as_revoked(self, task_id: str, reason: str = "") -> None:
        self.app.states[task_id] = ("REVOKED", RuntimeError(reason))


class FakeApp:
    def __init__(self, client) -> None:
        self.states: dict[str, tuple[str, Any]] = {}
        self.alive: set[str] = set()
        self.pings: list = []
        self.revokes: list = []
        self.sent: list = []
        self.control = FakeControl(self)
        self.backend = FakeBackend(self, client)

    def AsyncResult(self, task_id: str) -> FakeResult:  # Celery's name
        return FakeResult(self, task_id)

    def send_task(self, name, args, kwargs, queue, task_id):
        self.sent.append((name, queue, task_id))
        return FakeResult(self, task_id)


class FakeApps:
    def __init__(self, app: FakeApp) -> None:
        self.app = app

    def get(self, key_prefix: str) -> FakeApp:
        return self.app

    def forget(self, key_prefix: str) -> None:
        pass


PREFIX = "mcs-test:t:served:"


@pytest.fixture
def fake(tmp_path: Path):
    settings = make_settings(tmp_path)
    server = fakeredis.FakeServer()
    metadata = fakeredis.FakeRedis(server=server, decode_responses=True)
    registry = TaskRegistry(settings, client=metadata)
    app = FakeApp(fakeredis.FakeRedis(server=server, db=1))
    broker = fakeredis.FakeRedis(server=server, db=0)
    invoker = TaskInvoker(settings, registry, app, apps=FakeApps(app), broker=broker)  # type: ignore[arg-type]
    invoker.publish = lambda app, name, args, kwargs, queue, task_id: app.send_task(name, args, kwargs, queue, task_id)
    return invoker, app, broker


def slots(group: str) -> list[str]:
    """The node names the invoker pings for a group: every slot it may use (MCS_MAX_REPLICAS, 8)."""
    return [f"{group}-r{slot}@mcs" for slot in range(1, 9)]


def _deploy(invoker: TaskInvoker, hostname: str | None = "served-1@mcs", **extra: Any) -> None:
    deployment = {"deployment_id": "d", "version": "v1", "key_prefix": PREFIX, "serve_queue": "sq.v1"}
    if hostname:
        deployment["hostname"] = hostname
    invoker.registry.register(name="served", queue="sq", deployment={**deployment, **extra})


# -- a task nobody serves ---------------------------------------------------------------------------------------


def test_a_live_worker_is_pinged_once_then_cached(fake) -> None:
    invoker, app, _ = fake
    _deploy(invoker)
    app.alive.add("served-1-r1@mcs")
    for _ in range(5):
        invoker.send("served")
    assert app.pings == [(slots("served-1"), 0.5, 1)] and len(app.sent) == 5
    assert app.sent[0][1] == "sq.v1"  # routed to the version's own queue
    invoker._liveness["served-1@mcs"] = (True, time.monotonic() - 1)  # the cached answer expired
    invoker.send("served")
    assert len(app.pings) == 2 and ALIVE_FOR_S >= 5


def test_a_deployed_task_whose_worker_does_not_answer_is_refused_naming_cause_and_fix(fake) -> None:
    invoker, app, _ = fake
    _deploy(invoker, hostname="gone-1@mcs")
    with pytest.raises(ServiceUnavailable) as refused:
        invoker.send("served")
    error = refused.value
    assert error.details["service"] == "task_worker" and error.details["hostname"] == "gone-1-r1@mcs"
    for fragment in ("nobody serves it", "nothing was sent", "list_deployments", "deploy_task", "MCS_WATCH_EVERY_S"):
        assert fragment in error.message
    assert app.sent == [] and not invoker.issued.client.keys("*issued*")
    with pytest.raises(ServiceUnavailable):  # a burst right after pays no second ping
        invoker.send("served")
    assert len(app.pings) == 1


def test_hand_registered_tasks_and_parked_deployments_are_not_pinged(fake) -> None:
    invoker, app, _ = fake
    invoker.registry.register(name="by_hand", queue="hq")
    invoker.send("by_hand")
    _deploy(invoker, hostname=None)
    invoker.send("served")
    _deploy(invoker, hostname="parked@mcs", replicas=0)
    invoker.send("served")
    assert app.pings == [] and len(app.sent) == 3


def test_during_a_gradual_release_the_worker_the_call_goes_to_is_pinged(fake, monkeypatch) -> None:
    invoker, app, _ = fake
    canary = {"version": "v2", "serve_queue": "sq.v2", "percent": 50, "hostname": "served-2@mcs"}
    _deploy(invoker, canary=canary)
    app.alive.update({"served-1-r1@mcs", "served-2-r1@mcs"})
    monkeypatch.setattr("mcs.invoker.random.random", lambda: 0.1)  # the canary's share
    invoker.send("served")
    monkeypatch.setattr("mcs.invoker.random.random", lambda: 0.9)
    invoker.send("served")
    assert [p[0] for p in app.pings] == [["served-2-r1@mcs"], slots("served-1")]  # the canary has one worker
    assert [s[1] for s in app.sent] == ["sq.v2", "sq.v1"]


def test_a_worker_that_answers_is_told_the_revoked_calls_of_its_prefix(fake) -> None:
    invoker, app, _ = fake
    _deploy(invoker)
    app.alive.add("served-1-r1@mcs")
    invoker.issued.remember_revoked(app.backend.client, PREFIX, "old-id", time.time())
    invoker.send("served")
    assert app.revokes == [(["old-id"], slots("served-1"), False)]


# -- the task's record, kept from its last call -----------------------------------------------------------------


def test_an_unchanged_record_is_not_read_again_and_a_changed_one_is_used_at_once(fake, monkeypatch) -> None:
    invoker, app, _ = fake
    _deploy(invoker)
    app.alive.update({"served-1-r1@mcs", "served-2-r1@mcs"})
    reads: list[str] = []
    read = invoker.issued.record_json
    monkeypatch.setattr(invoker.issued, "record_json", lambda key: reads.append(key) or read(key))
    first, second = invoker.send("served").task_id, invoker.send("served").task_id
    assert len(reads) == 1 and [s[1] for s in app.sent] == ["sq.v1", "sq.v1"]
    assert invoker.issued.find(second)["route"] == "sq.v1" and invoker.issued.find(first)
    _deploy(invoker, hostname="served-2@mcs", version="v2", serve_queue="sq.v2")  # a redeploy switched
    third = invoker.send("served").task_id
    assert app.sent[-1][1] == "sq.v2" and invoker.issued.find(third)["route"] == "sq.v2"
    assert app.pings[-1][0] == slots("served-2") and len(reads) == 1  # the check itself brought the new one


def test_a_kept_record_whose_worker_must_be_asked_again_is_read_first(fake) -> None:
    invoker, app, _ = fake
    _deploy(invoker)
    app.alive.update({"served-1-r1@mcs", "served-2-r1@mcs"})
    invoker.send("served")
    _deploy(invoker, hostname="served-2@mcs", version="v2", serve_queue="sq.v2")
    invoker._liveness.clear()  # the answer of the first worker expired: only the serving one is asked
    invoker.send("served")
    assert [p[0] for p in app.pings] == [slots("served-1"), slots("served-2")]


def test_a_call_is_checked_against_the_record_as_it_is_now(fake) -> None:
    invoker, app, _ = fake
    invoker.registry.register(name="by_hand", queue="hq", parameters=[{"name": "a", "type": "int"}])
    invoker.send("by_hand", args=[1])
    invoker.registry.register(name="by_hand", queue="hq", parameters=[{"name": "a", "type": "str"}])
    with pytest.raises(InvalidInput):
        invoker.send("by_hand", args=[1])
    invoker.send("by_hand", args=["x"])
    invoker.registry.remove("by_hand")
    with pytest.raises(NotFound):
        invoker.send("by_hand", args=["x"])
    assert len(app.sent) == 2 and len(invoker.issued.client.keys("*issued*")) == 2


def test_without_scripts_the_id_is_remembered_in_two_round_trips(fake) -> None:
    invoker, app, _ = fake
    invoker.registry.register(name="by_hand", queue="hq")

    def refused(**_: Any) -> None:
        raise redis.exceptions.NoPermissionError("this user has no permissions to run the 'evalsha' command")

    invoker.issued._script = refused
    first = invoker.send("by_hand").task_id
    assert invoker.issued._script is False and invoker.issued.find(first)["queue"] == "hq"
    invoker.registry.register(name="by_hand", queue="hq2")
    second = invoker.send("by_hand").task_id
    assert invoker.issued.find(second)["queue"] == "hq2" and app.sent[-1][1] == "hq2"


# -- several ids, wait_s ----------------------------------------------------------------------------------------


def _issue(invoker: TaskInvoker, state: str | None, value: Any = None) -> str:
    task_id = str(uuid.uuid4())
    invoker.issued.remember(task_id, "served", "sq", PREFIX, route="sq.v1")
    if state:
        invoker.app.states[task_id] = (state, value)
    return task_id


def test_several_ids_answer_one_entry_each_in_order_with_counts(fake) -> None:
    invoker, _, _ = fake
    done = _issue(invoker, "SUCCESS", {"v": 1})
    failed = _issue(invoker, "FAILURE", ValueError("boom"))
    queued = _issue(invoker, None)
    running = _issue(invoker, "STARTED")
    unknown = str(uuid.uuid4())
    answer = invoker.status(task_ids=[done, failed, queued, unknown, running, done])
    entries = answer.results
    assert [e.task_id for e in entries] == [done, failed, queued, unknown, running, done]
    assert [e.status for e in entries] == ["SUCCESS", "FAILURE", "PENDING", "UNKNOWN", "STARTED", "SUCCESS"]
    assert entries[0].result == {"v": 1} and entries[0].ready
    assert entries[1].error == "task_failed" and entries[1].exception_type == "ValueError"
    assert entries[1].exception_message == "boom"
    assert entries[3].error == "not_found" and entries[3].ready
    assert answer.counts == {"total": 6, "ready": 4, "pending": 2, "failed": 2}
    assert answer.ready is False and answer.task_id is None and answer.success is True


def test_one_id_keeps_its_shape(fake) -> None:
    invoker, _, _ = fake
    done = _issue(invoker, "SUCCESS", 5)
    answer = invoker.status(done)
    assert (answer.task_id, answer.status, answer.ready, answer.result) == (done, "SUCCESS", True, 5)
    assert answer.results is None and answer.counts is None
    with pytest.raises(NotFound):
        invoker.status(str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "task_id/task_ids"),
        ({"task_id": "0b5a3c1e-5a0e-4b8e-9a55-3a6f8f7f2d11", "task_ids": []}, "task_id/task_ids"),
        ({"task_ids": []}, "task_ids"),
        ({"task_ids": [str(uuid.uuid4()) for _ in range(101)]}, "task_ids"),
        ({"task_ids": ["0b5a3c1e-5a0e-4b8e-9a55-3a6f8f7f2d11", "nope"]}, "task_ids[1]"),
        ({"task_ids": "0b5a3c1e-5a0e-4b8e-9a55-3a6f8f7f2d11"}, "task_ids"),
        ({"task_id": "0b5a3c1e-5a0e-4b8e-9a55-3a6f8f7f2d11", "wait_s": 61}, "wait_s"),
        ({"task_id": "0b5a3c1e-5a0e-4b8e-9a55-3a6f8f7f2d11", "wait_s": -1}, "wait_s"),
        ({"task_id": "0b5a3c1e-5a0e-4b8e-9a55-3a6f8f7f2d11", "wait_s": True}, "wait_s"),
    ],
)
def test_bad_result_requests_are_refused(fake, kwargs: dict[str, Any], field: str) -> None:
    invoker, _, _ = fake
    with pytest.raises(InvalidInput) as refused:
        invoker.status(**kwargs)
    assert refused.value.field == field


# -- cancel -----------------------------------------------------------------------------------------------------


def _queued_message(task_id: str) -> str:
    body = "W1tdLCB7fSwge31d"  # base64 of the call's arguments, as kombu stores it
    return json.dumps({"body": body, "headers": {"id": task_id, "root_id": task_id}, "properties": {}})


def test_cancel_of_a_queued_call_takes_it_off_its_queue_and_remembers_it(fake) -> None:
    invoker, app, broker = fake
    task_id, other = _issue(invoker, None), _issue(invoker, None)
    queue = f"{PREFIX}sq.v1"
    broker.lpush(queue, _queued_message(other), _queued_message(task_id))
    answer = invoker.cancel(task_id)
    assert answer.cancelled and answer.removed_from_queue and answer.status == "REVOKED"
    assert [json.loads(m)["headers"]["id"] for m in broker.lrange(queue, 0, -1)] == [other]
    assert app.revokes == [(task_id, None, False)]
    assert invoker.issued.find(task_id)["revoked_at"] > 0
    assert app.backend.client.zscore(Keys.revoked(PREFIX), task_id) is not None
    status = invoker.status(task_id)
    assert status.status == "REVOKED" and status.ready and status.cancelled_at
    again = invoker.cancel(task_id)  # idempotent
    assert again.cancelled and again.status == "REVOKED"


def test_cancel_of_a_call_a_worker_took_answers_revoked_until_it_runs(fake) -> None:
    invoker, app, _ = fake
    task_id = _issue(invoker, None)  # not in any queue: a worker received it
    answer = invoker.cancel(task_id, terminate=True)
    assert answer.cancelled and not answer.removed_from_queue and answer.status == "REVOKED"
    assert "may still run" in answer.message and app.revokes == [(task_id, None, True)]
    assert invoker.status(task_ids=[task_id]).results[0].status == "REVOKED"
    app.states[task_id] = ("SUCCESS", 1)  # a worker that missed the revoke ran it after all: the truth shows
    assert invoker.status(task_id).status == "SUCCESS"


def test_cancel_of_a_running_call_without_terminate_says_it_keeps_running(fake) -> None:
    invoker, _, _ = fake
    task_id = _issue(invoker, "STARTED")
    answer = invoker.cancel(task_id)
    assert not answer.cancelled and answer.status == "STARTED" and "terminate=true" in answer.message


def test_cancel_of_a_finished_call_changes_nothing(fake) -> None:
    invoker, app, _ = fake
    task_id = _issue(invoker, "SUCCESS", 3)
    answer = invoker.cancel(task_id)
    assert not answer.cancelled and answer.status == "SUCCESS" and app.revokes == []
    assert "revoked_at" not in invoker.issued.find(task_id)


def test_cancel_refuses_unknown_and_malformed_ids(fake) -> None:
    invoker, _, _ = fake
    with pytest.raises(NotFound):
        invoker.cancel(str(uuid.uuid4()))
    with pytest.raises(InvalidInput) as refused:
        invoker.cancel("nope")
    assert refused.value.field == "task_id"
    with pytest.raises(InvalidInput) as refused:
        invoker.cancel(_issue(invoker, None), terminate="yes")
    assert refused.value.field == "terminate"


def test_revocations_under_a_prefix_are_pruned_after_the_result_lifetime(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, result_expires_s=100)
    client = fakeredis.FakeRedis()
    issued = IssuedTasks(settings, fakeredis.FakeRedis())
    now = time.time()
    issued.remember_revoked(client, "p:", "old", now - 500)
    issued.remember_revoked(client, "p:", "new", now)
    assert issued.revoked_ids(client, "p:") == ["new"] and client.ttl(Keys.revoked("p:")) > 0


def test_remove_queued_looks_in_priority_lists_and_leaves_lookalikes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    broker = fakeredis.FakeRedis()
    issued = IssuedTasks(settings, fakeredis.FakeRedis())
    wanted = str(uuid.uuid4())
    lookalike = json.dumps({"body": "x", "headers": {"id": "other", "parent_id": wanted}})
    broker.lpush("p:q", lookalike)
    broker.lpush("p:q\x06\x163", _queued_message(wanted))
    assert issued.remove_queued(broker, ["p:q", "p:q\x06\x163"], wanted)
    assert broker.llen("p:q") == 1 and broker.llen("p:q\x06\x163") == 0
    assert not issued.remove_queued(broker, ["p:q", "p:q\x06\x163"], wanted)


def test_any_replica_that_answers_serves_the_call_and_a_parked_task_is_woken(fake) -> None:
    invoker, app, _ = fake
    _deploy(invoker, replicas=3)
    app.alive.add("served-1-r2@mcs")  # slots 1 and 3 are gone; slot 2 answers
    invoker.send("served")
    # Every slot the group may use is asked (MCS_MAX_REPLICAS, 8): the first answer ends the wait.
    assert app.pings == [([f"served-1-r{slot}@mcs" for slot in range(1, 9)], 0.5, 1)]
    assert len(app.sent) == 1
    woken: list[str] = []
    invoker.wake = woken.append
    _deploy(invoker, hostname="parked@mcs", replicas=0)
    invoker.send("served")  # queued at once; the deploy worker is asked to start a worker
    invoker.send("served")  # a burst of calls asks once
    assert woken == ["served"] and len(app.sent) == 3
    _deploy(invoker, replicas=1)  # woken: it serves
    invoker.send("served")
    _deploy(invoker, hostname="parked@mcs", replicas=0)  # parked again: the next call asks again at once
    invoker.send("served")
    assert woken == ["served", "served"]
