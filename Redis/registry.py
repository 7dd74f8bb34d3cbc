"""The task registry: register, get, list, categorise and remove task records in Redis.

Every write is one optimistic transaction (WATCH/MULTI/EXEC, retried on conflict), so a record, its category set
and the category index never disagree. Listing is bounded in round trips: one SMEMBERS, then one MGET per
``LIST_CHUNK`` names, never one command per task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import redis

from mcs.core.errors import Conflict, InvalidInput, NotFound
from mcs.core.models import DeploymentInfo, ParameterSpec, TaskRecord, check_task_record, utc_now
from mcs.core.names import validate_category, validate_name
from Redis.connection import RedisStore, redis_errors
from Redis.lock import redis_lock

log = logging.getLogger(__name__)

LIST_CHUNK = 1000
MAX_NAMED_CATEGORIES = 50  # an unknown category's error names at most this many existing ones


class TaskRegistry(RedisStore):
    """Task metadata in Redis. Cheap to create; the client connects on first use."""

    # -- locks ------------------------------------------------------------------------------------------------

    def deploy_lock(self, task_name: str, ttl_s: int, **holder: Any) -> AbstractContextManager[str]:
        """One deploy per task at a time (renewed while held); Conflict when another one holds it. ``holder`` and
        ``holder_alive`` (see ``redis_lock``) free at once a lock whose deploy worker died."""
        what = f"a deploy of task {task_name!r}"
        return redis_lock(self.client, self.keys.deploy_lock(task_name), ttl_s, what=what, **holder)

    def queue_lock(self, queue: str, ttl_s: int, **holder: Any) -> AbstractContextManager[str]:
        """One deploy per queue at a time: a queue belongs to one task's worker."""
        what = f"a deploy on queue {queue!r}"
        return redis_lock(self.client, self.keys.queue_lock(queue), ttl_s, what=what, **holder)

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
        retry: Any = None,
    ) -> TaskRecord:
        """Create or update a task. An update keeps ``created_at`` and moves the category atomically."""
        draft = check_task_record(
            {
                "name": name,
                "description": description,
                "parameters": list(parameters),
                "return_type": return_type,
                "category": category,
                "queue": queue,
                "deployment": deployment,
                "retry": retry,
            }
        )
        if draft.queue == self.settings.deploy_queue:
            raise InvalidInput("queue", draft.queue, "the deploy queue is reserved for MCS's deploy worker")
        if draft.deployment is None:
            self._refuse_foreign_queue(draft)
        task_key = self.keys.task(draft.name)
        saved: dict[str, TaskRecord] = {}

        def write(pipe: redis.client.Pipeline) -> None:
            old = _decode(pipe.get(task_key))
            now = utc_now()
            kept = draft.deployment
            update: dict[str, Any] = {"created_at": old.created_at if old else now, "last_updated": now}
            if kept is None and old is not None and old.deployment is not None:
                # Metadata updates (register_task_info) keep the deployment; only a deploy replaces it. The queue
                # and the parameters of a deployed task are its worker's: changing them here would send calls
                # nowhere or with arguments the code does not take.
                _refuse_reshaping(old, draft)
                kept = old.deployment
                if draft.retry is None:
                    update["retry"] = old.retry  # the retry policy is the deployed code's: register keeps it
            record = draft.model_copy(update={**update, "deployment": kept})
            old_cat_empty = False
            if old and old.category != record.category:
                old_cat_key = self.keys.category(old.category)
                pipe.watch(old_cat_key)
                old_cat_empty = pipe.scard(old_cat_key) <= 1
            pipe.multi()
            pipe.set(task_key, record.model_dump_json())
            if old and old.deployment is not None and old.queue != record.queue:
                pipe.delete(self.keys.queue_owner(old.queue))  # a redeploy moved the task to another queue
            if record.deployment is not None:
                pipe.set(self.keys.queue_owner(record.queue), record.primary)
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

    def _refuse_foreign_queue(self, draft: TaskRecord) -> None:
        """A queue another task's deployment serves is that worker's: registering there would hand it our calls.
        One GET (the queue's owner key), so registering stays O(1) however many tasks there are."""
        with redis_errors(self.settings):
            owner = self.client.get(self.keys.queue_owner(draft.queue))
        owner = owner.decode() if isinstance(owner, bytes) else owner
        if owner and owner != draft.name and owner != self._primary_of(draft.name):
            raise Conflict(
                f"queue {draft.queue!r} is served by task {owner!r}'s deployed worker; register {draft.name!r} on a "
                "queue of its own",
                queue=draft.queue,
                owner=owner,
            )

    def _primary_of(self, name: str) -> str | None:
        old = self.find(name)
        return old.primary if old is not None and old.deployment is not None else None

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
            owner_key = self.keys.queue_owner(old.queue) if old else None
            owned = owner_key is not None and pipe.get(owner_key) in (name, name.encode())
            pipe.multi()
            pipe.delete(task_key)
            pipe.srem(self.keys.all_tasks(), name)
            if owned:
                pipe.delete(owner_key)
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

    def category_names(self, category: str) -> list[str]:
        """The names of one category, sorted; NotFound naming the categories that exist when it has no task."""
        names = self.names(category)
        if not names:
            raise self.unknown_category(category)
        return names

    def unknown_category(self, category: str) -> NotFound:
        """The error for a category without tasks: it names (at most MAX_NAMED_CATEGORIES of) those that exist."""
        import difflib

        existing = list(self.categories())
        shown = existing[:MAX_NAMED_CATEGORIES]
        more = f" and {len(existing) - len(shown)} more" if len(existing) > len(shown) else ""
        known = f"the categories are: {', '.join(shown)}{more}" if existing else "no task is registered yet"
        return NotFound(
            f"category {category!r} has no tasks; {known} (get_task_categories counts them)",
            category=category,
            categories=shown,
            suggestions=difflib.get_close_matches(category, existing, n=3, cutoff=0.6),
        )

    def list(self, category: str | None = None, offset: int = 0, limit: int | None = None) -> list[TaskRecord]:
        """Records sorted by name, optionally one category and one page: 1 + ceil(n / LIST_CHUNK) commands."""
        names = self.names(category)
        return self.fetch(names[offset : None if limit is None else offset + limit])

    def fetch(self, names: Sequence[str]) -> list[TaskRecord]:
        """The records of ``names``, in that order (a name removed meanwhile is skipped): one MGET per LIST_CHUNK
        names, so a listing or a search over n tasks costs ceil(n / LIST_CHUNK) commands after its SMEMBERS."""
        records: list[TaskRecord] = []
        with redis_errors(self.settings):
            for start in range(0, len(names), LIST_CHUNK):
                chunk = names[start : start + LIST_CHUNK]
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


def _refuse_reshaping(old: TaskRecord, draft: TaskRecord) -> None:
    """Description, category and return type of a deployed task stay editable; its queue and parameters do not."""
    if draft.queue != old.queue:
        raise Conflict(
            f"task {old.name!r} is deployed on queue {old.queue!r}; its queue is its worker's: redeploy it with "
            "deploy_task to change its queue",
            field="queue",
            value=draft.queue,
            task_name=old.name,
        )
    if [p.model_dump() for p in draft.parameters] != [p.model_dump() for p in old.parameters]:
        raise Conflict(
            f"task {old.name!r} is deployed: its parameters are its code's; redeploy it with deploy_task to change "
            "them (description, category and return_type stay editable here)",
            field="parameters",
            task_name=old.name,
        )


def _decode(raw: str | bytes | None) -> TaskRecord | None:
    if raw is None:
        return None
    return TaskRecord.model_validate_json(raw)
