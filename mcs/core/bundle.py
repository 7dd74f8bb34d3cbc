"""A task folder as a bundle: read on the MCP server's side, checked and written again on the deploy worker's.

Reading (``read_folder``): only folders under the allowed roots; every path a safe relative path; symlinks whose
target leaves the folder refused (ones that stay inside are read as the file they point to); ``__pycache__`` and
``*.pyc`` skipped; limits on file size, bundle size and file count; text as UTF-8, anything else as base64.
Writing (``write_bundle``): the same checks again (the worker trusts no sender), into a fresh staging folder,
files created exclusively, then renamed into place by the caller. The version of a bundle is a content hash, so
the same files always give the same version.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from mcs.core.errors import InvalidInput, NotFound
from mcs.core.paths import check_relative_path, inside
from mcs.core.settings import DATA_ROOT, Settings

SKIPPED_DIRS = frozenset({"__pycache__"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")
VERSION_CHARS = 16


class BundleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    encoding: Literal["utf-8", "base64"]
    content: str

    def data(self) -> bytes:
        return self.content.encode("utf-8") if self.encoding == "utf-8" else base64.b64decode(self.content)


def read_folder(settings: Settings, folder: Path | str) -> list[BundleFile]:
    """Read a task folder for deployment, or raise InvalidInput / NotFound saying what is wrong.

    Hidden files and folders (``.git``, ``.env``, ``.venv``) and ``__pycache__`` are not deployed."""
    rule = "a folder path of at most 1000 characters, without NUL"
    if not isinstance(folder, str | Path) or "\x00" in str(folder) or len(str(folder)) > 1000:
        raise InvalidInput("code_folder_path", folder, rule)
    try:
        folder = Path(folder).expanduser()
        if not folder.is_absolute():
            # Relative to the project (the seed writes ./generated_tasks/...), else to generated_tasks/: never to
            # the server's working directory, which depends on how the MCP client started it.
            candidates = [DATA_ROOT / folder, settings.generated_tasks_dir / folder]
            folder = next((c for c in candidates if c.exists()), candidates[0])
        real = Path(os.path.realpath(folder))  # resolved once; everything below is checked against this path
        real.is_dir()
    except OSError as exc:  # a name too long for the file system, a loop of symlinks
        raise InvalidInput("code_folder_path", str(folder), f"{rule} ({exc.strerror})") from None
    roots = settings.allowed_deploy_roots
    if not any(inside(root, real) for root in roots):
        raise InvalidInput(
            "code_folder_path",
            str(folder),
            "deploy reads task folders only from under " + ", ".join(map(str, roots)) + " (MCS_DEPLOY_ROOTS)",
        )
    if not real.is_dir():
        raise NotFound(f"task folder {folder} does not exist: generate it with generate_startMain_code first")
    files: list[BundleFile] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(real, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS and not d.startswith("."))
        for d in dirnames:
            if (here / d).is_symlink():
                raise InvalidInput("code_folder_path", str(here / d), "folders that are symlinks are not deployed")
        for name in sorted(filenames):
            if name.endswith(SKIPPED_SUFFIXES) or name.startswith("."):
                continue
            relative = (here / name).relative_to(real).as_posix()
            check_relative_path(relative, "file in the task folder")
            data = _read_inside(real, here / name, relative, settings.max_file_bytes)
            total += len(data)
            if total > settings.max_bundle_bytes:
                raise InvalidInput("code_folder_path", str(folder), f"at most {settings.max_bundle_bytes} bytes in all")
            if len(files) >= settings.max_files:
                raise InvalidInput("code_folder_path", str(folder), f"at most {settings.max_files} files")
            files.append(_encode(relative, data))
    if not files:
        raise InvalidInput("code_folder_path", str(folder), "the task folder holds no files")
    return sorted(files, key=lambda f: f.path)


def _read_inside(real_folder: Path, path: Path, relative: str, max_bytes: int) -> bytes:
    """Read one file whose real path stays inside the folder: opened once without following a last symlink, then
    checked on the open descriptor (regular file, size) and read to at most ``max_bytes`` (it cannot grow past)."""
    target = os.path.realpath(path)
    if not inside(real_folder, Path(target)):
        raise InvalidInput("code_folder_path", relative, "a symlink in the task folder points outside it")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise InvalidInput("code_folder_path", relative, f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput("code_folder_path", relative, "only regular files are deployed")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InvalidInput(relative, f"<more than {max_bytes} bytes>", f"at most {max_bytes} bytes a file")
    return data


def _encode(relative: str, data: bytes) -> BundleFile:
    try:
        return BundleFile(path=relative, encoding="utf-8", content=data.decode("utf-8"))
    except UnicodeDecodeError:
        return BundleFile(path=relative, encoding="base64", content=base64.b64encode(data).decode("ascii"))


def parse_files(raw: Any, settings: Settings) -> list[BundleFile]:
    """Validate a bundle's file list as the deploy worker receives it (no trust in the sender)."""
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("files", "<bundle>", "a non-empty list of files")
    if len(raw) > settings.max_files:
        raise InvalidInput("files", f"<{len(raw)} files>", f"at most {settings.max_files} files")
    files = [BundleFile.model_validate(item) for item in raw]
    seen: set[str] = set()
    total = 0
    for f in files:
        check_relative_path(f.path, f"file {f.path!r}")
        if f.path.casefold() in seen:
            raise InvalidInput("files", f.path, "each path once (compared ignoring case)")
        seen.add(f.path.casefold())
        size = len(f.data())
        if size > settings.max_file_bytes:
            raise InvalidInput(f.path, f"<{size} bytes>", f"at most {settings.max_file_bytes} bytes a file")
        total += size
    if total > settings.max_bundle_bytes:
        raise InvalidInput("files", f"<{total} bytes>", f"at most {settings.max_bundle_bytes} bytes in all")
    folders = {p.rsplit("/", i)[0].casefold() for p in seen for i in range(1, p.count("/") + 1)}
    clash = folders & seen
    if clash:
        raise InvalidInput("files", sorted(clash)[0], "a path cannot be both a file and a folder")
    return sorted(files, key=lambda f: f.path)


def bundle_version(files: list[BundleFile], *extra: bytes) -> str:
    """Content hash of the files (paths and bytes) and ``extra`` (the build recipe), lowercase hex: the version."""
    digest = hashlib.sha256()
    for blob in extra:
        digest.update(b"extra\0" + str(len(blob)).encode() + b"\0" + blob)
    for f in sorted(files, key=lambda f: f.path):
        data = f.data()
        digest.update(f.path.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()[:VERSION_CHARS]


def write_bundle(files: list[BundleFile], dest: Path) -> None:
    """Write the files under ``dest`` (which must not exist yet); every resolved path must stay inside it."""
    dest.mkdir(parents=True, exist_ok=False, mode=0o755)
    for f in files:
        target = dest.joinpath(*f.path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        if not inside(dest, target.parent):
            raise InvalidInput("files", f.path, "resolves outside the deployment folder")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(f.data())
