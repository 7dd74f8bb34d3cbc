"""The wheelhouse: a task's pinned requirements resolved inside a container of the base image, and its cache.

``docker`` tests need a daemon and the package index (requirements are resolved from PyPI); ``unit`` tests need
nothing. The resolver container carries the label ``mcs.test=1`` and is removed by the wheelhouse itself.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from deploy_mcp.docker import wheelhouse
from deploy_mcp.docker.wheelhouse import prepare_wheelhouse, requirement_lines, resolve_wheelhouse
from mcs.core.errors import DeployError, InvalidInput
from mcs.core.settings import Settings
from tests.helpers import TEST_LABEL

logger = logging.getLogger(__name__)

BASE_IMAGE = Settings.model_fields["worker_base_image"].default


# --- docker --------------------------------------------------------------------------------------------------


@pytest.mark.docker
def test_container_resolver_includes_the_marker_dependency(docker_client, base_ready: str, tmp_path: Path) -> None:
    # redis 5.0.8 needs `async-timeout; python_full_version < "3.11.3"`: true for the image's 3.11.2, false for the
    # host's interpreter, so a resolution on the host would leave the wheel out.
    started = time.monotonic()
    wheels = prepare_wheelhouse(
        ["redis==5.0.8"],
        tmp_path / "container",
        cache_dir=tmp_path / "cache",
        base_image=BASE_IMAGE,
        client=docker_client,
        extra_labels={TEST_LABEL: "1"},
    )
    logger.info("wheelhouse resolution in a container: %.2f s", time.monotonic() - started)
    assert [w.split("-")[0] for w in wheels] == ["async_timeout", "redis"], wheels
    assert sorted(p.name for p in (tmp_path / "container").iterdir()) == wheels
    assert docker_client.containers.list(all=True, filters={"label": "mcs.role=wheelhouse"}) == []


@pytest.mark.docker
def test_wheelhouse_cache_hit_needs_no_resolution(
    docker_client, base_ready: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    kwargs = {"cache_dir": cache, "base_image": BASE_IMAGE, "client": docker_client, "extra_labels": {TEST_LABEL: "1"}}
    first = prepare_wheelhouse(["six==1.16.0"], tmp_path / "a", **kwargs)  # needs the package index

    def no_resolution(*args: Any, **kw: Any) -> Any:
        raise AssertionError("pip must not run on a cache hit")

    monkeypatch.setattr(wheelhouse._ContainerResolver, "download", no_resolution)
    started = time.monotonic()
    assert prepare_wheelhouse(["six==1.16.0"], tmp_path / "b", **kwargs) == first
    logger.info("wheelhouse from the cache: %.3f s", time.monotonic() - started)
    again = resolve_wheelhouse(["six==1.16.0"], **kwargs)  # what a build asks: the set, no copy, no container
    assert again is not None and again.resolved is False and sorted(again.wheels) == first
    assert list((cache / "sets").glob("*.json")) == [cache / "sets" / f"{again.key}.json"]
    assert (tmp_path / "b" / first[0]).read_bytes() == (tmp_path / "a" / first[0]).read_bytes()
    (cache / "wheels" / first[0]).write_bytes(b"tampered")
    with pytest.raises(AssertionError, match="must not run"):  # a changed cache file is not trusted
        prepare_wheelhouse(["six==1.16.0"], tmp_path / "c", **kwargs)


@pytest.mark.docker
def test_unresolvable_requirement_is_a_deploy_error(docker_client, base_ready: str, tmp_path: Path) -> None:
    with pytest.raises(DeployError) as caught:
        prepare_wheelhouse(
            ["mcs-no-such-package-4f1e==0.0.1"],
            tmp_path / "w",
            cache_dir=tmp_path / "cache",
            base_image=BASE_IMAGE,
            client=docker_client,
            extra_labels={TEST_LABEL: "1"},
        )
    assert caught.value.details["step"] == "wheelhouse"
    assert "mcs-no-such-package-4f1e" in caught.value.details["output_tail"]


# --- unit ----------------------------------------------------------------------------------------------------


class _Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"docker was called ({name}) before the requirements were checked")


@pytest.mark.unit
def test_only_pinned_lines_reach_pip_and_are_checked_before_docker(tmp_path: Path) -> None:
    assert requirement_lines(["six==1.16.0", "", "# comment", " Pillow == 10.4.0 "], 10) == [
        "six==1.16.0",
        "Pillow==10.4.0",
    ]
    for lines in (["--index-url=https://evil.example"], ["six"], [b"six==1.16.0"]):
        with pytest.raises(InvalidInput) as caught:
            prepare_wheelhouse(lines, tmp_path / "w", tmp_path / "cache", base_image=BASE_IMAGE, client=_Untouchable())
        assert caught.value.field == "requirements line 1"
    with pytest.raises(InvalidInput, match="at most 2 requirements"):
        requirement_lines(["a==1", "b==1", "c==1"], 2)
    assert prepare_wheelhouse([], tmp_path / "empty", base_image=BASE_IMAGE, client=_Untouchable()) == []
