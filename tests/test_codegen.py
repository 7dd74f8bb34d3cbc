"""Unit tests of generate_startMain_code's core (mcs.codegen): rendering, validation, atomic writes. No services."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from celery import _state as celery_state

import mcs.codegen as codegen
from mcs.codegen import GeneratedTask, generate_task_folder
from mcs.core.celery_app import task_worker_config
from mcs.core.errors import Conflict, InvalidInput, MCSError
from mcs.core.settings import Settings
from mcs.core.worker_image import render_dockerfile
from tests.helpers import make_settings

pytestmark = [
    pytest.mark.unit,
    # Several generated apps are loaded in this process: none may see another's tasks.
    pytest.mark.filterwarnings("error::celery.exceptions.DuplicateTaskNameWarning"),
]

ADD = {
    "task_name": "add_numbers",
    "description": "Add two numbers.",
    "parameters": [
        {"name": "a", "type": "int", "required": True, "description": "first"},
        {"name": "b", "type": "int", "required": True, "description": "second"},
    ],
    "function_body": "return a + b",
    "queue": "math",
    "return_type": "int",
}


@pytest.fixture
def s(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def gen(settings: Settings, **overrides: Any) -> GeneratedTask:
    return generate_task_folder(settings, **{**ADD, **overrides})


def entries(settings: Settings) -> list[str]:
    """Everything in generated_tasks_dir, hidden temp folders included."""
    base = Path(settings.generated_tasks_dir)
    return sorted(os.listdir(base)) if base.exists() else []


@pytest.fixture
def load_app(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Import a generated app_{queue}.py in this process; sys.path, sys.modules and Celery's current app restored."""
    saved_path, saved_app = list(sys.path), celery_state.get_current_app()
    loaded: list[str] = []
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", "6399")

    def load(result: GeneratedTask) -> Any:
        name = result.main_file.removesuffix(".py")
        sys.path.insert(0, result.folder)
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    sys.path[:] = saved_path
    for name in loaded:
        sys.modules.pop(name, None)
    celery_state._set_current_app(saved_app)


# --- rendering -------------------------------------------------------------------------------------------------


def test_simple_task_folder_layout_and_result(s: Settings) -> None:
    result = gen(s)
    folder = Path(result.folder)
    assert folder == Path(s.generated_tasks_dir).resolve() / "add_numbers_math"
    assert result.files == ["Dockerfile", "README.md", "app_math.py", "mcs.json", "requirements.txt"]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == result.files
    assert result.main_file == "app_math.py"
    assert (folder / "app_math.py").read_text().endswith(result.main_content)  # the task functions, by default
    assert result.main_content.startswith("@celery_app.task(")
    assert (folder / "requirements.txt").read_text() == ""
    assert result.success and result.tasks == ["add_numbers"] and not result.replaced
    assert result.manifest == "mcs.json"
    assert (
        "@celery_app.task(name='mcp_app.add_numbers', queue='math', shared=False, mcs_retry=None)"
        in result.main_content
    )
    assert "def add_numbers(a: int, b: int) -> int:" in result.main_content
    steps = " ".join(result.next_steps)
    for expected in ("deploy_task(task_name='add_numbers', queue='math')", "mcs.json", "trigger_celery_task(",
                     "registered", "Review"):  # fmt: skip
        assert expected in steps
    assert "register_task_info" not in steps and "description=..." not in steps
    assert result.folder in steps
    assert "deploy_task(task_name='add_numbers', queue='math')" in result.message
    assert entries(s) == ["add_numbers_math"]


def test_generated_app_applies_mcs_celery_config_and_signature(tmp_path: Path, load_app) -> None:
    settings = make_settings(tmp_path, task_soft_time_limit_s=7, task_time_limit_s=9, result_expires_s=120)
    result = gen(settings)
    module = load_app(result)
    app = module.celery_app
    for key, value in task_worker_config(settings).items():
        assert app.conf[key] == value, key
    assert app.conf.worker_send_task_events is True  # the dashboard hears its calls (mcs.dashboard.events)
    assert app.conf.broker_url == "redis://127.0.0.1:6399/0"
    assert app.conf.result_backend == "redis://127.0.0.1:6399/1"
    task = app.tasks["mcp_app.add_numbers"]
    assert task.queue == "math"
    assert task.run(2, 3) == 5
    assert str(inspect.signature(module.add_numbers.run)) == "(a: int, b: int) -> int"
    assert module.add_numbers.__doc__.startswith("Add two numbers.")


