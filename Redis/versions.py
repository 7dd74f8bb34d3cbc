"""The version history of each task: one HASH per task, ``{prefix}versions:{task}``, field = the version (its full
lowercase hex), value = the JSON of one VersionEntry.

A version is found by its full hex or by a unique prefix of at least ``MIN_PREFIX`` characters (as one types a git
commit). Every read is one command; a status change is one optimistic transaction (WATCH/MULTI/EXEC, retried on
conflict), so two writers never lose each other's fields.
"""

from __future__ import annotations

import builtins
import logging
import re
from typing import Any

import pydantic
import redis

from mcs.core.errors import InvalidInput, NotFound
from mcs.core.lifecycle import VersionEntry
from mcs.core.names import validate_name
from Redis.connection import RedisStore, redis_errors

log = logging.getLogger(__name__)

MIN_PREFIX = 6  # hex characters a version prefix needs
MAX_VERSION_CHARS = 64  # a full sha256 in hex
SHOWN_VERSIONS = 10  # versions named in a NotFound / ambiguity message, at most
VERSION_RULE = f"lowercase hex digits (0-9a-f), at most {MAX_VERSION_CHARS}"
PREFIX_RULE = f"a version (hex) or a unique prefix of at least {MIN_PREFIX} hex characters"

_HEX = re.compile(rf"[0-9a-f]{{1,{MAX_VERSION_CHARS}}}")


def check_version(value: Any, field: str = "version") -> str:
    """A full version as MCS writes it: lowercase hex, 1-64 characters."""
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise InvalidInput(field, value, VERSION_RULE)
    return value


class VersionHistory(RedisStore):
    """The versions of each task in Redis. Cheap to create; the client connects on first use."""

    # -- writes -----------------------------------------------------------------------------------------------

    def record(self, task: str, entry: VersionEntry) -> None:
        """Write ``entry`` under its version (a version recorded again is overwritten)."""
        key = self._key(task)
        check_version(entry.version)
        with redis_errors(self.settings):
            self.client.hset(key, entry.version, entry.model_dump_json())

    def set_status(self, task: str, version: str, status: str, **fields: Any) -> VersionEntry | None:
        """Set the status of a recorded version and any other fields (``tests=TestRun(...)``, ``image=...``) in one
        transaction; the updated entry, or None (and nothing written) when the version is not recorded."""
        key = self._key(task)
        check_version(version)
        if not isinstance(status, str) or not status:
            raise InvalidInput("status", status, "a non-empty string, e.g. serving, kept, refused or removed")

        def update(pipe: redis.client.Pipeline) -> VersionEntry | None:
            old = _decode(pipe.hget(key, version), key, version)
            pipe.multi()
            if old is None:
                return None
            data = {**old.model_dump(), "status": status, **fields}
            try:
                new = VersionEntry.model_validate(data)
            except pydantic.ValidationError as exc:
                bad = ".".join(map(str, exc.errors()[0]["loc"])) or "fields"
                raise InvalidInput(bad, fields.get(bad), exc.errors()[0]["msg"]) from None
            pipe.hset(key, version, new.model_dump_json())
            return new

        with redis_errors(self.settings):
            return self.client.transaction(update, key, value_from_callable=True)

    def remove(self, task: str, version: str) -> bool:
        """Forget one version; False when it was not recorded."""
        key = self._key(task)
        check_version(version)
        with redis_errors(self.settings):
            return bool(self.client.hdel(key, version))

    def remove_task(self, task: str) -> bool:
        """Forget every version of the task (undeploy); False when it had none."""
        key = self._key(task)
        with redis_errors(self.settings):
            return bool(self.client.delete(key))

    # -- reads ------------------------------------------------------------------------------------------------

    def get(self, task: str, version: str) -> VersionEntry | None:
        """The entry of exactly ``version``, or None."""
        key = self._key(task)
        check_version(version)
        with redis_errors(self.settings):
            raw = self.client.hget(key, version)
        return _decode(raw, key, version)

    def find(self, task: str, version_or_prefix: str) -> VersionEntry:
        """The entry of a full version or of the one version that starts with a prefix of at least ``MIN_PREFIX``
        hex characters (case-insensitive). NotFound names the known versions, newest first; InvalidInput (field
        ``version``) when the value is not hex, too short, or a prefix of several versions."""
        key = self._key(task)
        wanted = version_or_prefix.lower() if isinstance(version_or_prefix, str) else version_or_prefix
        if not isinstance(wanted, str) or not _HEX.fullmatch(wanted):
            raise InvalidInput("version", version_or_prefix, PREFIX_RULE)
        with redis_errors(self.settings):
            exact = _decode(self.client.hget(key, wanted), key, wanted)  # the common case: one HGET
            if exact is not None:
                return exact
            if len(wanted) < MIN_PREFIX:
                raise InvalidInput("version", version_or_prefix, PREFIX_RULE)
            entries = self._all(key)
        matches = [e for e in entries if e.version.startswith(wanted)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = [e.version for e in matches[:SHOWN_VERSIONS]]
            more = f" and {len(matches) - len(shown)} more" if len(matches) > len(shown) else ""
            raise InvalidInput(
                "version",
                version_or_prefix,
                f"the prefix matches {len(matches)} versions of task {task!r} ({', '.join(shown)}{more}): give more "
                "characters",
                matches=shown,
            )
        known = [e.version for e in entries[:SHOWN_VERSIONS]]
        more = f" and {len(entries) - len(known)} more" if len(entries) > len(known) else ""
        listed = f"known versions, newest first: {', '.join(known)}{more}" if known else "it has no recorded versions"
        raise NotFound(
            f"task {task!r} has no version {version_or_prefix!r}; {listed}",
            task_name=task,
            version=version_or_prefix,
            known_versions=known,
        )

    def list(self, task: str) -> list[VersionEntry]:
        """Every recorded version of the task, newest first (by ``deployed_at``): one HGETALL."""
        key = self._key(task)
        with redis_errors(self.settings):
            return self._all(key)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _key(self, task: str) -> str:
        return self.keys.versions(validate_name(task))

    def _all(self, key: str) -> builtins.list[VersionEntry]:
        decoded = (_decode(raw, key, field) for field, raw in self.client.hgetall(key).items())
        entries = [e for e in decoded if e is not None]
        entries.sort(key=lambda e: e.version)  # a stable order among versions deployed at the same instant
        entries.sort(key=lambda e: e.deployed_at.timestamp(), reverse=True)
        return entries


def _decode(raw: str | bytes | None, key: str, field: str | bytes) -> VersionEntry | None:
    """The entry, or None for a missing field; an unreadable one is logged and skipped, not fatal to the history."""
    if raw is None:
        return None
    try:
        return VersionEntry.model_validate_json(raw)
    except pydantic.ValidationError:
        log.warning("skipping an unreadable version entry %r of %s", field, key)
        return None
