"""Task ids MCS issued: remembered for the result lifetime, so an id MCS never issued is reported as unknown
instead of Celery's eternal PENDING; and what cancel_celery_task remembers of a revoked call.

A revocation is kept in three places: the issued-id record (``revoked_at``: get_celery_result answers REVOKED for
a call that did not start), a ZSET under the task's key prefix in the result DB (``Keys.revoked``: the task's
worker can read it, and MCS broadcasts it again to a worker it finds answering), and, while the call still waits
in its queue, by taking the message off the queue (``remove_queued``): then no worker, started now or later, runs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from Redis.connection import RedisStore, redis_errors
from Redis.keys import Keys

#: What ``remember_if_current`` answers when it remembered the id.
REMEMBERED = True

MAX_QUEUE_SCAN = 10_000  # messages looked at per list (newest first) to take a cancelled call off its queue

# KEYS: a queue's lists (kombu: the queue, then its priority lists). ARGV: the task id, the scan limit.
# kombu LPUSHes, so the newest message is leftmost: scan from the left, a chunk at a time, a cheap substring test
# first (the body is base64: the id appears in the headers), then the decoded headers.id. One script: a consumer
# either took the message before it (0) or never sees it (1).
_REMOVE_SCRIPT = """
local id, limit = ARGV[1], tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
    local n = math.min(redis.call('LLEN', key), limit)
    for start = 0, n - 1, 500 do
        local chunk = redis.call('LRANGE', key, start, math.min(start + 499, n - 1))
        for _, raw in ipairs(chunk) do
            if string.find(raw, id, 1, true) then
                local ok, message = pcall(cjson.decode, raw)
                if ok and type(message) == 'table' and type(message['headers']) == 'table'
                        and message['headers']['id'] == id then
                    return redis.call('LREM', key, 1, raw)
                end
            end
        end
    end
end
return 0
"""

# KEYS: the task's registry record, the id's issued record, [the release's call counts]. ARGV: the registry record
# (its JSON) the call was checked against, the issued JSON, its TTL (s), [the counts' field]. The id is remembered only
# while the record is that one (1); else nothing is written and the record as it is now comes back (nil: gone).
_REMEMBER_IF_CURRENT_SCRIPT = """
local record = redis.call('GET', KEYS[1])
if not record then
    return false
end
if record ~= ARGV[1] then
    return record
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if KEYS[3] then
    redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