def test_redis_password_read_from_environment_and_percent_encoded(tmp_path: Path, monkeypatch, load_app) -> None:
    settings = make_settings(tmp_path, redis_password="s3cret-in-settings")
    result = gen(settings)
    for path in result.files:
        assert "s3cret-in-settings" not in (Path(result.folder) / path).read_text()
    assert 'REDIS_PASSWORD")' in app_file(result)  # read without any default value
    monkeypatch.setenv("REDIS_PASSWORD", "p/@:%#w")
    monkeypatch.setenv("REDIS_BROKER_DB", "3")
    app = load_app(result).celery_app
    assert app.conf.broker_url == "redis://:p%2F%40%3A%25%23w@127.0.0.1:6399/3"


def test_signature_orders_required_first_with_defaults_and_type_hints(s: Settings, load_app) -> None:
    result = gen(
        s,
        task_name="search",
        parameters=[
            {"name": "limit", "type": "int", "required": False, "default": 10},
            {"name": "query", "type": "str"},
            {"name": "tags", "type": "typing.Optional[list[str]]", "required": False},
            {"name": "mode", "type": "Literal['fast', 'exact']", "required": False, "default": "fast"},
            {"name": "filters", "type": "dict[str, Any] | None", "required": True},
            {"name": "options", "type": "Dict[str, int]", "required": False, "default": {"depth": 2}},
        ],
        function_body="return [query, filters, limit, tags, mode, options]",
        return_type="List[Any]",
    )
    assert (
        "def search(query: str, filters: dict[str, Any] | None, limit: int = 10, tags: Optional[list[str]] = None, "
        "mode: Literal['fast', 'exact'] = 'fast', options: Dict[str, int] = {'depth': 2}) -> List[Any]:"
    ) in result.main_content
    assert "from typing import Any, Dict, List, Literal, Optional\n" in app_file(result)
    module = load_app(result)
    signature = inspect.signature(module.search.run)
    assert list(signature.parameters) == ["query", "filters", "limit", "tags", "mode", "options"]
    assert signature.parameters["tags"].annotation == Optional[list[str]]  # noqa: UP045 (the rendered form)
    assert module.search.run("q", None) == ["q", None, 10, None, "fast", {"depth": 2}]


@pytest.mark.parametrize(
    "body",
    [
        "return a + b",
        "\n    total = a + b\n    return total\n    ",  # the seed's style: leading newline, 4-space indentation
        "\n        if a:\n            return a + b\n        return b\n",
        "if a:\n\treturn a + b\nreturn b",  # tabs
        "\r\n  x = a\r\n  return x + b\r\n",  # CRLF, 2-space indentation
        "\n".join(f"v{i} = {i}" for i in range(300)) + "\nreturn a + b + v0",
    ],
)
def test_body_is_indented_whatever_its_own_indentation(s: Settings, load_app, body: str) -> None:
    module = load_app(gen(s, function_body=body))
    assert module.add_numbers.run(2, 3) == 5


def test_multi_line_strings_in_body_are_kept_verbatim(s: Settings, load_app) -> None:
    body = '\n    text = """\nfirst\n  second\n"""\n    return text + f"""{a}\n{b}"""\n'
    module = load_app(gen(s, function_body=body, return_type="str"))
    assert module.add_numbers.run(1, 2) == "\nfirst\n  second\n1\n2"


def test_extra_tasks_share_the_folder_and_queue(s: Settings, load_app) -> None:
    result = gen(
        s,
        tasks=[
            {"task_name": "mul", "description": "Multiply.", "parameters": ADD["parameters"],
             "function_body": "return a * b", "return_type": "int"},
            {"task_name": "neg", "parameters": [{"name": "x", "type": "float"}], "function_body": "return -x"},
        ],
    )  # fmt: skip
    assert result.tasks == ["add_numbers", "mul", "neg"]
    app = load_app(result).celery_app
    assert {app.tasks[f"mcp_app.{n}"].queue for n in result.tasks} == {"math"}
    assert app.tasks["mcp_app.mul"].run(3, 4) == 12
    assert app.tasks["mcp_app.neg"].run(1.5) == -1.5
    steps = " ".join(result.next_steps)
    assert "register_task_info" not in steps
    assert "registers every task of the folder: 'add_numbers', 'mul', 'neg'" in steps


