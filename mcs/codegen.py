"""``generate_startMain_code``: a complete, runnable task folder, validated before anything is written.

The folder ``{generated_tasks_dir}/{task_name}_{queue}/`` holds ``app_{queue}.py`` (the Celery app, configured from
the environment at run time, with the task and any extra tasks), the caller's helper files, ``requirements.txt``,
the manifest ``mcs.json`` (every task's metadata, retry policy and test cases, the requirements and the deploy
choices: ``deploy_task(task_name, queue)`` alone deploys the folder from it), the ``Dockerfile`` the deploy worker
builds and a short ``README.md``. It is written into a temporary folder next to its final place and renamed into
place, so no reader ever sees it half-written; an existing folder is replaced only with ``overwrite=True``, by
renaming the old one aside, the new one in, and then removing the old one.

Validation rules live in ``mcs.codegen_validate``, rendering in ``mcs.codegen_render``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from mcs.codegen_files import check_additional_files
from mcs.codegen_render import (
    check_python_files,
    render_app,
    render_manifest,
    render_readme,
    render_requirements,
)
from mcs.codegen_validate import (
    TaskPlan,
    assign_tests,
    check_extra_tasks,
    check_network,
    check_sandbox,
    check_task,
)
from mcs.core.capacity import check_capacity
from mcs.core.celery_app import celery_task_name
from mcs.core.errors import Conflict, InvalidInput
from mcs.core.manifest import MANIFEST_FILE
from mcs.core.names import validate_queue
from mcs.core.requirements import check_requirements
from mcs.core.settings import Settings
from mcs.core.worker_image import main_file_name, render_dockerfile

__all__ = ["GeneratedTask", "generate_task_folder"]

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".mcs-tmp-"
OLD_PREFIX = ".mcs-old-"
GENERATED_FILES = ("Dockerfile", "requirements.txt", "README.md", MANIFEST_FILE)  # besides app_{queue}.py


class GeneratedTask(BaseModel):
    """What ``generate_startMain_code`` returns: where the folder is, its files, the main file to review, next steps."""

    success: bool = True
    task_name: str
    queue: str
    folder: str
    files: list[str]
    main_file: str
    main_content: str = Field(
        description="the generated task functions (show=tasks), the whole app file (show=full), or empty (none)"
    )
    manifest: str
    tasks: list[str]
    requirements: list[str]
    replaced: bool
    warnings: list[str]
    next_steps: list[str]
    message: str


def generate_task_folder(
    settings: Settings,
    *,
    task_name: str,
    description: str,
    parameters: list[dict[str, Any]],
    function_body: str,
    queue: str = "celery",
    return_type: str = "Any",
    tasks: list[dict[str, Any]] | None = None,
    additional_files: list[dict[str, Any]] | None = None,
    requirements: list[str] | None = None,
    overwrite: bool = False,
    category: str = "general",
    tests: list[dict[str, Any]] | None = None,
    retry: dict[str, Any] | None = None,
    network: str | None = None,
    sandbox: str | None = None,
    show: str = "tasks",
    concurrency: int | None = None,
    replicas: int | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
) -> GeneratedTask:
    """Validate, render and compile-check the folder, then write it atomically to ``{task_name}_{queue}``.

    ``category``, ``retry`` and ``tests`` belong to the main task (each entry of ``tasks`` may carry its own); a
    test case naming ``task`` checks that task of the folder instead. They and the deploy choices (``network``,
    ``sandbox`` and the capacity: ``concurrency``, ``replicas``, ``min_replicas``, ``max_replicas``) go into the
    manifest ``mcs.json``; the retry policies also into the worker's task classes.

    ``show``: what ``main_content`` holds: ``tasks`` (the task functions as generated: decorator, signature,
    docstring, body; the Celery boilerplate above them is MCS's own), ``full`` (the whole app file) or ``none``.

    Raises InvalidInput (which field, which value, what is accepted; a syntax error names the file and line) or
    Conflict (the folder exists and ``overwrite`` is false). Nothing is written when anything is refused.
    """
    if not isinstance(overwrite, bool):
        raise InvalidInput("overwrite", overwrite, "true or false")
    if show not in SHOW:
        raise InvalidInput("show", show, "tasks (the task functions), full (the whole app file) or none")
    queue = validate_queue(queue, "queue")
    main = check_task("", task_name, description, parameters, function_body, return_type, category, retry, tests)
    plans = [main, *check_extra_tasks(tasks)]
    _refuse_duplicate_names(plans)
    cases = assign_tests(plans)
    network, sandbox = check_network(network), check_sandbox(sandbox)
    capacity = {"concurrency": concurrency, "replicas": replicas, "min_replicas": min_replicas,
                "max_replicas": max_replicas}  # fmt: skip
    capacity = {k: v for k, v in capacity.items() if v is not None}
    check_capacity(capacity, settings)  # what the manifest asks for, checked as deploy_task will
    pinned = check_requirements(requirements, settings.max_requirements)
    main_file = main_file_name(queue)
    helpers = check_additional_files(
        additional_files,
        {main_file, *GENERATED_FILES},
        settings.generated_files_limit,
        settings.generated_file_bytes_limit,
    )

    main_content, spans = render_app(settings, queue, plans)
    files = {
        main_file: main_content,
        **helpers,
        "requirements.txt": render_requirements(pinned),
        MANIFEST_FILE: render_manifest(queue, plans, cases, pinned, network, sandbox, capacity),
        "Dockerfile": render_dockerfile(settings, queue, has_requirements=bool(pinned)),
        "README.md": render_readme(queue, plans, helpers),
    }
    fields = {path: f"additional_files[{index}].content" for index, path in enumerate(helpers)}
    compiler_warnings = check_python_files(files, main_file, spans, fields)
    total = sum(len(content.encode("utf-8")) for content in files.values())
    if total > settings.max_payload_bytes:
        raise InvalidInput(
            "task folder",
            f"<{total} bytes in all>",
            f"at most {settings.max_payload_bytes} bytes in all (it travels to the deploy worker through Redis): "
            "shorten the function bodies or additional_files",
        )

    folder, replaced = write_folder(Path(settings.generated_tasks_dir), f"{main.name}_{queue}", files, overwrite)
    logger.info("generated task folder %s (%d files, replaced=%s)", folder, len(files), replaced)
    names = [plan.name for plan in plans]
    return GeneratedTask(
        task_name=main.name,
        queue=queue,
        folder=str(folder),
        files=sorted(files),
        main_file=main_file,
        main_content=_shown(main_content, show),
        manifest=MANIFEST_FILE,
        tasks=names,
        requirements=pinned,
        replaced=replaced,
        warnings=compiler_warnings,
        next_steps=_next_steps(main.name, queue, folder, names, sum(map(len, cases.values()))),
        message=(
            f"{'Replaced' if replaced else 'Generated'} {folder} with {len(files)} files: "
            f"{', '.join(celery_task_name(n) for n in names)} on queue {queue!r}. Review {main_file}, then deploy "
            f"it with deploy_task(task_name={main.name!r}, queue={queue!r}): {MANIFEST_FILE} supplies the rest."
        ),
    )


SHOW = ("tasks", "full", "none")
TASKS_START = "\n@celery_app.task("  # the first task block: everything above it is the template's


def _shown(source: str, show: str) -> str:
    if show == "full":
        return source
    if show == "none":
        return ""
    return source[source.index(TASKS_START) + 1 :]


def _refuse_duplicate_names(plans: list[TaskPlan]) -> None:
    seen: set[str] = set()
    for plan in plans:
        if plan.name in seen:
            raise InvalidInput(plan.field + "task_name", plan.name, "task names must be unique within the folder")
        seen.add(plan.name)


def _next_steps(task_name: str, queue: str, folder: Path, names: list[str], case_count: int) -> list[str]:
    one = len(names) == 1
    checked = (
        f"its {case_count} test case{'' if case_count == 1 else 's'} run against the new version before it takes "
        "calls (a version that fails one is refused and the previous one keeps serving)"
        if case_count
        else f"test cases in {MANIFEST_FILE} (or deploy_task's tests) would run against the new version before it "
        "takes calls"
    )
    return [
        f"Review main_content (the task functions of {main_file_name(queue)}) and refine the files in {folder} if "
        "needed: keep the task names and the queue, pin new requirements (name==version) in requirements.txt, "
        f"leave Dockerfile as it is. {MANIFEST_FILE} holds what the deploy registers and checks.",
        f"Deploy: deploy_task(task_name={task_name!r}, queue={queue!r}). The folder's {MANIFEST_FILE} supplies the "
        "description, parameters, return type, category, retry policy and test cases (an argument given to "
        f"deploy_task overrides it); {checked}."
        + ("" if one else f" That one deploy registers every task of the folder: {', '.join(map(repr, names))}."),
        f"Test: trigger_celery_task(task_name={task_name!r}, kwargs={{...}}) and check the result.",
        f"Once deployed, {'the task is' if one else 'the tasks are'} registered: any agent finds "
        f"{'it' if one else 'them'} with get_available_tasks and calls {'it' if one else 'them'} with "
        "trigger_celery_task or send_celery_task.",
    ]


def write_folder(base: Path, name: str, files: dict[str, str], overwrite: bool) -> tuple[Path, bool]:
    """Write ``files`` to ``base/name`` atomically; return the folder and whether an old one was replaced."""
    target = base / name
    exists = os.path.lexists(target)
    if exists and not overwrite:
        raise Conflict(
            f"{target} already exists; pass overwrite=true to replace it (the old folder is replaced atomically)",
            folder=str(target),
        )
    base.mkdir(parents=True, exist_ok=True)
    root = base.resolve(strict=True)
    final = root / name
    if exists and (final.is_symlink() or not final.is_dir()):
        raise Conflict(f"{final} exists and is not a folder; remove it by hand", folder=str(final))
    if os.path.commonpath([root, final.resolve()]) != str(root):
        raise InvalidInput("task_name", name, f"the folder must resolve inside {root}")

    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}-", dir=root))
    try:
        for relative, content in files.items():
            _write_file(staging, relative, content)
        staging.chmod(0o755)
        _fsync_dir(staging)
        if not exists:
            try:
                os.rename(staging, final)
            except OSError as exc:  # another call created it meanwhile
                raise Conflict(f"{final} appeared while it was being generated ({exc.strerror})") from None
        else:
            aside = root / f"{OLD_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(final, aside)
            except FileNotFoundError:  # another call is replacing it right now
                raise Conflict(f"{final} changed while it was being generated; try again") from None
            try:
                os.rename(staging, final)
            except OSError:
                os.rename(aside, final)  # put the old folder back: the caller keeps what it had
                raise
            shutil.rmtree(aside, ignore_errors=True)
        _fsync_dir(root)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final, exists


def _write_file(folder: Path, relative: str, content: str) -> None:
    path = folder.joinpath(*relative.split("/"))
    for parent in reversed(path.relative_to(folder).parents):
        directory = folder / parent
        if not directory.exists():
            directory.mkdir()
            directory.chmod(0o755)  # explicit: the umask must not decide who can read the folder
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
