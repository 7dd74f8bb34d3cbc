"""Credentials of deployed tasks: a Redis ACL user per deployed version, its password kept on the deploy worker's
disk only (a 0600 file in a 0700 folder under ``deployments/.credentials``), so that a Redis that lost its ACL users
(a restart without an ACL file) can be given them again, and the worker keeps its own password.

The administrator's password never leaves MCS's own processes; a worker gets only its own user and password. Where
Redis refuses ``ACL SETUSER``, a deploy is refused unless ``MCS_ALLOW_SHARED_CREDENTIALS=true``: then the worker
shares the configured credentials and every deploy result and deployment listing says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from mcs.core.celery_app import task_key_prefix
from mcs.core.models import TaskRecord
from mcs.core.settings import Settings
from Redis.acl import AclUnavailable, AclUsers, TaskUser, new_task_user, users_of_task

log = logging.getLogger(__name__)


class TaskCredentials:
    def __init__(self, settings: Settings, acl: AclUsers) -> None:
        self.settings = settings
        self.acl = acl
        self.root = settings.deployments_dir / ".credentials"

    def issue(self, task_name: str) -> TaskUser | None:
        """A new user for a new version of ``task_name`` (kept on disk, then created in Redis); None when Redis
        refuses and shared credentials are allowed."""
        user = new_task_user(task_name, task_key_prefix(self.settings, task_name))
        try:
            self._save(user)
            self.acl.put(user)
        except AclUnavailable:
            self._delete(user.username)
            if not self.settings.allow_shared_credentials:
                raise
            log.warning("ACL SETUSER refused: %s uses shared credentials", task_name)
            return None
        except BaseException:
            self._delete(user.username)
            raise
        return user

    def drop(self, *usernames: str) -> None:
        """Remove users (in Redis, which closes their connections, and on disk)."""
        names = [n for n in usernames if n]
        if names:
            self.acl.remove(*names)
        for name in names:
            self._delete(name)

    def others(self, task_name: str, keep: str | None) -> list[str]:
        """The users of ``task_name`` other than ``keep`` (those of the versions that served before it)."""
        return [n for n in users_of_task(self._known(), task_name) if n != keep]

    def retire_others(self, task_name: str, keep: str | None) -> list[str]:
        """Remove every user of ``task_name`` but ``keep`` (the previous versions' users); their names."""
        old = [n for n in users_of_task(self._known(), task_name) if n != keep]
        self.drop(*old)
        return old

    def remove_task(self, task_name: str) -> list[str]:
        return self.retire_others(task_name, keep=None)

    def reconcile(self, records: list[TaskRecord]) -> list[str]:
        """Re-create the users of deployed tasks that Redis no longer has; the names re-created."""
        present = set(self.acl.names())
        recreated = []
        for record in records:
            name = record.deployment.acl_user if record.deployment else None
            if not name or name in present:
                continue
            user = self.load(name)
            if user is None:
                log.error("no stored credentials for %s (task %s): redeploy the task", name, record.name)
                continue
            self.acl.put(user)
            recreated.append(name)
            log.warning("re-created the Redis ACL user of task %s (Redis had lost it)", record.name)
        return recreated

    # -- the files ---------------------------------------------------------------------------------------------

    def _path(self, username: str) -> Path:
        return self.root / f"{username}.json"

    def _known(self) -> list[str]:
        on_disk = [p.stem for p in self.root.glob("*.json")] if self.root.is_dir() else []
        return sorted(set(on_disk) | set(self.acl.names()))

    def _save(self, user: TaskUser) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.root.chmod(0o700)
        data = json.dumps({"username": user.username, "password": user.password, "key_prefix": user.key_prefix})
        fd = os.open(self._path(user.username), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(data)

    def load(self, username: str) -> TaskUser | None:
        try:
            data = json.loads(self._path(username).read_text())
            return TaskUser(data["username"], data["password"], data["key_prefix"])
        except (OSError, ValueError, KeyError):
            return None

    def _delete(self, username: str) -> None:
        with contextlib.suppress(OSError):
            self._path(username).unlink()
