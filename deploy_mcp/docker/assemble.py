"""A task image without the builder: MCS's rendered recipe applied by one container commit.

The rendered Dockerfile (``templates/Dockerfile.tmpl``) stays the recipe of record: it is in the version hash, in
the task's folder for review, and what a person builds by hand. Its instructions are few and need no process to
run: configuration (``USER``, ``WORKDIR``, ``ENV``, ``CMD``, ``LABEL``), one ``COPY --chown=0:0 . <dir>`` of the
build context, and ``RUN ["chmod", "-R", "u=rwX,go=rX", <dir>]`` on what was copied. The classic builder spends
about half a second on them (a step container per instruction, a container run for the chmod); here the same
result is made in about 0.1 s:

- a container of the recipe's ``FROM`` image is created (never started: no process of the task runs, no network);
- the context goes in with ``put_archive`` as one archive whose entries are owned by root and carry the modes the
  ``chmod`` gives (``0755`` for folders and for files with an execute bit, ``0644`` for the others);
- the container is committed with the configuration instructions as the commit's changes, in their order, and the
  image's labels; the container is removed whatever happens.

:func:`plan_assembly` reads the recipe and answers None for anything it does not know exactly (another
instruction, a variable, a continuation line, a parser directive, a ``RUN`` as another user, a folder the recipe
does not copy to), and the image is then built by the daemon as before (:func:`deploy_mcp.docker.build.build_image`).
``tests/test_image_assembly.py`` builds one context both ways and compares the two images' configuration and files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import re
import tarfile
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from deploy_mcp.docker.client import docker_errors, get_image
from deploy_mcp.docker.containers import labels_of
from deploy_mcp.docker.recipe import split_image_ref
from deploy_mcp.runtime import LABEL_VERSION, BuildSpec, Progress, say
from mcs.core.errors import DeployError, MCSError

logger = logging.getLogger(__name__)

#: The container an assembly commits is named ``mcs-assemble-<task>-<version12>-<random>``.
ASSEMBLE_CONTAINER_PREFIX = "mcs-assemble-"
#: An assembly container older than this was left by a deploy worker that died (see remove_stale_assemblies).
STALE_ASSEMBLY_S = 600.0
CHMOD_RULE = "u=rwX,go=rX"
_CONFIG = frozenset({"USER", "WORKDIR", "ENV", "CMD", "LABEL"})
_ROOT_USERS = frozenset({"root", "0", "0:0", "root:root", "root:0", "0:root"})
_DIRECTIVE = re.compile(r"#\s*[A-Za-z]+\s*=")  # "# syntax=...", "# escape=..." change how the file is read
_PAIR = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*=[^\s\"'$\\`]*")
_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
_WORD = re.compile(r"[A-Za-z0-9._:-]+")
_PRINTABLE = re.compile(r"[\x20-\x7e\t]*")
_ARG_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Assembly:
    """What the recipe does, in terms a commit can apply."""

    base: str  # the FROM image, build arguments substituted
    dest: str  # the folder the context is copied to (absolute)
    changes: tuple[str, ...]  # the configuration instructions, in the recipe's order


def plan_assembly(dockerfile: str, buildargs: Mapping[str, str]) -> Assembly | None:
    """The recipe as an :class:`Assembly`, or None when it holds anything this module does not apply exactly."""
    declared: set[str] = set()
    base: str | None = None
    dest: str | None = None
    chmod_done = False
    user: str | None = None  # unknown until the recipe sets it (the FROM image's user is not read here)
    workdirs: list[str] = []
    changes: list[str] = []
    for raw in dockerfile.split("\n"):  # Docker ends a line at \n only (str.splitlines also breaks on \r, \x0c, ...)
        line = raw.strip(" \t\r")
        if not line:
            continue
        if not _PRINTABLE.fullmatch(line):
            return None  # a control or non-ASCII character: read the same way by both, or not assembled
        if line.startswith("#"):
            if base is None and _DIRECTIVE.match(line):
                return None
            continue
        if line.endswith("\\"):
            return None
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if base is None:
            if word == "ARG" and _WORD.fullmatch(rest) and rest in buildargs:
                declared.add(rest)
                continue
            if word != "FROM" or " " in rest:
                return None
            base = _substitute(rest, declared, buildargs)
            if base is None:
                return None
            continue
        if word in _CONFIG:
            if not _plain_config(word, rest):
                return None
            if word == "USER":
                user = rest
            elif word == "WORKDIR":
                workdirs.append(rest)
            if dest is not None and word not in ("USER", "LABEL", "CMD", "ENV"):
                return None  # a WORKDIR after the copy: keep the simple order the template has
            changes.append(f"{word} {rest}")
        elif word == "COPY" and dest is None:
            parts = rest.split()
            if len(parts) != 3 or parts[0] != "--chown=0:0" or parts[1] != "." or not _PATH.fullmatch(parts[2]):
                return None
            dest = parts[2].rstrip("/") or "/"
            if posixpath.normpath(dest) != dest:
                return None  # /x/../app: the builder's chmod of it fails where /x does not exist
        elif word == "RUN" and dest is not None and not chmod_done and user in _ROOT_USERS:
            try:
                argv = json.loads(rest)
            except ValueError:
                return None
            if argv != ["chmod", "-R", CHMOD_RULE, dest]:
                return None
            chmod_done = True
        else:
            return None
    # WORKDIR creates its folder; here the archive does, so it has to be the folder the context is copied to. The
    # container made to commit has a placeholder command, so the recipe must set its own.
    if base is None or dest is None or dest == "/" or not chmod_done or any(w.rstrip("/") != dest for w in workdirs):
        return None
    if not any(change.startswith("CMD ") for change in changes):
        return None
    return Assembly(base=base, dest=dest, changes=tuple(changes))


def _substitute(ref: str, declared: set[str], buildargs: Mapping[str, str]) -> str | None:
    """``$NAME`` / ``${NAME}`` of a declared build argument replaced by its value; None for anything else."""
    whole = _ARG_REF.fullmatch(ref)
    if whole is not None:
        name = whole.group(1) or whole.group(2)
        return buildargs[name] if name in declared else None
    return ref if _WORD.fullmatch(ref.replace("/", "").replace("@", "")) else None


def _plain_config(word: str, rest: str) -> bool:
    """Values without quoting, escapes or variables: the commit reads them exactly as the builder would."""
    if not rest:
        return False
    if word == "CMD":
        try:
            argv = json.loads(rest)
        except ValueError:
            return False
        return isinstance(argv, list) and bool(argv) and all(isinstance(a, str) for a in argv)
    if word in ("ENV", "LABEL"):
        return all(_PAIR.fullmatch(pair) for pair in rest.split())
    if word == "WORKDIR":
        return bool(_PATH.fullmatch(rest))
    return bool(_WORD.fullmatch(rest))  # USER


def assemble_image(
    client: Any,
    context: Path,
    tag: str,
    spec: BuildSpec,
    plan: Assembly,
    labels: Mapping[str, str],
    progress: Progress | None,
) -> tuple[str, str] | None:
    """Make ``tag`` from ``context`` as ``plan`` says; returns (image id, a log of what was done), or None when the
    FROM image has ONBUILD triggers or already has ``plan.dest`` (the copy would merge into it): the builder's.

    A failure raises DeployError(step="build") and leaves neither the container nor an image.
    """
    recipe_labels = {pair.split("=", 1)[0] for change in plan.changes if change.startswith("LABEL ")
                     for pair in change.split()[1:]}  # fmt: skip
    if recipe_labels & set(labels):
        return None  # the builder sets the deploy worker's labels after the recipe's; here the recipe's would win
    with docker_errors("inspect the FROM image", step="build", image=plan.base):
        base = client.api.inspect_image(plan.base)
    config = dict(base.get("Config") or {})
    if config.get("OnBuild") or config.get("Volumes"):
        # The builder would run the FROM image's ONBUILD triggers; a container of an image with volumes gets
        # volumes of its own, which a commit leaves out.
        return None
    with tempfile.TemporaryFile() as archive:
        files, size = _archive(context, plan.dest, archive)
        return _commit(client, archive, tag, spec, plan, labels, base, config, progress, files, size)


def _commit(
    client: Any,
    archive: Any,
    tag: str,
    spec: BuildSpec,
    plan: Assembly,
    labels: Mapping[str, str],
    base: dict[str, Any],
    config: dict[str, Any],
    progress: Progress | None,
    files: int,
    size: int,
) -> tuple[str, str] | None:
    repository, version_tag = split_image_ref(tag)
    name = f"{ASSEMBLE_CONTAINER_PREFIX}{spec.task_name}-{spec.version[:12]}-"
    container_id: str | None = None
    image_id: str | None = None
    try:
        with docker_errors("image assembly", step="build", image=tag):
            created = client.api.create_container(
                base["Id"],
                command=["/nonexistent-never-started"],  # a FROM image may have no command; this one never runs
                name=f"{name}{uuid.uuid4().hex[:6]}",
                network_disabled=True,
                host_config=client.api.create_host_config(network_mode="none"),
                labels=dict(spec.extra_labels),  # MCS_WORKER_LABELS (and a test's label): found as theirs
            )
            container_id = created["Id"]
            if _exists(client, container_id, plan.dest):
                return None  # the folder exists in the FROM image
            archive.seek(0)
            client.api.put_archive(container_id, "/", archive)
            committed = client.api.commit(
                container_id,
                repository=repository,
                tag=version_tag,
                message=f"MCS {spec.task_name} {spec.version[:12]}: the context copied to {plan.dest}, assembled "
                "from its Dockerfile",
                changes=list(plan.changes),
                # The FROM image's configuration with the recipe's instructions applied on it, as the builder does.
                conf={**config, "Labels": {**(config.get("Labels") or {}), **labels}},
            )
            image_id = str(committed["Id"])
            found = get_image(client, tag)
            if found is None or any(labels_of(found.attrs).get(k) != v for k, v in labels.items()):
                raise DeployError(
                    f"the assembly of {tag} finished but the image is not there with its labels "
                    f"({LABEL_VERSION}={spec.version}, ...)",
                    step="build",
                    image=tag,
                )
            if found.id != image_id:
                # A concurrent deploy of the same version tagged its image last: the same content, keep that one.
                logger.info("%s was tagged by a concurrent deploy of the same version; using that image", tag)
                with contextlib.suppress(docker.errors.APIError):
                    client.api.remove_image(image_id, noprune=False)
                image_id = found.id
    except BaseException:
        if image_id is not None:
            with contextlib.suppress(docker.errors.DockerException, DeployError):
                client.api.remove_image(image_id, noprune=False)
        raise
    finally:
        if container_id is not None:
            with contextlib.suppress(docker.errors.DockerException):
                client.api.remove_container(container_id, force=True, v=True)
    log = [
        f"assembled {tag} from its Dockerfile without the builder (each instruction applied by MCS):",
        f"FROM {plan.base} ({base['Id'][:19]})",
        f"COPY --chown=0:0 . {plan.dest}: {files} entries, {size} bytes, modes as chmod -R {CHMOD_RULE} sets them",
        *(f"{change}" for change in plan.changes),
        f"LABEL {len(labels)} labels",
        f"committed {image_id[:19]}",
    ]
    say(progress, f"assembled {tag} ({image_id[:19]}): {files} entries copied to {plan.dest}", logger)
    return image_id, "\n".join(log)


def remove_stale_assemblies(
    client: Any, older_than_s: float = STALE_ASSEMBLY_S, labels: Mapping[str, str] | None = None
) -> list[str]:
    """Assembly containers older than ``older_than_s``, whatever their task: an assembly takes a fraction of a
    second, so their deploy worker died during one (each has a name of its own: a leftover is in nobody's way).
    ``labels`` narrow it to the ones that carry them (a test's). Returns their names. Housekeeping: failures are
    logged."""
    removed: list[str] = []
    try:
        with docker_errors("list assembly containers", step="prune"):
            wanted = {"name": ASSEMBLE_CONTAINER_PREFIX, "label": [f"{k}={v}" for k, v in (labels or {}).items()]}
            for leftover in client.api.containers(all=True, filters=wanted):
                names = [n.lstrip("/") for n in leftover.get("Names") or []]
                if not any(n.startswith(ASSEMBLE_CONTAINER_PREFIX) for n in names):
                    continue
                if time.time() - float(leftover.get("Created") or 0) < older_than_s:
                    continue
                with contextlib.suppress(docker.errors.NotFound):
                    client.api.remove_container(leftover["Id"], force=True)
                removed.append(names[0])
    except MCSError as exc:
        logger.warning("could not remove old assembly containers: %s", exc)
    return removed


def _exists(client: Any, container_id: str, path: str) -> bool:
    """Whether ``path`` exists in the container (a HEAD of its archive: the folder is not streamed)."""
    response = client.api.head(client.api._url("/containers/{0}/archive", container_id), params={"path": path})
    try:
        if response.status_code == 404:
            return False
        client.api._raise_for_status(response)
        return True
    finally:
        response.close()


def _archive(context: Path, dest: str, out: Any) -> tuple[int, int]:
    """``context`` as a tar rooted at ``dest``, written to ``out``: entries owned by root, modes as ``chmod -R
    u=rwX,go=rX`` sets them (folders and files with an execute bit 0755, other files 0644; a folder keeps its
    set-user-ID and set-group-ID bits, as chmod keeps them), symbolic links kept as links (as COPY keeps them).
    Any other kind of file (a device, a pipe) is refused. Returns (entries copied, bytes of file content)."""
    counted = {"entries": 0, "size": 0}

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if info.isdir():
            info.mode = 0o755 | (info.mode & 0o6000)
        elif info.isreg() or info.islnk():
            info.mode = 0o755 if info.mode & 0o111 else 0o644
        elif not info.issym():
            raise DeployError(f"cannot copy {info.name} into the image: not a file, folder or link", step="build")
        counted["entries"] += 1
        counted["size"] += info.size if info.isreg() else 0
        return info

    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(str(context), arcname=dest.lstrip("/"), recursive=True, filter=normalise)
    except OSError as exc:
        raise DeployError(f"cannot pack the build context: {exc}", step="build") from exc
    return counted["entries"] - 1, counted["size"]  # the folder itself is not an entry copied
