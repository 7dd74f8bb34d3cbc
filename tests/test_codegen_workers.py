"""Integration: generated task folders run as real Celery workers on the suite's private Redis, and answer calls.

Each worker is a subprocess started in its folder with only the REDIS_* environment (no PYTHONPATH: the folder must
stand on its own), and is stopped by its pid at the end of the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from mcs.codegen import GeneratedTask, generate_task_folder
from mcs.core.celery_app import celery_task_name, create_celery_app
from mcs.core.settings import Settings
from Redis.server import LocalRedisServer
from tests.celery_worker import WorkerProcess
from tests.helpers import make_settings

pytestmark = pytest.mark.integration

RESULT_TIMEOUT_S = 30.0


@contextlib.contextmanager
def running_worker(
    result: GeneratedTask,
    settings: Settings,
    client: Celery,
    log_dir: Path,
    command: list[str] | None = None,
    serve_queue: str | None = None,
    key_prefix: str = "",
) -> Iterator[WorkerProcess]:
    """A worker in the generated folder, answering pings, stopped by its pid afterwards.

    Only the REDIS_* variables reach it (and MCS_KEY_PREFIX when ``key_prefix`` is given), without PYTHONPATH: the
    folder must stand on its own. ``command`` replaces the worker's command line (its ``--hostname`` is appended);
    ``serve_queue`` is the queue it consumes instead of the folder's own, as a deployed version does.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "REDIS_HOST": settings.redis_host,
        "REDIS_BROKER_DB": str(settings.redis_broker_db),
        "REDIS_BACKEND_DB": str(settings.redis_backend_db),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if settings.redis_password is not None:
        env["REDIS_PASSWORD"] = settings.redis_password.get_secret_value()
    if key_prefix:
        env["MCS_KEY_PREFIX"] = key_prefix
    worker = WorkerProcess(
        f"app_{result.queue}",
        serve_queue or result.queue,
        settings.redis_port,
        log_dir / f"worker-{result.queue}.log",
        cwd=Path(result.folder),
        pool="solo",
        concurrency=1,
        extra_env=env,
    )
    worker.env.pop("PYTHONPATH")
    if command is not None:
        worker.command = [*command, "--hostname", worker.hostname]
    worker.start(client)
    try:
        yield worker
    finally:
        worker.stop()


def send(app: Celery, queue: str, name: str, args: list | None = None, kwargs: dict | None = None) -> AsyncResult:
    return app.send_task(celery_task_name(name), args=args, kwargs=kwargs, queue=queue)


def call(app: Celery, queue: str, name: str, args: list | None = None, kwargs: dict | None = None) -> Any:
    return send(app, queue, name, args, kwargs).get(timeout=RESULT_TIMEOUT_S)


@pytest.fixture
def client(settings: Settings) -> Iterator[Celery]:
    app = create_celery_app(settings)
    yield app
    app.close()


def test_simple_add(settings: Settings, client: Celery, tmp_path: Path) -> None:
    result = generate_task_folder(
        settings,
        task_name="simple_add",
        description="Add two numbers.",
        parameters=[
            {"name": "a", "type": "int", "required": True, "description": "first"},
            {"name": "b", "type": "int", "required": True, "description": "second"},
        ],
        function_body="return a + b",
        queue="test_queue",
        return_type="int",
    )
    with running_worker(result, settings, client, tmp_path / "logs"):
        assert call(client, result.queue, "simple_add", args=[2, 3]) == 5
        assert call(client, result.queue, "simple_add", kwargs={"a": 40, "b": 2}) == 42


def test_multi_line_body_with_imports(settings: Settings, client: Celery, tmp_path: Path) -> None:
    body = """
    import hashlib
    import json

    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    if uppercase:
        digest = digest.upper()
    return {"digest": digest, "keys": sorted(data)}
    """
    result = generate_task_folder(
        settings,
        task_name="fingerprint",
        description='Digest of a JSON document. Quotes """ and \\ are fine here.',
        parameters=[
            {"name": "data", "type": "dict[str, Any]", "description": "the document"},
            {"name": "uppercase", "type": "bool", "required": False, "default": False},
        ],
        function_body=body,
        queue="hashing",
        return_type="dict",
    )
    document = {"b": [1, 2], "a": "ü"}
    digest = hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    with running_worker(result, settings, client, tmp_path / "logs"):
        assert call(client, result.queue, "fingerprint", kwargs={"data": document}) == {
            "digest": digest,
            "keys": ["a", "b"],
        }
        upper = call(client, result.queue, "fingerprint", args=[document, True])
        assert upper["digest"] == digest.upper()


