"""The one Docker boundary: the client factory and the translation of docker-py errors into MCS errors (unit)."""

from __future__ import annotations

from typing import Any

import docker
import docker.errors
import pytest
import requests.exceptions

from deploy_mcp.docker.client import FIX_DAEMON, docker_answers, docker_errors, make_client
from deploy_mcp.docker.redaction import REDACTED
from mcs.core.errors import DeployError, InvalidInput, ServiceUnavailable

SECRET = "p@ss/w rd"  # pragma: allowlist secret

pytestmark = pytest.mark.unit


class _Response:
    """Just enough of a requests.Response for docker.errors.APIError."""

    status_code = 500
    reason = "Server Error"
    url = "http+docker://localhost/containers/create"


def test_api_error_is_a_deploy_error_with_the_secret_redacted() -> None:
    refused = docker.errors.APIError("500 Server Error", _Response(), explanation=f"bad env REDIS_PASSWORD={SECRET}")
    with pytest.raises(DeployError) as caught, docker_errors("start", secrets=[SECRET], container="mcs-x"):
        raise refused
    error = caught.value
    assert error.message == f"docker start failed: bad env REDIS_PASSWORD={REDACTED}"
    assert error.details == {"step": "start", "container": "mcs-x"}
    assert error.__cause__ is None and error.__suppress_context__  # the original would carry the secret


def test_api_error_without_secrets_keeps_its_cause_and_step_can_differ_from_the_action() -> None:
    refused = docker.errors.APIError("409 Conflict", _Response(), explanation="name in use")
    with pytest.raises(DeployError) as caught, docker_errors("wheelhouse copy", step="wheelhouse"):
        raise refused
    assert caught.value.message == "docker wheelhouse copy failed: name in use"
    assert caught.value.details["step"] == "wheelhouse"
    assert caught.value.__cause__ is refused


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError(f"connection refused while sending {SECRET}"),
        requests.exceptions.ReadTimeout("read timed out"),
        docker.errors.DockerException("Error while fetching server API version"),
    ],
)
def test_a_daemon_that_does_not_answer_is_service_unavailable(exc: Exception) -> None:
    with pytest.raises(ServiceUnavailable) as caught, docker_errors("list images", secrets=[SECRET]):
        raise exc
    assert caught.value.message.startswith("the Docker daemon did not answer during list images (")
    assert caught.value.message.endswith(FIX_DAEMON)
    assert SECRET not in caught.value.message
    assert caught.value.details == {"service": "docker", "step": "list images"}


def test_mcs_errors_and_other_exceptions_pass_untouched() -> None:
    invalid = InvalidInput("queue", "Bad Queue", "lowercase")
    with pytest.raises(InvalidInput) as caught, docker_errors("start"):
        raise invalid
    assert caught.value is invalid
    with pytest.raises(KeyError), docker_errors("start"):
        raise KeyError("not docker's")


def test_no_daemon_means_service_unavailable_and_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: Any) -> Any:
        raise docker.errors.DockerException("Error while fetching server API version: connection refused")

    monkeypatch.setattr(docker, "from_env", refuse)
    with pytest.raises(ServiceUnavailable, match=FIX_DAEMON) as caught:
        make_client()
    assert caught.value.details == {"service": "docker"}
    assert docker_answers(0.1) is False
