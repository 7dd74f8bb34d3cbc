"""The docker-py client and the one translation of its errors into MCS errors.

Every module of :mod:`deploy_mcp.docker` gets its client from :func:`make_client` (or is handed one) and wraps its
daemon calls in :func:`docker_errors`: a daemon that does not answer becomes :class:`ServiceUnavailable` with one
fix hint, a request the daemon refused :class:`DeployError` with the daemon's explanation. Secrets given to
:func:`docker_errors` are redacted from the message, and then the original exception is not chained (it would
carry the unredacted text).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import requests.exceptions

from deploy_mcp.docker.redaction import redact
from deploy_mcp.host_tools import tail
from mcs.core.errors import DeployError, MCSError, ServiceUnavailable

#: docker-py's timeout for one API call; a build or an image import streams for minutes.
DOCKER_TIMEOUT_S = 600
FIX_DAEMON = "start dockerd / the Docker service"

#: What docker-py raises when the daemon is not there or stops answering (APIError, its subclass, is a refusal).
DAEMON_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def make_client(timeout_s: float = DOCKER_TIMEOUT_S) -> Any:
    """A docker-py client from the environment (``DOCKER_HOST`` or the local socket).

    docker-py asks the daemon for its API version here, so a daemon that does not answer is found at once and
    raised as :class:`ServiceUnavailable`.
    """
    try:
        return docker.from_env(timeout=timeout_s)
    except DAEMON_ERRORS as exc:
        raise ServiceUnavailable(f"the Docker daemon does not answer ({exc}); {FIX_DAEMON}", service="docker") from exc


def docker_answers(timeout_s: float = 5.0) -> bool:
    """True when a Docker daemon answers a ping (the ``auto`` runtime choice)."""
    try:
        client = make_client(timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def client_or_own(client: Any = None) -> Iterator[Any]:
    """``client`` itself when given, else a client of :func:`make_client` that is closed afterwards."""
    if client is not None:
        yield client
        return
    own = make_client()
    try:
        yield own
    finally:
        own.close()


@contextlib.contextmanager
def docker_errors(
    action: str, *, step: str | None = None, secrets: list[str] | None = None, **details: Any
) -> Iterator[None]:
    """docker-py errors raised inside -> MCS errors; MCS errors pass untouched.

    ``action`` names what was tried in the message ("docker {action} failed: ..."); ``step`` (default ``action``)
    and ``details`` go into the error's details. ``secrets`` are redacted from the message.
    """
    try:
        yield
    except MCSError:
        raise
    except docker.errors.APIError as exc:
        explanation = redact(str(exc.explanation or exc), secrets or [])
        error: MCSError = DeployError(f"docker {action} failed: {explanation}", step=step or action, **details)
        if secrets:
            raise error from None
        raise error from exc
    except DAEMON_ERRORS as exc:
        message = redact(str(exc), secrets or [])
        error = ServiceUnavailable(
            f"the Docker daemon did not answer during {action} ({message}); {FIX_DAEMON}",
            service="docker",
            step=step or action,
            **details,
        )
        if secrets:
            raise error from None
        raise error from exc


def get_image(client: Any, ref: str) -> Any:
    """The image ``ref`` (tag or id), or None when the daemon has no such image."""
    with docker_errors("inspect image", image=ref):
        try:
            return client.images.get(ref)
        except docker.errors.ImageNotFound:
            return None


def get_container(client: Any, ref: str) -> Any:
    """The container ``ref`` (name or id), or None when it does not exist (any more). Call it inside
    :func:`docker_errors`: its failures belong to the caller's step."""
    try:
        return client.containers.get(ref)
    except docker.errors.NotFound:
        return None


def container_output(container: Any, lines: int = 200) -> str:
    """The last ``lines`` of a container's stdout and stderr ('' when the daemon cannot say)."""
    try:
        return container.logs(stdout=True, stderr=True, tail=lines).decode("utf-8", "replace")
    except docker.errors.DockerException:
        return ""


def wait_for_exit(container: Any, timeout_s: float, what: str, step: str) -> tuple[int, str]:
    """Wait for a one-shot container (a resolver, an install) to exit: its exit code and output. One that runs past
    ``timeout_s`` is killed and reported as a DeployError naming ``what`` with the tail of its output."""
    try:
        result = container.wait(timeout=timeout_s)
    except Exception as exc:  # requests' ReadTimeout, or the daemon going away
        with contextlib.suppress(docker.errors.DockerException):
            container.kill()
        raise DeployError(
            f"{what} did not finish within {timeout_s:.0f} s", step=step, output_tail=tail(container_output(container))
        ) from exc
    return int(result.get("StatusCode", -1)), container_output(container)