end
return 1
"""


class IssuedTasks(RedisStore):
    """``mcs:issued:{task_id}`` -> {task_name, queue, sent_at, key_prefix}, with a TTL of ``result_expires_s``."""

    #: remember_if_current's script (registered on first use), or False once Redis refused scripts
    _script: Any = None

    def remember(
        self,
        task_id: str,
        task_name: str,
        queue: str,
        key_prefix: str = "",
        canary_version: str | None = None,
        release: str | None = None,
        route: str | None = None,
    ) -> None:
        """``key_prefix``: where the task's result will be (its deployment's prefix when it was sent).
        ``canary_version``: the version a call sent during a gradual release went to; its calls are counted under
        ``release``, the folder's main task (default: the task itself). ``route``: the queue the call was sent to
        (a version's own queue), when it is not ``queue``."""
        issued = _issued(task_name, queue, key_prefix, canary_version, release, route)
        with redis_errors(self.settings):
            if not canary_version:
                self.client.set(self.keys.issued(task_id), json.dumps(issued), ex=self.settings.result_expires_s)
                return
            pipe = self.client.pipeline(transaction=False)  # one round trip either way
            pipe.set(self.keys.issued(task_id), json.dumps(issued), ex=self.settings.result_expires_s)
            pipe.hincrby(self.keys.calls(issued["release"]), f"{canary_version}:sent", 1)
            pipe.execute()

    def record_json(self, record_key: str) -> str | bytes | None:
        """A registry record's JSON as stored (``Keys.task``), as ``remember_if_current`` compares it."""
        with redis_errors(self.settings):
            return self.client.get(record_key)

    def remember_if_current(
        self,
        record_key: str,
        record_json: str | bytes,
        task_id: str,
        task_name: str,
        queue: str,
        key_prefix: str = "",
        canary_version: str | None = None,
        release: str | None = None,
        route: str | None = None,
    ) -> bool | str | bytes | None:
        """``remember``, in the same round trip as the check that the task's registry record (``record_key``) is
        still the one the call was checked and routed against (``record_json``, as stored): then REMEMBERED.
        Otherwise nothing is written and the record as it is now comes back (its JSON, or None when it is gone), to
        check the call again. Where Redis refuses scripts, the same in two round trips."""
        issued = _issued(task_name, queue, key_prefix, canary_version, release, route)
        ttl = self.settings.result_expires_s
        keys = [record_key, self.keys.issued(task_id)]
        args: list[Any] = [record_json, json.dumps(issued), ttl]
        if canary_version:
            keys.append(self.keys.calls(issued["release"]))
            args.append(f"{canary_version}:sent")
        with redis_errors(self.settings):
            if self._script is not False:
                try:
                    answer = self._remember_script(keys=keys, args=args)
                except redis.ResponseError as exc:
                    if not _scripts_refused(exc):
                        raise
                    self._script = False  # a Redis user without scripting (or a Redis without it): not again
                else:
                    return REMEMBERED if answer == 1 else answer
            current = self.client.get(record_key)
            if current != record_json:
                return current
        self.remember(task_id, task_name, queue, key_prefix, canary_version, release, route)
        return REMEMBERED

    @property
    def _remember_script(self) -> Any:
        if self._script is None:  # redis-py's Script: EVALSHA, loading it again after a Redis restart
            self._script = self.client.register_script(_REMEMBER_IF_CURRENT_SCRIPT)
        return self._script

    def count_outcome(self, task_id: str, issued: dict[str, Any], succeeded: bool) -> None:
        """Count a finished call of a gradual release against its version, once however often it is read."""
        version = issued.get("version")
        if not version:
            return
        with redis_errors(self.settings):
            if self.client.set(self.keys.counted(task_id), 1, nx=True, ex=self.settings.result_expires_s):
                field = f"{version}:{'succeeded' if succeeded else 'failed'}"
                self.client.hincrby(self.keys.calls(issued.get("release") or issued["task_name"]), field, 1)

    def calls(self, task_name: str) -> dict[str, dict[str, int]]:
        """{version: {sent, succeeded, failed}} of the calls counted during gradual releases of ``task_name``."""
        with redis_errors(self.settings):
            raw = self.client.hgetall(self.keys.calls(task_name))
        counts: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            version, _, kind = (field.decode() if isinstance(field, bytes) else field).partition(":")
            counts.setdefault(version, {"sent": 0, "succeeded": 0, "failed": 0})[kind] = int(value)
        return counts

    def forget_calls(self, task_name: str) -> None:
        with redis_errors(self.settings):
            self.client.delete(self.keys.calls(task_name))

    def find(self, task_id: str) -> dict[str, Any] | None:
        """What was recorded when ``task_id`` was sent, or None for an id MCS did not issue (or forgot)."""
        with redis_errors(self.settings):
            raw = self.client.get(self.keys.issued(task_id))
        return None if raw is None else json.loads(raw)

    def find_many(self, task_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """``find`` of each id, in order, in one round trip."""
        if not task_ids:
            return []
        with redis_errors(self.settings):
            raws = self.client.mget([self.keys.issued(task_id) for task_id in task_ids])
        return [None if raw is None else json.loads(raw) for raw in raws]

    def keep(self, task_id: str) -> None:
        """Remember the id for another result lifetime (it is still queued or running)."""
        with redis_errors(self.settings):
            self.client.expire(self.keys.issued(task_id), self.settings.result_expires_s)

    def keep_many(self, task_ids: Sequence[str]) -> None:
        """``keep`` of each id, in one round trip."""
        if not task_ids:
            return
        with redis_errors(self.settings):
            pipe = self.client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.expire(self.keys.issued(task_id), self.settings.result_expires_s)
            pipe.execute()

    def mark_lost(self, task_id: str, lost_at: float) -> None:
        """The call's worker died at ``lost_at`` and the call was delivered again (get_celery_result says so)."""
        key = self.keys.issued(task_id)
        with redis_errors(self.settings):
            raw = self.client.get(key)
            if raw is None:
                return
            issued = json.loads(raw)
            issued["worker_lost_at"] = lost_at
            issued["redelivered"] = int(issued.get("redelivered", 0)) + 1
            self.client.set(key, json.dumps(issued), keepttl=True)

    def mark_revoked(self, task_id: str, revoked_at: float, terminate: bool) -> dict[str, Any] | None:
        """Remember that cancel_celery_task revoked the call (the first time only); the updated record."""
        key = self.keys.issued(task_id)
        with redis_errors(self.settings):
            raw = self.client.get(key)
            if raw is None:
                return None
            issued = json.loads(raw)
            if "revoked_at" not in issued or (terminate and not issued.get("terminate")):
                issued.setdefault("revoked_at", revoked_at)
                issued["terminate"] = bool(terminate or issued.get("terminate"))
                self.client.set(key, json.dumps(issued), keepttl=True)
            return issued

    def remember_revoked(self, backend: redis.Redis, key_prefix: str, task_id: str, revoked_at: float) -> None:
        """Add the id to the revocations under the task's prefix (in the result DB, through ``backend``), dropping
        those older than the result lifetime; the key itself expires with the last of them."""
        key = Keys.revoked(key_prefix)
        keep_s = self.settings.result_expires_s
        with redis_errors(self.settings):
            pipe = backend.pipeline(transaction=False)
            pipe.zadd(key, {task_id: revoked_at})
            pipe.zremrangebyscore(key, "-inf", revoked_at - keep_s)
            pipe.expire(key, keep_s)
            pipe.execute()

    def revoked_ids(self, backend: redis.Redis, key_prefix: str, limit: int = 1000) -> list[str]:
        """The ids revoked under the task's prefix within the result lifetime, newest first (at most ``limit``)."""
        since = time.time() - self.settings.result_expires_s
        with redis_errors(self.settings):
            ids = backend.zrevrangebyscore(Keys.revoked(key_prefix), "+inf", since, start=0, num=limit)
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    def remove_queued(self, broker: redis.Redis, queue_lists: Sequence[str], task_id: str) -> bool:
        """Take the call's message off its queue (the broker DB's lists ``queue_lists``, full keys) if it still
        waits there, among the newest ``MAX_QUEUE_SCAN`` of each list: True when it was taken off, so that no
        worker will ever receive it."""
        with redis_errors(self.settings):
            return bool(broker.eval(_REMOVE_SCRIPT, len(queue_lists), *queue_lists, task_id, MAX_QUEUE_SCAN))


def _issued(
    task_name: str, queue: str, key_prefix: str, canary_version: str | None, release: str | None, route: str | None
) -> dict[str, Any]:
    issued: dict[str, Any] = {"task_name": task_name, "queue": queue, "sent_at": time.time()}
    if key_prefix:
        issued["key_prefix"] = key_prefix
    if route and route != queue:
        issued["route"] = route
    if canary_version:
        issued["version"] = canary_version
        issued["release"] = release or task_name
    return issued


def _scripts_refused(exc: redis.ResponseError) -> bool:
    return isinstance(exc, redis.exceptions.NoPermissionError) or "unknown command" in str(exc).lower()
