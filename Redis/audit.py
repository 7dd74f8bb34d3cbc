"""The audit log in Redis: one stream, ``{prefix}audit``, each entry one call of a changing tool.

Appends are ``XADD ... MAXLEN ~ MCS_AUDIT_MAX_ENTRIES`` (Redis trims whole macro nodes, so the log keeps about that
many entries, never fewer); an entry's stream id is its time, so ``since`` is a range read, not a scan of
everything. Reads go newest first, in chunks, and filter by task and tool; ``follow`` reads what was appended after
an id (the dashboard's deploy metrics follow the log this way).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from mcs.core.audit import AuditEntry
from Redis.connection import RedisStore, redis_errors

log = logging.getLogger(__name__)

READ_CHUNK = 500  # entries per XREVRANGE while filtering
MAX_SCANNED = 50_000  # entries one read looks at, at most (a filter that matches nothing stops here)
MAX_LIMIT = 1000


class AuditLog(RedisStore):
    """Append and read the audit stream. Cheap to create; the client connects on first use."""

    def append(self, entry: AuditEntry) -> str:
        """Add ``entry`` (its ``id`` is ignored); the new entry's id."""
        data = entry.model_dump_json(exclude={"id"})
        with redis_errors(self.settings):
            new_id = self.client.xadd(
                self.keys.audit(), {"entry": data}, maxlen=self.settings.audit_max_entries, approximate=True
            )
        return _text(new_id)

    def read(
        self,
        task_name: str | None = None,
        tool: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries (newest first) of ``task_name`` and ``tool`` (either may be None: any),
        not older than ``since``."""
        limit = max(1, min(int(limit), MAX_LIMIT))
        low = f"{int(since.timestamp() * 1000)}-0" if since is not None else "-"
        found: list[AuditEntry] = []
        high = "+"
        scanned = 0
        with redis_errors(self.settings):
            while len(found) < limit and scanned < MAX_SCANNED:
                chunk = self.client.xrevrange(self.keys.audit(), max=high, min=low, count=READ_CHUNK)
                if not chunk:
                    break
                scanned += len(chunk)
                for raw_id, fields in chunk:
                    entry = _decode(raw_id, fields)
                    if entry is None or (task_name and entry.task_name != task_name) or (tool and entry.tool != tool):
                        continue
                    found.append(entry)
                    if len(found) >= limit:
                        break
                if len(chunk) < READ_CHUNK:
                    break
                high = "(" + _text(chunk[-1][0])  # exclusive: the next chunk starts below the last id seen
        return found

    def last_id(self) -> str:
        """The id of the newest entry ('0-0' for an empty log): ``follow`` from it sees only what comes next."""
        with redis_errors(self.settings):
            newest = self.client.xrevrange(self.keys.audit(), count=1)
        return _text(newest[0][0]) if newest else "0-0"

    def follow(self, after_id: str, block_ms: int = 1000, count: int = 100) -> list[AuditEntry]:
        """Entries appended after ``after_id``, oldest first, waiting up to ``block_ms`` for the first one."""
        with redis_errors(self.settings):
            answer = self.client.xread({self.keys.audit(): after_id}, count=count, block=block_ms)
        entries: list[AuditEntry] = []
        for _stream, items in answer or []:
            entries += [e for e in (_decode(i, f) for i, f in items) if e is not None]
        return entries

    def length(self) -> int:
        with redis_errors(self.settings):
            return int(self.client.xlen(self.keys.audit()))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw_id: Any, fields: dict[Any, Any]) -> AuditEntry | None:
    raw = fields.get("entry", fields.get(b"entry"))
    if raw is None:
        return None
    try:
        return AuditEntry.model_validate_json(raw).model_copy(update={"id": _text(raw_id)})
    except ValueError:
        log.warning("skipping an unreadable audit entry %s", _text(raw_id))
        return None