def test_additional_files_with_subfolders_are_importable(s: Settings, load_app) -> None:
    result = gen(
        s,
        function_body="from helpers import double\nfrom pkg.util import inc\nreturn inc(double(a)) + b",
        additional_files=[
            {"filename": "helpers.py", "content": "def double(x):\n    return 2 * x\n"},
            {"filename": "pkg/util.py", "content": "def inc(x):\n    return x + 1\n"},
            {"filename": "pkg/data/table.csv", "content": "a,b\n1,2\n"},
        ],
    )
    assert result.files == [
        "Dockerfile", "README.md", "app_math.py", "helpers.py", "mcs.json", "pkg/data/table.csv", "pkg/util.py",
        "requirements.txt",
    ]  # fmt: skip
    folder = Path(result.folder)
    assert (folder / "pkg" / "data" / "table.csv").read_text() == "a,b\n1,2\n"
    assert oct((folder / "pkg").stat().st_mode & 0o777) == "0o755"
    assert oct((folder / "pkg" / "util.py").stat().st_mode & 0o777) == "0o644"
    assert load_app(result).add_numbers.run(2, 3) == 8
    assert "`pkg/util.py`" in (folder / "README.md").read_text()


def test_requirements_are_written_one_a_line(s: Settings) -> None:
    result = gen(s, requirements=["requests==2.32.3", "PyYAML==6.0.1", "requests-toolbelt[x]==1.0.0"])
    assert (Path(result.folder) / "requirements.txt").read_text() == (
        "requests==2.32.3\nPyYAML==6.0.1\nrequests-toolbelt[x]==1.0.0\n"
    )
    assert result.requirements == ["requests==2.32.3", "PyYAML==6.0.1", "requests-toolbelt[x]==1.0.0"]
    dockerfile = (Path(result.folder) / "Dockerfile").read_text()
    assert "ARG MCS_DEPS_IMAGE\nFROM ${MCS_DEPS_IMAGE}\n" in dockerfile and "/app/wheelhouse" not in dockerfile


def test_chinese_description_stays_readable(s: Settings, load_app) -> None:
    result = gen(s, description="两数相加")
    assert "'两数相加\\n'" in result.main_content
    assert load_app(result).add_numbers.__doc__.startswith("两数相加")


# --- injection attempts ------------------------------------------------------------------------------------------

EVIL = '"""\nimport os; os.system("id")\n"""\'\'\'\\\n# \u2028 \x0c end'


def test_descriptions_cannot_inject_code(s: Settings, load_app) -> None:
    result = gen(
        s,
        description=EVIL,
        parameters=[{"name": "a", "type": "int", "description": EVIL}, {"name": "b", "type": "int"}],
        tasks=[{"task_name": "other", "description": EVIL, "function_body": "return 1"}],
    )
    tree = ast.parse(app_file(result))
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not any("system" in call for call in calls)
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imports == [
        "import os as _os", "import sys as _sys", "from urllib.parse import quote as _quote",
        "from celery import Celery as _Celery", "from celery import Task as _Task",
        "from celery import signals as _signals",
        "from celery.exceptions import Ignore as _Ignore", "from typing import Any",
    ]  # fmt: skip
    module = load_app(result)
    assert module.add_numbers.__doc__.startswith(EVIL + "\n")
    assert f"a (int): {EVIL}" in module.add_numbers.__doc__
    assert module.other.__doc__.startswith(EVIL)


def test_defaults_are_rendered_as_literals(s: Settings, load_app) -> None:
    evil = "'); __import__('os').system('id'); ('"
    result = gen(s, parameters=[{"name": "a", "type": "str", "required": False, "default": evil}],
                 function_body="return a", return_type="str")  # fmt: skip
    assert load_app(result).add_numbers.run() == evil


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"task_name": "x(); import os"}, "task_name"),
        ({"task_name": "../../etc"}, "task_name"),
        ({"queue": "q'); import os #"}, "queue"),
        ({"return_type": "int:\n    import os\n    return 1\ndef f() -> int"}, "return_type"),
        ({"return_type": "int  # comment"}, None),  # accepted: only the parsed tree is rendered
        ({"parameters": [{"name": "a=__import__('os')", "type": "int"}]}, "parameters[0].name"),
        ({"parameters": [{"name": "a", "type": "int = __import__('os').getpid()"}]}, "parameters[0].type"),
    ],
)
def test_names_and_types_cannot_inject_code(s: Settings, overrides: dict, field: str | None) -> None:
    if field is None:
        assert "-> int:" in gen(s, **overrides).main_content
        return
    with pytest.raises(InvalidInput) as info:
        gen(s, **overrides)
    assert info.value.field == field
    assert entries(s) == []


