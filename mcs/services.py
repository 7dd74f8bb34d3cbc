"""The long-lived resources of one MCS process (registry, Celery app, invoker, deploy client), each made on first use.

Nothing connects at import or at server start: spawn plus initialize stays at the SDK's own floor, and a Redis
that is down at start is picked up as soon as it answers.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING

from mcs.core.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

    from mcs.auditing import Auditor
    from mcs.deploy_client import DeployClient
    from mcs.invoker import TaskInvoker
    from mcs.pipelines import Pipelines
    from Redis.audit import AuditLog
    from Redis.registry import TaskRegistry


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()

    @cached_property
    def registry(self) -> TaskRegistry:
        from Redis.registry import TaskRegistry  # redis-py is imported on first use, not at server start

        return TaskRegistry(self.settings)

    @cached_property
    def celery_app(self) -> Celery:
        from mcs.core.celery_app import create_celery_app  # celery is slow to import: only when a task is first sent

        with self._lock:
            return create_celery_app(self.settings)

    @cached_property
    def invoker(self) -> TaskInvoker:
        from mcs.invoker import TaskInvoker

        invoker = TaskInvoker(self.settings, self.registry, self.celery_app)
        invoker.follow = lambda batch_id, wait_s: self.pipelines.status(batch_id, wait_s)  # pipeline and map ids
        invoker.wake = lambda task_name: self.deploy_client.wake(task_name)  # a parked task's first call
        return invoker

    @cached_property
    def pipelines(self) -> Pipelines:
        from mcs.pipelines import Pipelines
        from Redis.batches import Batches

        return Pipelines(self.settings, self.invoker, Batches(self.settings, self.registry.client))

    @cached_property
    def deploy_client(self) -> DeployClient:
        from mcs.deploy_client import DeployClient
        from Redis.deploy_state import DeployWorkerState

        return DeployClient(self.settings, DeployWorkerState(self.settings, self.registry.client), self.celery_app)

    def workers_seen(self, task_name: str) -> dict | None:
        """A deployed task's workers as the deploy worker's watchdog last saw them (None: not seen lately)."""
        from Redis.scaling import ScalingLog

        return ScalingLog(self.settings, self.registry.client).workers_seen(task_name)

    @cached_property
    def audit_log(self) -> AuditLog:
        from Redis.audit import AuditLog

        return AuditLog(self.settings, self.registry.client)

    @cached_property
    def auditor(self) -> Auditor:
        """Records every call of a changing tool; the audit log's client is made at the first such call."""
        from mcs.auditing import Auditor

        return Auditor(lambda: self.audit_log)
