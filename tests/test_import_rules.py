"""The import rule: layers import downward only, and each foreign library is reached from its one boundary.

    mcs.core            the foundation: standard library, pydantic, pydantic-settings (celery only inside functions)
    Redis               every Redis read and write; imports mcs.core
    deploy_mcp          the deploy worker and runtimes; imports mcs.core and Redis (Docker only in deploy_mcp.docker
                        and deploy_mcp.swarm)
    mcs (services)      invoker, deploy client, codegen, stack, demo, dashboard; imports mcs.core and Redis
                        (the dashboard's web stack, templates and metrics only in mcs.dashboard)
    mcs.tools           the MCP tools, thin adapters over the services
    mcp_app, mcp_server the entry points

The rule is checked on the syntax tree of every module (``ast``), so it holds for imports inside functions too;
imports under ``if TYPE_CHECKING:`` are annotations only and are not counted.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mcs.core.settings import PROJECT_ROOT

pytestmark = pytest.mark.unit

#: layer -> the project layers it may import (its own included).
ALLOWED: dict[str, set[str]] = {
    "mcs.core": {"mcs.core"},
    "Redis": {"mcs.core", "Redis"},
    "deploy_mcp": {"mcs.core", "Redis", "deploy_mcp"},
    "mcs": {"mcs.core", "Redis", "mcs"},
    "mcs.tools": {"mcs.core", "Redis", "mcs", "mcs.tools"},
    "mcp_app": {"mcs.core"},
    "mcp_server": {"mcs.core", "Redis", "mcs", "mcs.tools"},
}
#: foreign library -> the layers (or packages) that may import it. Libraries not listed are free to use.
BOUNDARIES: dict[str, tuple[str, ...]] = {
    "redis": ("Redis",),
    "docker": ("deploy_mcp.docker", "deploy_mcp.swarm"),
    "requests": ("deploy_mcp.docker",),  # docker-py's transport errors
    "mcp": ("mcs.tools", "mcp_server", "mcs.demo"),
    # the dashboard's web stack, templates and metrics stay in the dashboard
    "starlette": ("mcs.dashboard",),
    "uvicorn": ("mcs.dashboard",),
    "jinja2": ("mcs.dashboard",),
    "prometheus_client": ("mcs.dashboard",),
}
#: what mcs.core may import at module level besides the standard library and itself.
CORE_TOP_LEVEL = {"pydantic", "pydantic_settings", "pydantic_core", "dotenv"}
SKIPPED = {"tests", "bench", "generated_tasks", "templates", "deployments", ".venv", ".git", ".mcs"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted
    line: int
    top_level: bool


def layer_of(module: str) -> str | None:
    """The layer a dotted module belongs to: the longest matching prefix of ALLOWED."""
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def project_modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if parts[0] in SKIPPED or any(p.startswith(".") for p in parts):
            continue
        dotted = ".".join(parts)[:-3].removesuffix(".__init__")
        found[dotted] = path
    return found


def imports_of(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other, top_level)
                continue
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, child.lineno, top_level) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against the importing package
                    own = module.split(".") + (["__init__"] if path.name == "__init__.py" else [])
                    base = own[: -child.level]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                found.append(Import(module, target, child.lineno, top_level))
            inner = top_level and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, inner)

    visit(tree, True)
    return found


def violations(root: Path) -> list[str]:
    """Every import that breaks the rule, as 'file:line: module imports target (why)'."""
    modules = project_modules(root)
    project_tops = {m.split(".")[0] for m in modules}
    broken = []
    for module, path in sorted(modules.items()):
        own = layer_of(module)
        if own is None:
            continue
        for imp in imports_of(module, path):
            top = imp.target.split(".")[0]
            where = f"{path.relative_to(root)}:{imp.line}: {module} imports {imp.target}"
            if top in project_tops:
                target_layer = layer_of(imp.target)
                if target_layer is not None and target_layer not in ALLOWED[own]:
                    broken.append(f"{where} (layer {own} may import only {sorted(ALLOWED[own])})")
                continue
            allowed_in = BOUNDARIES.get(top)
            if allowed_in is not None and not any(module == b or module.startswith(b + ".") for b in allowed_in):
                broken.append(f"{where} ({top} is reached only from {', '.join(allowed_in)})")
            if own == "mcs.core" and imp.top_level and top not in sys.stdlib_module_names | CORE_TOP_LEVEL:
                broken.append(f"{where} (mcs.core imports only the standard library and pydantic at module level)")
    return broken


def test_the_project_keeps_the_import_rule() -> None:
    broken = violations(PROJECT_ROOT)
    assert not broken, "\n".join(broken)


def test_the_rule_sees_every_layer() -> None:
    layers = {layer_of(m) for m in project_modules(PROJECT_ROOT)}
    assert set(ALLOWED) <= layers, set(ALLOWED) - layers


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"mcs/core/a.py": "from Redis.registry import TaskRegistry\n", "Redis/registry.py": ""}, "layer mcs.core"),
        ({"Redis/a.py": "import mcs.invoker\n", "mcs/invoker.py": ""}, "layer Redis"),
        ({"deploy_mcp/a.py": "def f():\n    from mcs.codegen import x\n", "mcs/codegen.py": ""}, "layer deploy_mcp"),
        ({"mcs/stack.py": "from deploy_mcp.runtimes import select_runtime\n", "deploy_mcp/runtimes.py": ""}, "mcs"),
        ({"mcp_app.py": "import mcs.invoker\n", "mcs/invoker.py": ""}, "layer mcp_app"),
        ({"mcs/invoker.py": "import redis\n"}, "redis is reached only from Redis"),
        ({"deploy_mcp/deployer.py": "import docker\n"}, "docker is reached only from deploy_mcp.docker"),
        ({"mcs/core/a.py": "import celery\n"}, "mcs.core imports only the standard library"),
    ],
)
def test_a_planted_upward_import_is_caught(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    broken = violations(_tree(tmp_path, files))
    assert any(expected in line for line in broken), broken


def test_allowed_imports_pass(tmp_path: Path) -> None:
    files = {
        "mcs/core/a.py": "import json\nfrom pydantic import BaseModel\ndef f():\n    import celery\n",
        "Redis/a.py": "import redis\nfrom mcs.core.a import f\n",
        "deploy_mcp/docker/a.py": "import docker\nfrom Redis.a import x\n",
        "mcs/invoker.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from redis import Redis\n",
    }
    assert violations(_tree(tmp_path, files)) == []
