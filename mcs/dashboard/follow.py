"""Following the audit log as it grows: each new entry is passed on (the deploy counters and durations of /metrics).

The follower starts at the log's newest entry, so its counters count what happens while the dashboard runs, as
every exporter's counters do (Prometheus's ``rate`` and ``increase`` take a restart in their stride).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from mcs.core.audit import AuditEntry
from mcs.core.errors import MCSError

if TYPE_CHECKING:
    from mcs.services import Services

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # one XREAD waits this long for a new entry, so stop() is noticed within about a second
RETRY_S = 1.0


class AuditFollower:
    def __init__(self, services: Services, on_entry: Callable[[AuditEntry], None]) -> None:
        self.services = services
        self.on_entry = on_entry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_id: str | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dashboard-audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        audit = self.services.audit_log
        while not self._stop.is_set():
            try:
                if self.last_id is None:
                    self.last_id = audit.last_id()
                for entry in audit.follow(self.last_id, block_ms=BLOCK_MS):
                    self.last_id = entry.id
                    try:
                        self.on_entry(entry)
                    except Exception:
                        log.exception("could not count audit entry %s", entry.id)
            except MCSError as exc:
                log.info("audit log not readable (%s); trying again", exc.code)
                self._stop.wait(RETRY_S)