# --- validation errors: a clear error and nothing written ----------------------------------------------------------

P = ADD["parameters"]
BAD_INPUTS = {
    "body syntax error": ({"function_body": "return a +"}, "function_body"),
    "empty body": ({"function_body": "  \n "}, "function_body"),
    "generator body": ({"function_body": "yield a"}, "function_body"),
    "parameter named class": ({"parameters": [{"name": "class", "type": "int"}]}, "parameters[0].name"),
    "parameter name not ascii": ({"parameters": [{"name": "ａ", "type": "int"}]}, "parameters[0].name"),
    "duplicate parameter": ({"parameters": [P[0], P[1], P[0]]}, "parameters[2].name"),
    "parameter unknown key": ({"parameters": [{"name": "a", "kind": "int"}]}, "parameters[0].kind"),
    "parameter not a dict": ({"parameters": ["a"]}, "parameters[0]"),
    "required with default": ({"parameters": [{"name": "a", "default": 1}]}, "parameters[0].default"),
    "default not finite": (
        {"parameters": [{"name": "a", "required": False, "default": float("nan")}]},
        "parameters[0].default",
    ),
    "default not json": (
        {"parameters": [{"name": "a", "required": False, "default": {1: 2}}]},
        "parameters[0].default",
    ),
    "type call": ({"parameters": [{"name": "a", "type": "os.system('x')"}]}, "parameters[0].type"),
    "type unknown name": ({"parameters": [{"name": "a", "type": "Foo"}]}, "parameters[0].type"),
    "type import": ({"parameters": [{"name": "a", "type": "__import__('os')"}]}, "parameters[0].type"),
    "type lambda": ({"parameters": [{"name": "a", "type": "lambda: int"}]}, "parameters[0].type"),
    "type string": ({"parameters": [{"name": "a", "type": "'int'"}]}, "parameters[0].type"),
    "type attribute": ({"parameters": [{"name": "a", "type": "typing.re"}]}, "parameters[0].type"),
    "type bad subscript": ({"parameters": [{"name": "a", "type": "int[str]"}]}, "parameters[0].type"),
    "type bad arity": ({"parameters": [{"name": "a", "type": "Optional[int, str]"}]}, "parameters[0].type"),
    "type not syntax": ({"parameters": [{"name": "a", "type": "list[int"}]}, "parameters[0].type"),
    "return type": ({"return_type": "Foo"}, "return_type"),
    "task name upper": ({"task_name": "AddNumbers"}, "task_name"),
    "task name builtin": ({"task_name": "sum"}, "task_name"),
    "task name app": ({"task_name": "celery_app"}, "task_name"),
    "task name keyword": ({"task_name": "class"}, "task_name"),
    "queue": ({"queue": "Math"}, "queue"),
    "overwrite not a bool": ({"overwrite": "false"}, "overwrite"),
    "description too long": ({"description": "x" * 2001}, "description"),
    "extra task same name": (
        {"tasks": [{"task_name": "add_numbers", "function_body": "return 1"}]},
        "tasks[0].task_name",
    ),
    "extra task unknown key": (
        {"tasks": [{"task_name": "t", "function_body": "return 1", "queue": "x"}]},
        "tasks[0].queue",
    ),
    "extra task syntax": ({"tasks": [{"task_name": "t", "function_body": "return ("}]}, "tasks[0].function_body"),
    "extra task bad type": (
        {"tasks": [{"task_name": "t", "function_body": "return 1", "return_type": "X"}]},
        "tasks[0].return_type",
    ),
    "file parent": ({"additional_files": [{"filename": "../x.py", "content": ""}]}, "additional_files[0].filename"),
    "file absolute": ({"additional_files": [{"filename": "/etc/x", "content": ""}]}, "additional_files[0].filename"),
    "file Dockerfile": (
        {"additional_files": [{"filename": "Dockerfile", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file requirements": (
        {"additional_files": [{"filename": "Requirements.TXT", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file app": ({"additional_files": [{"filename": "app_math.py", "content": ""}]}, "additional_files[0].filename"),
    "file readme": ({"additional_files": [{"filename": "README.md", "content": ""}]}, "additional_files[0].filename"),
    "file wheelhouse": (
        {"additional_files": [{"filename": "wheelhouse/x.txt", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file dockerignore": (
        {"additional_files": [{"filename": ".dockerignore", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file hidden": (
        {"additional_files": [{"filename": "pkg/.env.txt", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file inner parent": (
        {"additional_files": [{"filename": "pkg/../x.py", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file empty segment": (
        {"additional_files": [{"filename": "pkg//x.py", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file backslash": (
        {"additional_files": [{"filename": "pkg\\x.py", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file nul": ({"additional_files": [{"filename": "x\x00.py", "content": ""}]}, "additional_files[0].filename"),
    "file not ascii": ({"additional_files": [{"filename": "héllo.py", "content": ""}]}, "additional_files[0].filename"),
    "file percent dots": (
        {"additional_files": [{"filename": "%2e%2e/x.py", "content": ""}]},
        "additional_files[0].filename",
    ),
    "files not a list": ({"additional_files": {"filename": "x.py"}}, "additional_files"),
    "parameters not a list": ({"parameters": "a, b"}, "parameters"),
    "tasks not a list": ({"tasks": {"task_name": "t"}}, "tasks"),
    "file binary type": ({"additional_files": [{"filename": "x.so", "content": ""}]}, "additional_files[0].filename"),
    "file script": ({"additional_files": [{"filename": "run.sh", "content": ""}]}, "additional_files[0].filename"),
    "file shadows stdlib": (
        {"additional_files": [{"filename": "json.py", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file shadows celery": (
        {"additional_files": [{"filename": "celery/__init__.py", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file too deep": (
        {"additional_files": [{"filename": "a/b/c/d/e/f.py", "content": ""}]},
        "additional_files[0].filename",
    ),
    "file duplicate": (
        {"additional_files": [{"filename": "h.py", "content": ""}, {"filename": "H.py", "content": ""}]},
        "additional_files[1].filename",
    ),
    "file and folder": (
        {"additional_files": [{"filename": "h.txt", "content": ""}, {"filename": "h.txt/x.py", "content": ""}]},
        "additional_files",
    ),
    "file too large": (
        {"additional_files": [{"filename": "big.txt", "content": "x" * (256 * 1024 + 1)}]},
        "additional_files[0].content",
    ),
    "file nul content": (
        {"additional_files": [{"filename": "h.txt", "content": "a\x00b"}]},
        "additional_files[0].content",
    ),
    "file syntax": (
        {"additional_files": [{"filename": "pkg/h.py", "content": "x = 1\ndef f(:\n"}]},
        "additional_files[0].content",
    ),
    "file unknown key": (
        {"additional_files": [{"filename": "h.py", "content": "", "mode": "755"}]},
        "additional_files[0].mode",
    ),
    "too many files": (
        {"additional_files": [{"filename": f"f{i}.txt", "content": ""} for i in range(51)]},
        "additional_files",
    ),
    "requirement editable": ({"requirements": ["-e git+https://example.com/x.git#egg=x"]}, "requirements[0]"),
    "requirement option": ({"requirements": ["--index-url=https://example.com"]}, "requirements[0]"),
    "requirement unpinned": ({"requirements": ["requests"]}, "requirements[0]"),
    "requirement range": ({"requirements": ["requests>=2"]}, "requirements[0]"),
    "requirement wildcard": ({"requirements": ["requests==2.*"]}, "requirements[0]"),
    "requirement url": ({"requirements": ["x @ https://example.com/x.whl"]}, "requirements[0]"),
    "requirement path": ({"requirements": ["./local/pkg"]}, "requirements[0]"),
    "requirement marker": ({"requirements": ["requests==2.0; python_version<'3'"]}, "requirements[0]"),
    "requirement newline": ({"requirements": ["requests==2.0\n--pre"]}, "requirements[0]"),
    "requirement base image": ({"requirements": ["Celery==5.3.0"]}, "requirements[0]"),
    "requirement duplicate": ({"requirements": ["py_yaml==1.0", "Py.YAML==2.0"]}, "requirements[1]"),
}


@pytest.mark.parametrize(("overrides", "field"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_invalid_input_is_refused_and_nothing_is_written(s: Settings, overrides: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        gen(s, **overrides)
    assert info.value.field == field
    assert info.value.rule and str(info.value).startswith(f"invalid {field} ")
    assert entries(s) == []
    assert not Path(s.generated_tasks_dir).exists()


def test_refusal_leaves_existing_folders_untouched(s: Settings) -> None:
    gen(s)
    before = (Path(s.generated_tasks_dir) / "add_numbers_math" / "app_math.py").read_text()
    with pytest.raises(InvalidInput):
        gen(s, function_body="return (", overwrite=True)
    assert entries(s) == ["add_numbers_math"]
    assert (Path(s.generated_tasks_dir) / "add_numbers_math" / "app_math.py").read_text() == before


def test_syntax_error_in_body_reports_file_and_line(s: Settings) -> None:
    body = "\n    total = a + b\n    if total >\n        return 1\n    return total\n"
    with pytest.raises(InvalidInput) as info:
        gen(s, function_body=body)
    error = info.value
    assert error.details["file"] == "app_math.py"
    assert error.details["task"] == "add_numbers"
    assert error.details["body_line"] == 3  # the caller's own numbering: line 1 is the leading empty line
    rendered_line = error.details["line"]
    assert f"app_math.py line {rendered_line} (line 3 of the function_body of task 'add_numbers')" in str(error)
    assert "if total >" in str(error)
    assert error.to_dict()["error"] == "invalid_input"


def test_syntax_error_in_second_task_names_that_task(s: Settings) -> None:
    with pytest.raises(InvalidInput) as info:
        gen(s, tasks=[{"task_name": "ok", "function_body": "return 1"},
                      {"task_name": "bad", "function_body": "x = 1\nreturn x x"}])  # fmt: skip
    assert info.value.field == "tasks[1].function_body"
    assert (info.value.details["task"], info.value.details["body_line"]) == ("bad", 2)


def test_indentation_error_in_body_is_reported(s: Settings) -> None:
    with pytest.raises(InvalidInput) as info:
        gen(s, function_body="x = 1\n        return x")
    assert info.value.details["body_line"] == 2
    assert "unexpected indent" in str(info.value)


def test_syntax_error_in_helper_file_reports_its_path_and_line(s: Settings) -> None:
    with pytest.raises(InvalidInput) as info:
        gen(s, additional_files=[{"filename": "pkg/h.py", "content": "x = 1\n\ndef f(:\n    pass\n"}])
    assert (info.value.details["file"], info.value.details["line"]) == ("pkg/h.py", 3)
    assert "syntax error at pkg/h.py line 3" in str(info.value)


def test_compiler_warnings_are_returned(s: Settings) -> None:
    result = gen(s, function_body="return len('\\d') + a + b")
    assert result.warnings and "line 1 of the function_body of task 'add_numbers'" in result.warnings[0]


def test_folder_over_the_payload_limit_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_payload_bytes=4096)
    with pytest.raises(InvalidInput) as info:
        gen(settings, additional_files=[{"filename": "data.txt", "content": "x" * 4096}])
    assert "at most 4096 bytes" in str(info.value)
    assert entries(settings) == []


# --- overwrite and atomic writes ---------------------------------------------------------------------------------


def test_overwrite_refused_then_allowed(s: Settings) -> None:
    first = gen(s, additional_files=[{"filename": "old.txt", "content": "old"}])
    with pytest.raises(Conflict) as info:
        gen(s, function_body="return a - b")
    assert "overwrite=true" in str(info.value)
    assert (Path(first.folder) / "old.txt").exists()
    second = gen(s, function_body="return a - b", overwrite=True)
    assert second.replaced and second.folder == first.folder
    assert "return a - b" in (Path(second.folder) / "app_math.py").read_text()
    assert not (Path(second.folder) / "old.txt").exists()
    assert entries(s) == ["add_numbers_math"]  # no temp or old folder left behind


def test_failed_swap_keeps_the_old_folder(s: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    first = gen(s)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name.startswith(codegen.TEMP_PREFIX):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(codegen.os, "rename", rename)
    with pytest.raises(OSError):
        gen(s, function_body="return a - b", overwrite=True)
    assert entries(s) == ["add_numbers_math"]
    assert (Path(first.folder) / "app_math.py").read_text() == app_file(first)


def test_failed_write_leaves_no_temp_folder(s: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(codegen, "_fsync_dir", fail)
    with pytest.raises(OSError):
        gen(s)
    assert entries(s) == []


def test_new_folder_appears_complete_in_one_rename(s: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[str]]] = []
    real_rename = os.rename

    def rename(src, dst):
        seen.append((Path(dst).name, sorted(os.listdir(src))))
        return real_rename(src, dst)

    monkeypatch.setattr(codegen.os, "rename", rename)
    gen(s)
    assert seen == [("add_numbers_math", ["Dockerfile", "README.md", "app_math.py", "mcs.json", "requirements.txt"])]


def test_symlink_in_place_of_the_folder_is_not_followed(s: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    Path(s.generated_tasks_dir).mkdir(parents=True)
    (Path(s.generated_tasks_dir) / "add_numbers_math").symlink_to(outside)
    with pytest.raises(Conflict):
        gen(s, overwrite=True)
    assert list(outside.iterdir()) == []
    assert entries(s) == ["add_numbers_math"]


# --- Dockerfile ----------------------------------------------------------------------------------------------------


def test_dockerfile_without_requirements(s: Settings) -> None:
    text = render_dockerfile(s, "math", has_requirements=False)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "pip" not in text and "ARG" not in text
    # What does not depend on the task's files first (the layer cache serves it), then COPY, chmod, the user.
    assert lines[:4] == ["FROM mcs-base:bookworm-py311", "USER root", "WORKDIR /app", lines[3]]
    assert lines[3] == "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1"
    command = json.loads(lines[4].removeprefix("CMD "))
    assert command[:6] == ["celery", "-A", "app_math", "worker", "-Q", "math"]
    assert lines[5:] == ["COPY --chown=0:0 . /app", 'RUN ["chmod", "-R", "u=rwX,go=rX", "/app"]', "USER 10001:10001"]
    assert not any(line.startswith("ENV") and "REDIS" in line for line in lines)


def test_dockerfile_with_requirements_builds_on_the_dependency_image(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, worker_base_image="registry.local:5000/mcs-base:1.2", redis_password="pw-x")
    text = render_dockerfile(settings, "math", has_requirements=True)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    # The requirements are installed in the dependency image (the build argument), never in a step of this one.
    assert lines[:2] == ["ARG MCS_DEPS_IMAGE", "FROM ${MCS_DEPS_IMAGE}"]
    plain = render_dockerfile(settings, "math", has_requirements=False).splitlines()
    assert lines[2:] == [line for line in plain if line and not line.startswith("#")][1:]
    assert not any("pip" in line or "wheelhouse" in line for line in lines)
    # The install recipe is part of the text (so of the version): offline, without pip's cache.
    pip = [
        "/opt/venv/bin/pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
        "--find-links", "/mcs-wheelhouse", "-r", "/mcs-wheelhouse/requirements.txt",
    ]  # fmt: skip
    assert "#   " + json.dumps(pip) in text.splitlines()
    assert "registry.local:5000/mcs-base:1.2 plus" in text
    assert "pw-x" not in text


@pytest.mark.parametrize("image", ["mcs-base:1\nRUN curl evil", "", "-x", "base image", "a" * 300])
def test_dockerfile_refuses_a_strange_base_image(tmp_path: Path, image: str) -> None:
    with pytest.raises(InvalidInput) as info:
        render_dockerfile(make_settings(tmp_path, worker_base_image=image), "math", has_requirements=False)
    assert info.value.field == "worker_base_image"


def test_dockerfile_refuses_a_bad_queue(s: Settings) -> None:
    with pytest.raises(InvalidInput):
        render_dockerfile(s, 'q"]\nRUN id', has_requirements=False)


def test_errors_are_mcs_errors(s: Settings) -> None:
    with pytest.raises(MCSError):
        gen(s, task_name="Bad")


def app_file(result) -> str:
    """The whole generated app file (main_content shows the task functions only)."""
    return (Path(result.folder) / result.main_file).read_text()
