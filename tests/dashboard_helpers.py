"""Helpers for the dashboard's tests: run it as ``python -m mcs.dashboard`` does, read its pages and its metrics."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mcs.core.settings import PROJECT_ROOT, Settings
from mcs.stack import process_env
from tests.helpers import wait_for

#: Where CI keeps what tests leave for a person to look at (screenshots): $MCS_TEST_ARTIFACTS, else .ci-artifacts/.
ARTIFACTS = Path(os.environ.get("MCS_TEST_ARTIFACTS") or PROJECT_ROOT / ".ci-artifacts")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_dashboard(settings: Settings, log: Path, refresh_s: float = 1.0) -> Iterator[str]:
    """The dashboard in a process of its own, as ``make dashboard`` runs it; its base URL (``http://127.0.0.1:P``)."""
    port = free_port()
    env = process_env(settings, MCS_DASHBOARD_PORT=str(port), MCS_DASHBOARD_REFRESH_S=str(refresh_s))
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcs.dashboard"], cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:

        def started() -> bool:
            return proc.poll() is not None or get(base + "/healthz")[0] == 200

        wait_for(started, 30, "the dashboard to start", every_s=0.1)
        assert proc.poll() is None, log.read_text()[-3000:]
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def get(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:  # noqa: S310 (the test's own loopback server)
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def post(url: str, fields: dict[str, str], cookie: str | None = None) -> tuple[int, str, dict[str, str]]:
    from urllib.parse import urlencode

    request = urllib.request.Request(url, data=urlencode(fields).encode(), method="POST")  # noqa: S310
    if cookie:
        request.add_header("Cookie", cookie)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as answer:
            return answer.status, answer.read().decode(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def metrics(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed with prometheus-client's own parser: (sample name, sorted labels) -> value."""
    status, text = get(base + "/metrics")
    assert status == 200, text[:500]
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples
