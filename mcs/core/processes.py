"""Processes MCS starts (deploy worker, embedded Redis, process-runtime workers): identify them and stop them.

Each is started in its own session, so it leads a process group that is signalled as a whole. A pid is identified
by its start time too, so a pid the kernel has since given to another process is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat); None when gone or a zombie.

    Without /proc (macOS) it is 0 while the pid exists: liveness only, without the pid-reuse guard."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0
        return 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)", which may itself hold spaces
    return None if fields[0] == "Z" else int(fields[19])


def is_running(pid: int, started: int | None, child: subprocess.Popen | None = None) -> bool:
    """True while ``pid`` is the process that started at ``started`` (and, for our own child, not exited)."""
    if child is not None and child.poll() is not None:
        return False
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def stop_group(
    pid: int,
    started: int | None = None,
    timeout_s: float = 30.0,
    child: subprocess.Popen | None = None,
    leader_only: bool = False,
) -> bool:
    """SIGTERM the process group ``pid`` leads, SIGKILL after ``timeout_s``; False when it was not running.
    ``leader_only``: SIGTERM the leader alone (a Celery worker's warm shutdown: its pool processes finish the calls
    they run), as ``docker stop`` does; whatever of the group is left is killed once the leader is gone."""
    if not is_running(pid, started, child):
        if child is not None:
            child.wait()
        return False
    with contextlib.suppress(ProcessLookupError):
        (os.kill if leader_only else os.killpg)(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while is_running(pid, started, child) and time.monotonic() < deadline:
        time.sleep(0.05)
    if is_running(pid, started, child) or leader_only:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    if child is not None:
        try:
            child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return True
    return True
