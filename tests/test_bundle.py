"""Reading a task folder for deploy (allowed roots, symlinks, limits, binaries) and checking it again on the worker."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from mcs.core.bundle import BundleFile, bundle_version, parse_files, read_folder, write_bundle
from mcs.core.errors import InvalidInput, NotFound
from mcs.core.settings import Settings
from tests.helpers import make_settings

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, max_file_bytes=1000, max_bundle_bytes=3000, max_files=5)


@pytest.fixture
def folder(settings: Settings) -> Path:
    folder = settings.generated_tasks_dir / "simple_add_q"
    (folder / "pkg").mkdir(parents=True)
    (folder / "app_q.py").write_text("x = 1\n")
    (folder / "pkg" / "util.py").write_text("y = 2\n")
    (folder / "util.py").write_text("z = 3\n")  # same base name as pkg/util.py: must not be flattened
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "app_q.cpython-311.pyc").write_bytes(b"\x00")
    return folder


def test_subfolders_are_kept_and_caches_skipped(settings: Settings, folder: Path) -> None:
    files = read_folder(settings, folder)
    assert [f.path for f in files] == ["app_q.py", "pkg/util.py", "util.py"]
    assert {f.path: f.content for f in files}["pkg/util.py"] == "y = 2\n"


def test_binary_files_travel_as_base64(settings: Settings, folder: Path) -> None:
    (folder / "logo.bin").write_bytes(b"\xff\x00\xfe")
    file = {f.path: f for f in read_folder(settings, folder)}["logo.bin"]
    assert file.encoding == "base64" and base64.b64decode(file.content) == b"\xff\x00\xfe"


def test_relative_path_is_taken_from_generated_tasks(settings: Settings, folder: Path) -> None:
    assert read_folder(settings, "simple_add_q")[0].path == "app_q.py"


@pytest.mark.parametrize("path", ["/etc", "/", "../../etc"])
def test_folders_outside_the_allowed_roots_are_refused(settings: Settings, folder: Path, path: str) -> None:
    with pytest.raises(InvalidInput, match="only from under"):
        read_folder(settings, folder / path if path.startswith("..") else path)


def test_sibling_prefix_is_not_inside(settings: Settings, tmp_path: Path) -> None:
    sibling = Path(str(settings.generated_tasks_dir) + "2") / "x"
    sibling.mkdir(parents=True)
    (sibling / "app.py").write_text("")
    with pytest.raises(InvalidInput, match="only from under"):
        read_folder(settings, sibling)


def test_symlink_out_of_the_folder_is_refused(settings: Settings, folder: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password=1")
    (folder / "leak.txt").symlink_to(secret)
    with pytest.raises(InvalidInput, match="points outside"):
        read_folder(settings, folder)


def test_symlinked_task_folder_pointing_out_is_refused(settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.py").write_text("")
    settings.generated_tasks_dir.mkdir(parents=True, exist_ok=True)
    (settings.generated_tasks_dir / "link_q").symlink_to(outside)
    with pytest.raises(InvalidInput, match="only from under"):
        read_folder(settings, settings.generated_tasks_dir / "link_q")


def test_symlink_inside_the_folder_is_read_as_its_target(settings: Settings, folder: Path) -> None:
    (folder / "alias.py").symlink_to(folder / "util.py")
    assert {f.path: f.content for f in read_folder(settings, folder)}["alias.py"] == "z = 3\n"


def test_hidden_files_and_folders_are_not_deployed(settings: Settings, folder: Path) -> None:
    (folder / ".env").write_text("REDIS_PASSWORD=x")
    (folder / ".git").mkdir()
    (folder / ".git" / "config").write_text("[core]")
    assert [f.path for f in read_folder(settings, folder)] == ["app_q.py", "pkg/util.py", "util.py"]


def test_missing_folder(settings: Settings) -> None:
    with pytest.raises(NotFound, match="generate_startMain_code"):
        read_folder(settings, settings.generated_tasks_dir / "nope_q")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda f: (f / "big.txt").write_text("x" * 1001), "bytes a file"),
        (lambda f: [(f / f"f{i}.txt").write_text("x") for i in range(5)], "at most 5 files"),
        (lambda f: [(f / f"f{i}.txt").write_text("x" * 900) for i in range(4)], "in all"),
        (lambda f: (f / "bad name.py").write_text(""), "relative path"),
        (lambda f: os.mkfifo(f / "pipe"), "regular files"),
    ],
)
def test_limits_and_odd_files(settings: Settings, folder: Path, make, fragment: str) -> None:
    make(folder)
    with pytest.raises(InvalidInput, match=fragment):
        read_folder(settings, folder)


@pytest.mark.parametrize(
    "path",
    ["../x.py", "/etc/passwd", "a/../../x", "a\\b.py", "a//b.py", "x\x00.py", ".hidden", "%2e%2e/x", ""],
)
def test_worker_refuses_unsafe_paths(settings: Settings, path: str) -> None:
    with pytest.raises(InvalidInput):
        parse_files([{"path": path, "encoding": "utf-8", "content": "x"}], settings)


def test_worker_refuses_duplicates_and_file_folder_clashes(settings: Settings) -> None:
    same = [{"path": p, "encoding": "utf-8", "content": ""} for p in ("A.py", "a.py")]
    with pytest.raises(InvalidInput, match="each path once"):
        parse_files(same, settings)
    clash = [{"path": p, "encoding": "utf-8", "content": ""} for p in ("pkg", "pkg/x.py")]
    with pytest.raises(InvalidInput, match="both a file and a folder"):
        parse_files(clash, settings)


def test_version_is_a_content_hash(settings: Settings, folder: Path) -> None:
    files = read_folder(settings, folder)
    assert bundle_version(files) == bundle_version(list(reversed(files)))
    (folder / "util.py").write_text("z = 4\n")
    assert bundle_version(read_folder(settings, folder)) != bundle_version(files)


def test_write_bundle_round_trip(settings: Settings, folder: Path, tmp_path: Path) -> None:
    files = read_folder(settings, folder)
    write_bundle(files, tmp_path / "out")
    assert (tmp_path / "out" / "pkg" / "util.py").read_text() == "y = 2\n"
    with pytest.raises(FileExistsError):
        write_bundle(files, tmp_path / "out")  # never writes over an existing folder


def test_bundle_file_model_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError):
        BundleFile.model_validate({"path": "a", "encoding": "utf-8", "content": "", "mode": 0o4755})