def test_optional_parameters_with_defaults(settings: Settings, client: Celery, tmp_path: Path) -> None:
    result = generate_task_folder(
        settings,
        task_name="greet",
        description="Greet someone.",
        parameters=[
            {"name": "greeting", "type": "str", "required": False, "default": "Hello"},
            {"name": "name", "type": "str", "required": True},
            {"name": "punctuation", "type": "Optional[str]", "required": False},
            {"name": "times", "type": "int", "required": False, "default": 1},
        ],
        function_body="return ' '.join([f'{greeting}, {name}{punctuation or \"!\"}'] * times)",
        queue="greetings",
        return_type="str",
    )
    with running_worker(result, settings, client, tmp_path / "logs"):
        assert call(client, result.queue, "greet", kwargs={"name": "Ada"}) == "Hello, Ada!"
        assert call(client, result.queue, "greet", args=["Bob", "Hi"]) == "Hi, Bob!"  # required first, then optional
        full = {"name": "Cy", "greeting": "Yo", "punctuation": "?", "times": 2}
        assert call(client, result.queue, "greet", kwargs=full) == "Yo, Cy? Yo, Cy?"


def test_several_tasks_in_one_folder(settings: Settings, client: Celery, tmp_path: Path) -> None:
    numbers = [{"name": "values", "type": "list[float]", "description": "numbers"}]
    result = generate_task_folder(
        settings,
        task_name="total",
        description="Sum of numbers.",
        parameters=numbers,
        function_body="return sum(values)",
        queue="stats",
        return_type="float",
        tasks=[
            {
                "task_name": "mean",
                "description": "Mean of numbers.",
                "parameters": numbers,
                "function_body": "if not values:\n    raise ValueError('no values')\nreturn sum(values) / len(values)",
                "return_type": "float",
            },
            {
                "task_name": "word_count",
                "description": "Words per word.",
                "parameters": [{"name": "text", "type": "str"}],
                "function_body": "from collections import Counter\n\nreturn dict(Counter(text.split()))",
                "return_type": "Dict[str, int]",
            },
        ],
    )
    with running_worker(result, settings, client, tmp_path / "logs"):
        assert call(client, result.queue, "total", args=[[1, 2, 3.5]]) == 6.5
        assert call(client, result.queue, "mean", args=[[1, 2, 3]]) == 2
        assert call(client, result.queue, "word_count", kwargs={"text": "a b a"}) == {"a": 2, "b": 1}
        failed = send(client, result.queue, "mean", args=[[]])
        failed.get(timeout=RESULT_TIMEOUT_S, propagate=False)
        assert failed.state == "FAILURE" and isinstance(failed.result, ValueError)


def test_helper_modules_under_the_dockerfile_command(settings: Settings, tmp_path: Path) -> None:
    """The image's own command (the `celery` script, prefork pool): helpers importable, time limits enforced."""
    limited = make_settings(tmp_path, redis_port=settings.redis_port, task_soft_time_limit_s=1, task_time_limit_s=5)
    result = generate_task_folder(
        limited,
        task_name="lookup_double",
        description="Look a key up in the helper package's data, add twice x.",
        parameters=[{"name": "key", "type": "str"}, {"name": "x", "type": "int"}],
        function_body="from helpers import double\nfrom pkg.util import lookup\n\nreturn lookup(key) + double(x)",
        queue="helpers_q",
        return_type="int",
        tasks=[{"task_name": "slow", "function_body": "import time\n\ntime.sleep(30)\nreturn 'finished'"}],
        additional_files=[
            {"filename": "helpers.py", "content": "def double(x):\n    return 2 * x\n"},
            {
                "filename": "pkg/util.py",
                "content": (
                    "import json\nfrom pathlib import Path\n\n"
                    "TABLE = json.loads((Path(__file__).parent / 'data' / 'table.json').read_text())\n\n\n"
                    "def lookup(key):\n    return TABLE[key]\n"
                ),
            },
            {"filename": "pkg/data/table.json", "content": '{"ten": 10}'},
        ],
    )
    cmd_line = next(
        line for line in (Path(result.folder) / "Dockerfile").read_text().splitlines() if line[:4] == "CMD "
    )
    command = json.loads(cmd_line.removeprefix("CMD "))
    celery_script = Path(sys.executable).parent / "celery"
    assert command[0] == "celery" and celery_script.exists()
    script = [str(celery_script), *command[1:]]
    with create_celery_app(limited) as app, running_worker(result, limited, app, tmp_path / "logs", script):
        assert call(app, result.queue, "lookup_double", kwargs={"key": "ten", "x": 4}) == 18
        slow = send(app, result.queue, "slow")
        started = time.monotonic()
        slow.get(timeout=20, propagate=False)
        assert slow.state == "FAILURE" and type(slow.result).__name__ == "SoftTimeLimitExceeded"
        assert time.monotonic() - started < 15


def test_redis_password_with_special_characters(tmp_path: Path) -> None:
    password = "p/@:%#w0rd"  # pragma: allowlist secret
    server = LocalRedisServer(tmp_path / "redis-pw", password=password).start()
    try:
        secured = make_settings(tmp_path, redis_port=server.port, redis_password=password)
        result = generate_task_folder(
            secured,
            task_name="echo",
            description="Echo.",
            parameters=[{"name": "value", "type": "Any"}],
            function_body="return value",
            queue="secured",
        )
        for path in result.files:
            assert password not in (Path(result.folder) / path).read_text()
        with create_celery_app(secured) as app, running_worker(result, secured, app, tmp_path / "logs"):
            assert call(app, result.queue, "echo", args=[{"nested": [1, "two"]}]) == {"nested": [1, "two"]}
    finally:
        server.stop()


