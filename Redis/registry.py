"""The task registry: register, get, list, categorise and remove task records in Redis.

Every write is one optimistic transaction (WATCH/MULTI/EXEC, retried on conflict), so a record, its category set
and the category index never disagree. Listing is bounded in round trips: one SMEMBERS, then one MGET per
``LIST_CHUNK`` names, never one command per task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

import redis

from mcs.core.errors import InvalidInput, NotFound
from mcs.core.models import DeploymentInfo, ParameterSpec, TaskRecord, parse_model, utc_now
from mcs.core.names import validate_category, validate_name
from mcs.core.settings import Settings
from Redis.connection import make_client, redis_errors
from Redis.keys import Keys
from Redis.lock import redis_lock

log = logging.getLogger(__name__)

LIST_CHUNK = 1000


class TaskRegistry:
    """Task metadata in Redis. Cheap to create; the client connects on first use."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.metadata_prefix)
        self._client = client

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client

    # -- locks ------------------------------------------------------------------------------------------------

    def deploy_lock(self, task_name: str, ttl_s: int) -> AbstractContextManager[str]:
        """One deploy per task at a time (renewed while held); Conflict when another one holds it."""
        return redis_lock(self.client, self.keys.deploy_lock(task_name), ttl_s, what=f"a deploy of task {task_name!r}")

    def queue_lock(self, queue: str, ttl_s: int) -> AbstractContextManager[str]:
        """One deploy per queue at a time: a queue belongs to one task's worker."""
        return redis_lock(self.client, self.keys.queue_lock(queue), ttl_s, what=f"a deploy on queue {queue!r}")

    # -- writes -----------------------------------------------------------------------------------------------

    def register(
        self,
        *,
        name: str,
        description: str = "",
        parameters: Iterable[ParameterSpec | dict[str, Any]] = (),
        return_type: str = "Any",
        category: str = "general",
        queue: str = "celery",
        deployment: DeploymentInfo | dict[str, Any] | None = None,
    ) -> TaskRecord:
        """Create or update a task. An update keeps ``created_at`` and moves the category atomically."""
        draft = parse_model(
            TaskRecord,
            {
                "name": name,
                "description": description,
                "parameters": list(parameters),
                "return_type": return_type,
                "category": category,
                "queue": queue,
                "deployment": deployment,
            },
            "task",
        )
        if draft.queue == self.settings.deploy_queue:
            raise InvalidInput("queue", draft.queue, "the deploy queue is reserved for MCS's deploy worker")
        task_key = self.keys.task(draft.name)
        saved: dict[str, TaskRecord] = {}

        def write(pipe: redis.client.Pipeline) -> None:
            old = _decode(pipe.get(task_key))
            now = utc_now()
            kept = draft.deployment
            if kept is None and old is not None and old.deployment is not None:
                # Metadata updates (register_task_info) keep the deployment; only a deploy replaces it, and the
                # queue of a deployed task is its worker's: changing it here would send calls nowhere.
                if draft.queue != old.queue:
                    raise InvalidInput(
                        "queue",
                        draft.queue,
                        f"task {old.name!r} is deployed on queue {old.queue!r}; redeploy it to change its queue",
                    )
                kept = old.deployment
            record = draft.model_copy(
                update={"created_at": old.created_at if old else now, "last_updated": now, "deployment": kept}
            )
            old_cat_empty = False
            if old and old.category != record.category:
                old_cat_key = self.keys.category(old.category)
                pipe.watch(old_cat_key)
                old_cat_empty = pipe.scard(old_cat_key) <= 1
            pipe.multi()
            pipe.set(task_key, record.model_dump_json())
            pipe.sadd(self.keys.all_tasks(), record.name)
            pipe.sadd(self.keys.category(record.category), record.name)
            pipe.sadd(self.keys.categories(), record.category)
            if old and old.category != record.category:
                pipe.srem(self.keys.category(old.category), record.name)
                if old_cat_empty:
                    pipe.srem(self.keys.categories(), old.category)
            saved["record"] = record

        with redis_errors(self.settings):
            self.client.transaction(write, task_key)
        record = saved["record"]
        log.info("registered task %s (category %s, queue %s)", record.name, record.category, record.queue)
        return record

    def remove(self, name: str) -> bool:
        """Remove a task and every key of it. Returns False when it was not registered."""
        validate_name(name)
        task_key = self.keys.task(name)
        removed: dict[str, bool] = {}

        def delete(pipe: redis.client.Pipeline) -> None:
            old = _decode(pipe.get(task_key))
            removed["done"] = old is not None
            cat_empty = False
            if old:
                cat_key = self.keys.category(old.category)
                pipe.watch(cat_key)
                cat_empty = pipe.scard(cat_key) <= 1
            pipe.multi()
            pipe.delete(task_key)
            pipe.srem(self.keys.all_tasks(), name)
            if old:
                pipe.srem(self.keys.category(old.category), name)
                if cat_empty:
                    pipe.srem(self.keys.categories(), old.category)

        with redis_errors(self.settings):
            self.client.transaction(delete, task_key)
        if removed["done"]:
            log.info("removed task %s", name)
        return removed["done"]

    # -- reads ------------------------------------------------------------------------------------------------

    def find(self, name: str) -> TaskRecord | None:
        validate_name(name)
        with redis_errors(self.settings):
            return _decode(self.client.get(self.keys.task(name)))

    def get(self, name: str) -> TaskRecord:
        record = self.find(name)
        if record is None:
            raise NotFound(f"task {name!r} is not registered", task_name=name, suggestions=self.similar(name))
        return record

    def names(self, category: str | None = None) -> list[str]:
        key = self.keys.all_tasks() if category is None else self.keys.category(validate_category(category))
        with redis_errors(self.settings):
            return sorted(self.client.smembers(key))

    def list(self, category: str | None = None, offset: int = 0, limit: int | None = None) -> list[TaskRecord]:
        """Records sorted by name, optionally one category and one page: 1 + ceil(n / LIST_CHUNK) commands."""
        names = self.names(category)
        page = names[offset : None if limit is None else offset + limit]
        records: list[TaskRecord] = []
        with redis_errors(self.settings):
            for start in range(0, len(page), LIST_CHUNK):
                chunk = page[start : start + LIST_CHUNK]
                raws = self.client.mget([self.keys.task(n) for n in chunk])
                records.extend(r for r in map(_decode, raws) if r is not None)
        return records

    def categories(self) -> dict[str, int]:
        """Each category that has tasks, with its task count (one SMEMBERS and one pipelined SCARD batch)."""
        with redis_errors(self.settings):
            names = sorted(self.client.smembers(self.keys.categories()))
            pipe = self.client.pipeline(transaction=False)
            for category in names:
                pipe.scard(self.keys.category(category))
            counts = pipe.execute()
        return {c: n for c, n in zip(names, counts, strict=True) if n}

    def similar(self, name: str, limit: int = 3) -> list[str]:
        """Registered names close to ``name``, for 'did you mean' messages."""
        import difflib

        try:
            return difflib.get_close_matches(name, self.names(), n=limit, cutoff=0.6)
        except Exception:  # suggestions are a courtesy; never let them mask the real error
            return []


def _decode(raw: str | bytes | None) -> TaskRecord | None:
    if raw is None:
        return None
    return TaskRecord.model_validate_json(raw)
