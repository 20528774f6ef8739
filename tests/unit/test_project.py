"""Project rules that are easy to break silently: layering, and docs generated from code."""

from __future__ import annotations

import ast
from pathlib import Path

from statemachine.status import SyncStatus
from statemachine.table import STATUS_ROLES, mermaid

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_statemachine_is_pure_and_never_imports_events() -> None:
    forbidden = {"events", "asyncio", "asyncpg", "aiokafka", "socket", "subprocess"}
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & forbidden)
        for path in sorted((ROOT / "statemachine").glob("*.py"))
        if _imports(path) & forbidden
    }
    assert offenders == {}


def test_readme_diagram_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- diagram:start -->")
    end = readme.index("<!-- diagram:end -->")
    block = readme[start:end]
    assert mermaid().strip() in block, "README diagram is stale: paste `synclife diagram`"


def test_every_status_has_a_documented_role_in_the_contract() -> None:
    contract = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    assert set(STATUS_ROLES) == set(SyncStatus)
    for status, role in STATUS_ROLES.items():
        assert f"| `{status.value}` | {role} |" in contract, status
