"""Small host-side helpers the worker runtimes share: run a command, keep the tail of its output, the host's CA
bundle, and which proxy variables may leave the host.

They exist once so the base image build, the wheelhouse resolver and the process runtime cannot drift apart (a
second copy of the proxy list once forwarded fewer variables than the first).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

from mcs.core.errors import DeployError

logger = logging.getLogger(__name__)

#: The host's CA bundle (Debian/Ubuntu ``ca-certificates``): given to pip with ``--cert`` wherever pip runs.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
#: The only host variables forwarded to pip in a chroot or container: a proxied network needs them; nothing else.
FORWARDED_PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
#: How much of a failing command's output an error carries (``details["output_tail"]``).
OUTPUT_TAIL_CHARS = 3000


def proxy_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The set proxy variables of ``environ`` (default ``os.environ``), in :data:`FORWARDED_PROXY_VARS` order."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in FORWARDED_PROXY_VARS if environ.get(k)}


def tail(output: bytes | str, limit: int = OUTPUT_TAIL_CHARS) -> str:
    """The last ``limit`` characters of a command's output (``...`` marks a cut), bytes decoded leniently."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    return text if len(text) <= limit else "..." + text[-limit:]


def clean_env() -> dict[str, str]:
    """The environment of a host tool that needs nothing from MCS's own: a plain PATH, the C locale."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def run(step: str, argv: list[str], *, timeout: float, env: Mapping[str, str] | None = None) -> str:
    """Run an argument list (never a shell) with output captured, and return that output.

    A failure to start, a non-zero exit or a timeout (the whole process group is killed) becomes
    :class:`DeployError` with ``step``, ``command`` and the tail of the output; ``env`` defaults to :func:`clean_env`.
    """
    logger.debug("%s: %s", step, argv)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else clean_env(),
            start_new_session=True,  # so a timeout can stop the whole process group
        )
    except OSError as exc:
        raise DeployError(f"{step}: cannot start {argv[0]}: {exc}", step=step, command=argv) from exc
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        output, _ = proc.communicate()
        raise DeployError(
            f"{step} did not finish within {timeout:.0f} s", step=step, command=argv, output_tail=tail(output)
        ) from exc
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    text = output.decode("utf-8", "replace")
    logger.debug("%s output:\n%s", step, text)
    if proc.returncode != 0:
        raise DeployError(
            f"{step} failed with exit code {proc.returncode}",
            step=step,
            command=argv,
            returncode=proc.returncode,
            output_tail=tail(text),
        )
    return text


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
