"""Redis ACL users per deployment: a task's workers may touch only their own key and channel prefix.

Each deployed version gets a user ``mcs-t-<task>-<8 hex>`` with a random password, allowed the keys and channels
under the task's prefix (Celery's ``global_keyprefix``: its queue, kombu's ``unacked``, results, remote control),
every command but ``@dangerous`` (no CONFIG, MONITOR, KEYS, FLUSHALL, DEBUG, ...), and nothing else. PSUBSCRIBE
patterns are checked literally, so the pidbox and worker-event patterns Celery subscribes to are listed as they are.

Where Redis refuses ``ACL SETUSER`` (a managed Redis without admin rights, or a server without ACLs), :class:`AclUsers`
raises :class:`AclUnavailable`; the deployer then refuses to deploy unless shared credentials are allowed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import redis

from mcs.core.errors import ServiceUnavailable
from mcs.core.names import validate_name
from Redis.connection import RedisStore, redis_errors

USER_PREFIX = "mcs-t-"


class AclUnavailable(ServiceUnavailable):
    """This Redis does not let MCS create ACL users."""


@dataclass(frozen=True)
class TaskUser:
    """The Redis credentials of one deployed version of a task (the password is the task's own)."""

    username: str
    password: str
    key_prefix: str

    def __repr__(self) -> str:  # never show the password
        return f"TaskUser(username={self.username!r}, key_prefix={self.key_prefix!r})"


def new_task_user(task_name: str, key_prefix: str) -> TaskUser:
    validate_name(task_name, "task_name")
    return TaskUser(f"{USER_PREFIX}{task_name}-{secrets.token_hex(4)}", secrets.token_hex(32), key_prefix)


def users_of_task(names: list[str], task_name: str) -> list[str]:
    """The ACL user names among ``names`` that belong to ``task_name`` (not to a task whose name extends it)."""
    pattern = re.compile(rf"{re.escape(USER_PREFIX + task_name)}-[0-9a-f]{{8}}")
    return [n for n in names if pattern.fullmatch(n)]


def acl_rules(user: TaskUser, broker_db: int) -> list[str]:
    """The ``ACL SETUSER`` rules of a task user (``reset`` first: the rules are exactly these)."""
    p = user.key_prefix
    return [
        "reset",
        "on",
        f">{user.password}",
        f"~{p}*",
        f"&{p}*",
        f"&{p}/{broker_db}.celery.pidbox",  # remote control (ping, MCS's health probe), literal for PSUBSCRIBE
        f"&{p}/{broker_db}.celeryev/worker.*",
        "+@all",
        "-@dangerous",
    ]


class AclUsers(RedisStore):
    """Create, re-create and remove task users (with the administrator's connection of the metadata client)."""

    def put(self, user: TaskUser) -> None:
        """Create the user, or make it exactly this again (the same call re-creates one Redis lost)."""
        try:
            with redis_errors(self.settings):
                self.client.execute_command(
                    "ACL", "SETUSER", user.username, *acl_rules(user, self.settings.redis_broker_db)
                )
        except redis.ResponseError as exc:  # NOPERM, unknown command: no ACLs for us here
            raise AclUnavailable(
                f"Redis at {self.settings.redis_location} refused ACL SETUSER ({str(exc).split(' ', 1)[0]}): MCS "
                "cannot give this task credentials of its own; use a Redis where MCS may manage ACL users, or set "
                "MCS_ALLOW_SHARED_CREDENTIALS=true to let workers share the configured credentials (unconfined)",
                service="redis",
                step="credentials",
            ) from None

    def names(self) -> list[str]:
        with redis_errors(self.settings):
            return [n.decode() if isinstance(n, bytes) else str(n) for n in self.client.execute_command("ACL", "USERS")]

    def remove(self, *usernames: str) -> int:
        """Delete these users (their connections are closed by Redis); unknown names are ignored."""
        if not usernames:
            return 0
        with redis_errors(self.settings):
            self.client.execute_command("ACL", "DELUSER", *usernames)
        return len(usernames)
