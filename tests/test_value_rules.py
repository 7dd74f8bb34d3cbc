"""One rule per kind of value: text that would split lines differently from Python is refused in function bodies
and helper files (what main_content shows is what runs), booleans are strict, and nothing is written on refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mcp import Client

from mcp_server import build_server
from mcs.core.errors import InvalidInput
from mcs.services import Services
from tests.helpers import make_settings
from tests.mcp_clients import data
from tests.test_codegen import ADD, gen

pytestmark = pytest.mark.unit

SPLITTERS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", SPLITTERS)
def test_line_splitters_are_refused_in_function_bodies(tmp_path: Path, char: str) -> None:
    settings = make_settings(tmp_path)
    body = f"x = 1\n{char}import os; os.system('id')\nreturn a + b"
    with pytest.raises(InvalidInput) as refused:
        gen(settings, function_body=body)
    assert refused.value.field == "function_body" and "line separator" in refused.value.rule
    assert not settings.generated_tasks_dir.exists() or not any(settings.generated_tasks_dir.iterdir())


@pytest.mark.parametrize("char", SPLITTERS)
def test_line_splitters_are_refused_in_helper_files(tmp_path: Path, char: str) -> None:
    files = [{"filename": "helper.py", "content": f"VALUE = 1{char}import os"}]
    with pytest.raises(InvalidInput) as refused:
        gen(make_settings(tmp_path), additional_files=files)
    assert refused.value.field == "additional_files[0].content"


def _call(tmp_path: Path, name: str, args: dict) -> dict:
    services = Services(make_settings(tmp_path))

    async def run():
        async with Client(build_server(services=services)) as client:
            return data(await client.call_tool(name, args))

    return asyncio.run(run())


@pytest.mark.parametrize("value", ["yes", "true", 1, "1"])
def test_booleans_are_strict(tmp_path: Path, value) -> None:
    overwrite = _call(tmp_path, "generate_startMain_code", {**ADD, "overwrite": value})
    assert overwrite["success"] is False and overwrite["error"] == "invalid_input" and overwrite["field"] == "overwrite"
    params = [{"name": "a", "type": "int", "required": value}]
    required = _call(tmp_path, "generate_startMain_code", {**ADD, "parameters": params})
    assert required["success"] is False and "required" in required["field"]
