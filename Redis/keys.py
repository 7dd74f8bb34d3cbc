"""Every Redis key MCS writes, built in this one module so the schema can be read in a minute.

All keys start with the configured prefix (``MCS_METADATA_PREFIX``, default ``mcs:``) and live in the metadata
DB (``MCS_METADATA_DB``). Celery's own keys (broker and results) are Celery's business and not listed here; the few
keys MCS keeps next to them, under a task's key prefix in the result DB (so the task's own worker may read them),
are the static methods at the end.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "mcs:"

    def task(self, name: str) -> str:
        """STRING, JSON of one TaskRecord."""
        return f"{self.prefix}task:{name}"

    def all_tasks(self) -> str:
        """SET of every registered task name."""
        return f"{self.prefix}tasks"

    def category(self, category: str) -> str:
        """SET of the task names in one category."""
        return f"{self.prefix}category:{category}"

    def categories(self) -> str:
        """SET of the categories that have at least one task (so listing them needs no KEYS)."""
        return f"{self.prefix}categories"

    def versions(self, task: str) -> str:
        """HASH of one task's version history: field = version (full hex), value = JSON of one VersionEntry."""
        return f"{self.prefix}versions:{task}"

    def queue_owner(self, queue: str) -> str:
        """STRING: the name of the deployed task whose worker serves ``queue`` (one deployed task per queue)."""
        return f"{self.prefix}queue_owner:{queue}"

    def issued(self, task_id: str) -> str:
        """STRING with TTL, JSON {task_name, queue, route, sent_at, key_prefix, revoked_at, ...}: a task id MCS
        issued (so unknown ids are not PENDING); ``revoked_at`` once cancel_celery_task revoked it."""
        return f"{self.prefix}issued:{task_id}"

    def deploy_worker_alive(self) -> str:
        """STRING with a short TTL, refreshed by a running deploy worker (so deploy_task fails fast without one)."""
        return f"{self.prefix}deploy_worker:alive"

    def deploy_worker_holder_alive(self, worker_id: str) -> str:
        """STRING with a short TTL, refreshed by the deploy worker ``worker_id`` (the holder named in its locks)."""
        return f"{self.prefix}deploy_worker:{worker_id}:alive"

    def deploy_nonce(self, nonce: str) -> str:
        """STRING with TTL (the signature's accepted window): a deploy message nonce already used."""
        return f"{self.prefix}deploy_nonce:{nonce}"

    def queue_lock(self, queue: str) -> str:
        """STRING with TTL, a random token: one deploy at a time per queue (a queue belongs to one task's worker)."""
        return f"{self.prefix}lock:queue:{queue}"

    def deploy_lock(self, task_name: str) -> str:
        """STRING with TTL, a random token: one deploy at a time per task (SET NX PX, compare-and-delete)."""
        return f"{self.prefix}lock:deploy:{task_name}"

    def calls(self, task_name: str) -> str:
        """HASH ``{version}:sent|succeeded|failed`` -> count: the calls of each version during a gradual release."""
        return f"{self.prefix}calls:{task_name}"

    def counted(self, task_id: str) -> str:
        """STRING with TTL: the outcome of this call was counted in ``calls`` (a result read twice counts once)."""
        return f"{self.prefix}counted:{task_id}"

    def scaling(self, task_name: str) -> str:
        """LIST of JSON {at, from_replicas, to_replicas, reason}, newest first, capped: a task's scaling decisions."""
        return f"{self.prefix}scaling:{task_name}"

    def audit(self) -> str:
        """STREAM of the audit log, one entry per call of a changing tool: field ``entry`` = JSON of an AuditEntry
        (time, tool, task, redacted arguments, outcome); trimmed to about ``MCS_AUDIT_MAX_ENTRIES``."""
        return f"{self.prefix}audit"

    def workers(self, task_name: str) -> str:
        """STRING with TTL, JSON {at, desired, running, workers: [{slot, hostname, state, id, node}]}: a deployed
        task's workers as the deploy worker's watchdog last saw them (get_task_details shows it)."""
        return f"{self.prefix}workers:{task_name}"

    # -- in the result DB, under a task's key prefix ('' for a task registered by hand) -----------------------

    @staticmethod
    def revoked(key_prefix: str) -> str:
        """ZSET task id -> when cancel_celery_task revoked it (epoch s), pruned after ``result_expires_s``: the
        revocations of one task's calls, where its worker can read them (Celery's workers keep revoked ids in
        memory only), and that MCS broadcasts again to a worker it finds answering."""
        return f"{key_prefix}mcs-revoked"

    def batch(self, batch_id: str) -> str:
        """STRING with TTL = result expiry, JSON: a pipeline's or a map's state (kind, status, steps or task ids)."""
        return f"{self.prefix}batch:{batch_id}"