# The attempts are counted in a file named by the call: the worker runs on this machine, in this file system.
COUNTED = """
from pathlib import Path

counter = Path(counter_dir) / call
attempt = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(attempt))
"""
COUNTER_PARAMS = [{"name": "counter_dir", "type": "str"}, {"name": "call", "type": "str"}]


def test_retry_policy_under_a_key_prefix_and_a_serve_queue(settings: Settings, tmp_path: Path) -> None:
    """Retries: a named exception is tried again until it succeeds, or fails after max_retries with its own type and
    the attempts recorded; any other exception fails at once. The retried calls stay on the queue the call came by
    (a deployed version's own), and every key stays under the worker's prefix."""
    prefix = f"{settings.metadata_prefix}t:flaky_fetch:{uuid.uuid4().hex[:6]}:"
    retry = {"on": ["ConnectionError"], "max_retries": 3, "backoff_s": 0}
    result = generate_task_folder(
        settings,
        task_name="flaky_fetch",
        description="Fails with ConnectionError on its first two attempts.",
        parameters=COUNTER_PARAMS,
        function_body=COUNTED + "if attempt < 3:\n    raise ConnectionError(f'attempt {attempt} failed')\n"
        "return {'attempts': attempt}",
        queue="retries",
        retry=retry,
        tasks=[
            {
                "task_name": "always_down",
                "parameters": COUNTER_PARAMS,
                "function_body": COUNTED + "raise ConnectionRefusedError(f'attempt {attempt}: refused')",
                "retry": {**retry, "max_retries": 2, "backoff_s": 0.25},  # tried again after 0.25 s, then 0.5 s
            },
            {
                "task_name": "bad_value",
                "parameters": COUNTER_PARAMS,
                "function_body": COUNTED + "raise ValueError(f'attempt {attempt}: not retried')",
                "retry": retry,
            },
        ],
    )
    counters = tmp_path / "counters"
    counters.mkdir()
    serve = f"retries-{uuid.uuid4().hex[:6]}"
    backend = redis.Redis(host="127.0.0.1", port=settings.redis_port, db=settings.redis_backend_db)
    with (
        create_celery_app(settings, key_prefix=prefix) as app,
        running_worker(result, settings, app, tmp_path / "logs", serve_queue=serve, key_prefix=prefix),
    ):
        flaky = send(app, serve, "flaky_fetch", args=[str(counters), "flaky"])
        assert flaky.get(timeout=RESULT_TIMEOUT_S) == {"attempts": 3}
        assert backend.get(f"{prefix}mcs-deliveries:{flaky.id}") == b"3"
        assert backend.get(f"{prefix}mcs-attempts:{flaky.id}") is None  # it succeeded

        started = time.monotonic()
        down = send(app, serve, "always_down", args=[str(counters), "down"])
        down.get(timeout=RESULT_TIMEOUT_S, propagate=False)
        assert time.monotonic() - started >= 0.75
        assert down.state == "FAILURE" and type(down.result) is ConnectionRefusedError
        assert str(down.result) == "attempt 3: refused"  # the original exception of the last attempt
        assert (counters / "down").read_text() == "3"
        assert backend.get(f"{prefix}mcs-attempts:{down.id}") == b"3"
        assert 0 < backend.ttl(f"{prefix}mcs-attempts:{down.id}") <= 86400

        bad = send(app, serve, "bad_value", args=[str(counters), "bad"])
        bad.get(timeout=RESULT_TIMEOUT_S, propagate=False)
        assert bad.state == "FAILURE" and type(bad.result) is ValueError and str(bad.result) == "attempt 1: not retried"
        assert (counters / "bad").read_text() == "1"
        assert backend.get(f"{prefix}mcs-attempts:{bad.id}") is None
        assert backend.get(f"{prefix}mcs-deliveries:{bad.id}") == b"1"

        # A call MCS cancelled while no worker listened: the revocation is under the prefix, the worker skips it.
        cancelled_id = str(uuid.uuid4())
        backend.zadd(f"{prefix}mcs-revoked", {cancelled_id: time.time()})
        skipped = app.send_task("mcp_app.bad_value", args=[str(counters), "cancelled"], queue=serve,
                                task_id=cancelled_id)  # fmt: skip
        after = send(app, serve, "flaky_fetch", args=[str(counters), "after"])  # served after the skipped one
        after.get(timeout=RESULT_TIMEOUT_S, propagate=False)
        assert not (counters / "cancelled").exists()  # its body never ran
        assert backend.get(f"{prefix}mcs-deliveries:{skipped.id}") == b"1"  # it was delivered, and ignored
    for call in (flaky, down, bad):  # nothing of these calls outside the prefix
        assert all(key.decode().startswith(prefix) for key in backend.scan_iter(match=f"*{call.id}*"))
    assert list(backend.scan_iter(match=f"*mcs-attempts:{down.id}")) == [f"{prefix}mcs-attempts:{down.id}".encode()]
    backend.close()
