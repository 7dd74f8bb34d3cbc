"""Settings precedence, rule by rule: explicit > environment > .env > Redis/redis_config.py > defaults."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mcs.core.settings import Settings, load_settings

pytestmark = pytest.mark.unit

SPECIAL_PASSWORD = "p/a@s:s%w#rd"  # pragma: allowlist secret


def write_config(path: Path, host: str = "cfg-host", port: int = 1111) -> None:
    path.write_text(f"def get_redis_config():\n    return {{'host': {host!r}, 'port': {port}, 'db': 3}}\n")


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "redis_config.py"
    write_config(path)
    monkeypatch.setenv("MCS_REDIS_CONFIG_FILE", str(path))
    return path


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text("REDIS_HOST=dotenv-host\nREDIS_PORT=2222\n")
    return path


def test_defaults_when_nothing_is_configured() -> None:
    s = Settings(_env_file=None)
    assert (s.redis_host, s.redis_port, s.redis_broker_db, s.redis_backend_db) == ("127.0.0.1", 6379, 0, 1)
    assert s.deploy_queue == "deploy"
    assert s.redis_password is None


def test_redis_config_file_beats_defaults(config_file: Path) -> None:
    s = Settings(_env_file=None)
    assert (s.redis_host, s.redis_port, s.metadata_db) == ("cfg-host", 1111, 3)


def test_redis_config_file_default_dict_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cfg.py"
    path.write_text("DEFAULT_REDIS_CONFIG = {'host': 'dict-host', 'port': 1234, 'decode_responses': True}\n")
    monkeypatch.setenv("MCS_REDIS_CONFIG_FILE", str(path))
    s = Settings(_env_file=None)
    assert (s.redis_host, s.redis_port) == ("dict-host", 1234)


def test_dotenv_beats_redis_config_file(config_file: Path, env_file: Path) -> None:
    s = Settings(_env_file=env_file)
    assert (s.redis_host, s.redis_port) == ("dotenv-host", 2222)
    assert s.metadata_db == 3  # not in .env: still from the config file


def test_environment_beats_dotenv(config_file: Path, env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "env-host")
    s = Settings(_env_file=env_file)
    assert (s.redis_host, s.redis_port) == ("env-host", 2222)


def test_explicit_beats_environment(config_file: Path, env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "env-host")
    s = Settings(_env_file=env_file, redis_host="explicit-host")
    assert s.redis_host == "explicit-host"


def test_mcs_prefixed_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCS_DEPLOY_QUEUE", "deploy2")
    monkeypatch.setenv("MCS_TRIGGER_TIMEOUT_S", "2.5")
    s = Settings(_env_file=None)
    assert (s.deploy_queue, s.trigger_timeout_s) == ("deploy2", 2.5)


def test_load_settings_reads_mcs_env_file(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCS_ENV_FILE", str(env_file))
    assert load_settings().redis_host == "dotenv-host"


def test_bad_value_names_the_field() -> None:
    with pytest.raises(ValueError, match="redis_port"):
        Settings(_env_file=None, redis_port=70000)
    with pytest.raises(ValueError, match="deploy_queue"):
        Settings(_env_file=None, deploy_queue="../x")


def test_password_is_percent_encoded_in_urls() -> None:
    s = Settings(_env_file=None, redis_password=SPECIAL_PASSWORD, redis_port=6390)
    assert s.broker_url == "redis://:p%2Fa%40s%3As%25w%23rd@127.0.0.1:6390/0"
    assert s.result_backend_url.endswith("@127.0.0.1:6390/1")


def test_password_never_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings(_env_file=None, redis_password=SPECIAL_PASSWORD)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("mcs.test").info("settings: %s %r", s, s)
    for text in (repr(s), str(s), s.model_dump_json(), caplog.text, s.redis_location):
        assert SPECIAL_PASSWORD not in text
        assert "p%2Fa" not in text


def test_settings_are_immutable() -> None:
    s = Settings(_env_file=None)
    with pytest.raises(ValueError):
        s.redis_host = "elsewhere"
