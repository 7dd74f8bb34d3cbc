"""A small task module served by a real Celery worker in the integration tests (queue ``mcs_test``)."""

import os
import time

from mcs.core.celery_app import create_celery_app
from mcs.core.settings import load_settings

# MCS_KEY_PREFIX: serve as a deployed task does, every key under its prefix (bench/bench_mcp.py's confined worker).
celery_app = create_celery_app(load_settings(), key_prefix=os.environ.get("MCS_KEY_PREFIX", ""))
QUEUE = os.environ.get("MCS_TEST_QUEUE", "mcs_test")


@celery_app.task(name="mcp_app.test_add", queue=QUEUE)
def test_add(a: int, b: int) -> int:
    return a + b


@celery_app.task(name="mcp_app.test_slow", queue=QUEUE)
def test_slow(seconds: float = 0.2) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


@celery_app.task(name="mcp_app.test_fail", queue=QUEUE)
def test_fail(message: str) -> None:
    raise ValueError(message)


@celery_app.task(name="mcp_app.test_echo", queue=QUEUE)
def test_echo(value=None):
    return value


@celery_app.task(name="mcp_app.test_echo_confined", queue=QUEUE)
def test_echo_confined(value=None):
    return value
