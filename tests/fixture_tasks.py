"""A small task module served by a real Celery worker in the integration tests (queue ``mcs_test``)."""

import time

from mcs.core.celery_app import create_celery_app
from mcs.core.settings import load_settings

celery_app = create_celery_app(load_settings())
QUEUE = "mcs_test"


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
