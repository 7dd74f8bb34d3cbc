"""The Celery client app: configuration, task naming, and a password with URL-special characters that works."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from mcp_app import celery_config, celery_task_name, create_celery_app
from mcs.core.errors import ServiceUnavailable
from Redis.registry import TaskRegistry
from Redis.server import LocalRedisServer
from tests.helpers import make_settings

SPECIAL_PASSWORD = "s3/cr@t:p%ss#word"  # pragma: allowlist secret


@pytest.mark.unit
def test_configuration_follows_the_original_and_hardens_it(tmp_path: Path) -> None:
    app = create_celery_app(make_settings(tmp_path, result_expires_s=120))
    assert app.main == "mcp_app"
    conf = app.conf
    assert conf.task_serializer == conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.enable_utc is True and conf.timezone == "UTC"
    assert conf.result_expires == 120
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit


@pytest.mark.unit
def test_task_names_follow_the_original() -> None:
    assert celery_task_name("add_numbers") == "mcp_app.add_numbers"


@pytest.mark.unit
def test_config_is_one_definition(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = create_celery_app(settings)
    for key, value in celery_config(settings).items():
        assert app.conf[key] == value, key


@pytest.fixture
def password_server(tmp_path: Path):
    server = LocalRedisServer(tmp_path / "pw", password=SPECIAL_PASSWORD).start()
    yield server
    server.stop()


@pytest.mark.integration
def test_password_with_url_special_characters_works_for_broker_backend_and_registry(
    password_server: LocalRedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = make_settings(tmp_path, redis_port=password_server.port, redis_password=SPECIAL_PASSWORD)
    app = create_celery_app(settings)
    # Broker: a published message lands in the queue's list on the broker DB.
    queue = f"q_{uuid.uuid4().hex[:8]}"
    app.send_task(celery_task_name("noop"), queue=queue)
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        assert conn.default_channel.client.llen(queue) == 1
    # Backend: a stored result is read back through the URL with the encoded password.
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, {"sum": 30}, "SUCCESS")
    assert app.AsyncResult(task_id).get(timeout=5) == {"sum": 30}
    # Registry: the password goes to redis-py as a value.
    TaskRegistry(settings).register(name="with_password")
    assert TaskRegistry(settings).names() == ["with_password"]
    assert SPECIAL_PASSWORD not in caplog.text


@pytest.mark.integration
def test_wrong_password_is_a_clear_error_without_the_password(
    password_server: LocalRedisServer, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, redis_port=password_server.port, redis_password="wrong/p@ss")
    with pytest.raises(ServiceUnavailable) as info:
        TaskRegistry(settings).names()
    assert "REDIS_PASSWORD" in str(info.value)
    assert "wrong/p@ss" not in str(info.value)
