"""The worker image contract: what every task worker image provides and how a worker is started.

One definition for the code generator (the folder's ``Dockerfile`` and its syntax check), the base image build,
the wheelhouse resolver and every runtime: the worker user (uid/gid 10001), the virtualenv at ``/opt/venv``, the
interpreter version of the base image (Debian bookworm's CPython 3.11.2), the packages pinned into it, and the
worker's command line.
"""

from __future__ import annotations

import functools
import json
import re
import string

from mcs.core.errors import InvalidInput
from mcs.core.names import validate_queue
from mcs.core.settings import PROJECT_ROOT, Settings

TEMPLATES_DIR = PROJECT_ROOT / "templates"

WORKER_USER = "mcs"
WORKER_UID = 10001
WORKER_GID = 10001
WORKER_USER_SPEC = f"{WORKER_UID}:{WORKER_GID}"
VENV_DIR = "/opt/venv"
WORKDIR = "/app"
#: The base image's interpreter (Debian bookworm): generated code must parse with it, wheels must fit it.
WORKER_PYTHON = (3, 11)
WORKER_PYTHON_VERSION = "3.11.2"

#: Python packages installed into /opt/venv of the base image. Changing a pin changes the base image's recipe hash.
BASE_PINS: tuple[str, ...] = ("celery[redis]==5.7.0", "kombu==5.7.0", "redis==8.1.0")
#: Packages of the base image (and their dependencies): a task pinning another version would change the worker.
BASE_IMAGE_PACKAGES = frozenset({"celery", "kombu", "billiard", "vine", "amqp", "redis"})
#: Modules the worker itself imports: a helper module of the same name next to the app would shadow them.
WORKER_MODULES = BASE_IMAGE_PACKAGES | frozenset({"click", "dateutil", "tzdata", "sitecustomize", "usercustomize"})

#: The build argument that names a task's dependency image (its requirements installed on the base image); a
#: Dockerfile declaring ``ARG MCS_DEPS_IMAGE`` builds FROM it (see :func:`render_dockerfile`).
DEPS_ARG = "MCS_DEPS_IMAGE"
#: Where the wheelhouse sits while the dependency image's install runs (deleted by that same step).
DEPS_WHEELHOUSE = "/mcs-wheelhouse"
_DEPS_ARG_LINE = re.compile(rf"^\s*ARG\s+{DEPS_ARG}(=\S*)?\s*$", re.IGNORECASE | re.MULTILINE)

IMAGE_RULE = "an image reference of ASCII letters, digits and . _ / : @ - (e.g. 'mcs-base:bookworm-py311')"
_IMAGE_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")


@functools.cache
def load_template(name: str) -> string.Template:
    return string.Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))


def main_file_name(queue: str) -> str:
    """The worker's app module of a task folder: ``app_{queue}.py``."""
    return f"app_{queue}.py"


def replica_hostname(group_hostname: str, slot: int) -> str:
    """The Celery node name of the worker in ``slot`` of a version's group: ``<name>-r<slot>@<domain>`` for the
    group's ``<name>@<domain>``. A replacement in the same slot answers to the same name."""
    name, _, domain = group_hostname.partition("@")
    return f"{name}-r{slot}@{domain or 'mcs'}"


def replica_hostnames(group_hostname: str, replicas: int) -> list[str]:
    """The node names of a group's first ``replicas`` slots (at least one)."""
    return [replica_hostname(group_hostname, slot) for slot in range(1, max(1, replicas) + 1)]


def worker_command(
    queue: str, hostname: str | None = None, serve_queue: str | None = None, concurrency: int = 1
) -> list[str]:
    """The task worker's command line: the image's CMD, and what every runtime runs (with its unique hostname).

    prefork with ``concurrency`` children (one by default): Celery enforces the task time limits only in a pool
    with child processes. No mingle and
    no gossip: MCS uses neither (ping and the other remote-control commands work without them), and the worker
    answers its first ping about a second sooner. ``serve_queue``: the version's own queue MCS routes calls to
    (the image's CMD, for a person's ``docker run``, consumes the task's queue itself).
    """
    command = [
        "celery", "-A", f"app_{queue}", "worker", "-Q", serve_queue or queue, "--loglevel", "INFO",
        "--pool", "prefork", "--concurrency", str(int(concurrency)), "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    return [*command, "--hostname", hostname] if hostname else command


def deps_install_argv(wheelhouse: str = DEPS_WHEELHOUSE) -> list[str]:
    """pip's command line that installs a task's requirements into the venv, offline, from ``wheelhouse`` (which
    holds ``requirements.txt`` and the wheels it resolved to for the base image's interpreter), without pip's cache.
    Part of the recipe: it is named in the rendered Dockerfile (so in the version) and in the dependency image's key.
    """
    return [
        f"{VENV_DIR}/bin/pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
        "--find-links", wheelhouse, "-r", f"{wheelhouse}/requirements.txt",
    ]  # fmt: skip


def uses_deps_image(dockerfile: str) -> bool:
    """Whether a Dockerfile declares ``ARG MCS_DEPS_IMAGE``: the deploy worker then gives it the task's dependency
    image (or the base image, without requirements) and no ``wheelhouse/`` in its build context."""
    return bool(_DEPS_ARG_LINE.search(dockerfile))


def render_dockerfile(settings: Settings, queue: str, has_requirements: bool) -> str:
    """The build recipe of a task folder: the code generator writes it for review, the deploy worker builds it.

    Without requirements the image starts FROM the base image; with them, FROM the dependency image the deploy
    worker makes once per requirement set and base image (``ARG MCS_DEPS_IMAGE``, :mod:`deploy_mcp.docker.deps`):
    the requirements are installed there, offline, by :func:`deps_install_argv`, and no layer of either image holds
    the wheelhouse. What does not depend on the task's files comes before they are copied, so Docker's layer cache
    serves it to every later build of the queue.
    """
    validate_queue(queue, "queue")
    image = settings.worker_base_image
    if not isinstance(image, str) or not _IMAGE_REF.fullmatch(image):
        raise InvalidInput("worker_base_image", image, IMAGE_RULE)
    if has_requirements:
        from_lines = _DEPS_FROM.substitute(base_image=image, install=json.dumps(deps_install_argv()), arg=DEPS_ARG)
    else:
        from_lines = f"# No requirements: the base image itself.\nFROM {image}"
    return load_template("Dockerfile.tmpl").substitute(
        queue=queue, from_lines=from_lines, command=json.dumps(worker_command(queue))
    )


_DEPS_FROM = string.Template(
    """\
# The requirements (requirements.txt) are installed in an image of their own, which the deploy worker makes once
# per requirement set and passes as --build-arg ${arg}=mcs-deps:<key>: ${base_image} plus
#   ${install}
# run offline, as root, on the wheelhouse the requirements resolved to for the base image's interpreter, which
# that same step deletes, so that no layer holds a wheel. <key> hashes the base image's id, the resolved wheels
# and that command; the image carries the labels mcs.managed=1 and mcs.deps=1. Every task with the same
# requirement set builds on it, and a change of the task's files installs nothing. A build by hand needs such
# an image (without ${arg}, the build stops at FROM).
ARG ${arg}
FROM $${${arg}}"""
)
