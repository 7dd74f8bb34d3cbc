"""`pip install .` from a clone gives working commands: the wheel holds every package, the templates and the
entry points, and its code runs outside the checkout with its folders under the user's data directory."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mcs.core.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration

COMMANDS = {"mcs-server", "mcs-deploy-worker", "mcs-up", "mcs-down", "mcs-demo", "mcs-dashboard"}

CHECK = """
import asyncio, importlib, json, sys
from importlib.metadata import entry_points
from mcs.core.settings import load_settings
from mcs.core.worker_image import TEMPLATES_DIR, render_dockerfile
from mcp_server import build_server
settings = load_settings()
for ep in entry_points(group="console_scripts"):
    if ep.name.startswith("mcs-"):
        assert callable(ep.load()), ep
tools = asyncio.run(build_server(settings).list_tools())
print(json.dumps({
    "templates": str(TEMPLATES_DIR),
    "dockerfile": render_dockerfile(settings, "q", has_requirements=False).startswith("#"),
    "generated_tasks_dir": str(settings.generated_tasks_dir),
    "tools": len(tools),
    "commands": sorted(ep.name for ep in entry_points(group="console_scripts") if ep.name.startswith("mcs-")),
}))
"""


def test_the_wheel_installs_working_commands(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy of the tracked files: the build writes its build/ and egg-info there
    tracked = subprocess.run(["git", "-C", str(PROJECT_ROOT), "ls-files", "-z"], capture_output=True, check=True)
    for name in filter(None, tracked.stdout.decode().split("\0")):
        if (PROJECT_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
         "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mcs-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)
    assert {"mcp_server.py", "mcp_app.py", "templates/app.py.tmpl", "templates/Dockerfile.tmpl"} <= names
    assert {"mcs/core/settings.py", "Redis/registry.py", "deploy_mcp/deploy_worker.py"} <= names
    assert {"mcs/dashboard/templates/base.html", "mcs/dashboard/static/dashboard.js"} <= names  # the dashboard ships
    (entry_points,) = site.glob("mcs-*.dist-info/entry_points.txt")
    parser = configparser.ConfigParser()
    parser.read(entry_points)
    assert set(parser["console_scripts"]) == COMMANDS

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "MCS_", "XDG_"))}
    env.update(PYTHONPATH=str(site), HOME=str(home), MCS_REDIS_CONFIG_FILE=str(tmp_path / "absent.py"))
    run = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(seen["templates"]).is_relative_to(site) and seen["dockerfile"]
    assert Path(seen["generated_tasks_dir"]) == home / ".local" / "share" / "mcs" / "generated_tasks"
    assert seen["tools"] == 21 and set(seen["commands"]) == COMMANDS
