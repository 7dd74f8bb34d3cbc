"""Is a new worker healthy: alive in its runtime and answering, over Celery, with its task among its registered
ones. Also the per-step timings every deploy result reports."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from deploy_mcp.runtime import Replica, WorkerHandle, WorkerRuntime
from mcs.core.celery_app import PrefixedApps, celery_task_name
from mcs.core.errors import DeployError
from Redis.connection import is_connection_error

log = logging.getLogger(__name__)

# (celery hostname, timeout_s, key_prefix=...) -> the task names the worker registers, or None when it did not
# answer in time. The prefix is the task's: its remote-control channel is under it.
Probe = Callable[..., list[str] | None]

#: How long each probe waits for the answer: short at first (a request sent before the new worker listens is lost,
#: and waits for nothing but its timeout: a worker is ready about 0.35 s after its container was created, and the
#: probe that went out just before costs the deploy what is left of its timeout; 0.1 s and 1.2 x gave a health step
#: of about 0.39 s, 0.05 s about 0.30 s), longer the more often it went unanswered (an answer to an earlier probe is
#: not counted, so a slow worker's answer must fit in one: 0.2 s is reached after 7 probes, 0.5 s after 11), at
#: most PROBE_TIMEOUT_MAX_S.
PROBE_TIMEOUT_FIRST_S = 0.05
PROBE_TIMEOUT_GROWTH = 1.25
PROBE_TIMEOUT_MAX_S = 0.5
#: The probe's own connection blocks on Redis for this long at most (kombu's BRPOP timeout, 1 s by default).
PROBE_POLL_S = 0.05


def probe_timeouts() -> Iterator[float]:
    timeout = PROBE_TIMEOUT_FIRST_S
    while True:
        yield timeout
        timeout = min(PROBE_TIMEOUT_MAX_S, timeout * PROBE_TIMEOUT_GROWTH)


def inspect_workers(
    apps: PrefixedApps, key_prefix: str, hostnames: list[str], timeout_s: float, what: str, **options: Any
) -> tuple[dict[str, Any] | None, ...] | None:
    """Ask the workers ``hostnames`` on their prefix's remote-control channel (with MCS's own credentials: a task's
    user cannot reach another's), each of ``what`` (``registered``, ``active``, ...): the replies, in that order.
    None when the connection was lost (one the pool kept from before a Redis restart): not an answer, and a fresh
    app asks next time.

    Each question has a connection of its own, with a short BRPOP: with the app's pooled connection, one that went
    unanswered left its BRPOP (kombu waits 1 s on Redis) on the connection, on a reply queue whose name changes
    with each question (kombu's oid of the bound mailbox), so the next answer waited in Redis until that BRPOP
    ended and was then dropped with its queue: a new worker's first answer came about 0.6 s after it was ready."""
    app = apps.get(key_prefix)
    try:
        with app.connection_for_write(transport_options={"polling_interval": PROBE_POLL_S}) as connection:
            inspect = app.control.inspect(
                destination=list(hostnames), timeout=timeout_s, connection=connection, **options
            )
            return tuple(getattr(inspect, question)() for question in what.split())
    except Exception as exc:
        from kombu.exceptions import OperationalError

        if not (isinstance(exc, OperationalError | OSError) or is_connection_error(exc)):
            raise
        log.info("an inspect of %s lost its Redis connection (%s); asking again", key_prefix, type(exc).__name__)
        apps.forget(key_prefix)
        return None


def registered_tasks(apps: PrefixedApps, hostname: str, timeout_s: float, key_prefix: str = "") -> list[str] | None:
    """The Probe of a real Celery worker: the task names it registers, from ``inspect().registered()``."""
    asked = inspect_workers(apps, key_prefix, [hostname], timeout_s, "registered", limit=1)
    replies = asked[0] if asked else None
    return None if not replies or hostname not in replies else list(replies[hostname])


def held_calls(apps: PrefixedApps, hostnames: list[str], key_prefix: str, timeout_s: float = 1.0) -> set[str] | None:
    """The task ids the workers ``hostnames`` hold (running, or reserved and not started), from ``inspect active``
    and ``inspect reserved`` on their prefix's remote-control channel; None unless every one of them answered both
    (a call is never given back on a guess: it would run twice)."""
    if not hostnames:
        return set()
    asked = inspect_workers(apps, key_prefix, hostnames, timeout_s, "active reserved")
    if asked is None:
        return None
    held: set[str] = set()
    for replies in asked:
        if not replies or set(hostnames) - set(replies):
            return None
        for requests in replies.values():
            held |= {str(r.get("id")) for r in requests or [] if r.get("id")}
    return held


class Timings:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = round((time.perf_counter() - start) * 1000, 1)

    def total(self) -> None:
        self.ms["total"] = round((time.perf_counter() - self._start) * 1000, 1)


def wait_healthy(
    runtime: WorkerRuntime,
    probe: Probe,
    handle: WorkerHandle,
    tasks: str | list[str],
    timeout_s: float,
    replicas: int = 1,
) -> None:
    """Until the deadline: ``replicas`` workers of the group must run and each answer with every task of its folder
    among its registered ones (a worker that answered once is not asked again)."""
    deadline = time.monotonic() + timeout_s
    names = [tasks] if isinstance(tasks, str) else tasks
    answered: set[str] = set()
    for probe_timeout in probe_timeouts():
        if time.monotonic() >= deadline:
            break
        members = _members(runtime, handle)
        stopped = [m for m in members if m.state in ("EXITED", "MISSING", "RESTARTING")]
        if not members or len(members) - len(stopped) < replicas:
            state = stopped[0].state if stopped else "MISSING"
            raise DeployError(f"the new worker stopped before answering (state {state}): see log_tail", step="health")
        for member in members:
            if member.hostname in answered or member.state != "RUNNING":
                continue
            registered = probe(member.hostname, probe_timeout)
            if registered is None:
                continue
            missing = [celery_task_name(n) for n in names if celery_task_name(n) not in registered]
            if missing:
                wanted = missing[0]
                raise DeployError(
                    f"the new worker answers but does not define {wanted}: does app_{{queue}}.py declare "
                    f"@celery_app.task(name={wanted!r})? It registers: {sorted(registered)[:10]}",
                    step="health",
                )
            answered.add(member.hostname)
        if len(answered) >= replicas:
            return
    raise DeployError(
        f"the new worker did not answer within {timeout_s:g} s (MCS_HEALTH_TIMEOUT_S; {len(answered)} of {replicas} "
        "worker(s) answered): see log_tail",
        step="health",
    )


def _members(runtime: WorkerRuntime, handle: WorkerHandle) -> list[Replica]:
    """The group's workers; a runtime without groups (a worker of its own) is a group of one."""
    members = getattr(runtime, "members", None)
    if members is not None:
        return members(handle)
    return [Replica(handle.id, 1, handle.hostname, runtime.state(handle), handle.name)]
