"""The layout's rules that `lint-imports` alone cannot see: which modules are the client, and
that each module stays small enough to have one job."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 500


def _contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def test_every_root_module_of_events_is_held_to_the_client_contracts() -> None:
    """A module added at the root of ``events`` is client code: the contracts must name it,
    or it could import the service unseen."""
    root_modules = {
        f"events.{path.stem}"
        for path in (ROOT / "events").glob("*.py")
        if path.stem not in ("__init__", "__main__")
    }
    client_contracts = [c for c in _contracts() if "events.client" in c["source_modules"]]
    assert len(client_contracts) == 2  # no server import, no transitions
    for contract in client_contracts:
        assert root_modules <= set(contract["source_modules"]), contract["name"]


def test_events_has_exactly_the_packages_the_contracts_know() -> None:
    """A new subpackage of ``events`` would be held to no contract: add it to pyproject.toml's
    import-linter contracts, then here."""
    packages = {p.parent.name for p in (ROOT / "events").glob("*/__init__.py")}
    assert packages == {"cli", "contract", "devtools", "gateway", "service"}
    named = {m for c in _contracts() for m in (*c["source_modules"], *c["forbidden_modules"])}
    assert {f"events.{p}" for p in packages} <= named


def test_no_module_outside_the_tests_is_over_500_lines() -> None:
    too_long = {
        str(path.relative_to(ROOT)): n
        for package in ("statemachine", "events", "examples")
        for path in sorted((ROOT / package).rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    server = (
        "events.service",
        "events.cli",
        "events.devtools",
        "events.contract",
        "asyncpg",
        "aiohttp",
        "click",
        "prometheus_client",
        "uvloop",
        "pythonjsonlogger",
    )
    probe = (
        "import sys, events, events.client, events.envelope, events.messages, events.kafka\n"
        f"server = {server!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in server"
        " or '.'.join(m.split('.')[:2]) in server))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
