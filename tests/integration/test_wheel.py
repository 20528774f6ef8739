"""The package as another team installs it: the wheel, built from this checkout, in a fresh venv.

``pip install synclife`` is the client alone: it imports, publishes a command through the
client and gets its result from the running service, without any server dependency installed.
``synclife[server]`` adds the command line. Packages come from the index (or pip's cache) at the
versions of ``constraints.txt``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import venv
from pathlib import Path

import pytest

from events.client import new_sync_id
from events.service.app import Service
from events.service.settings import Settings
from tests.helpers.live import Tenant
from tests.helpers.messages import CREATE

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("asyncpg", "transitions", "aiohttp", "click", "prometheus_client", "uvloop")

# Run in the fresh venv: the client creates a sync against the service under test.
CLIENT_SCRIPT = """
import asyncio, json, sys
from events import KafkaSettings, SynclifeClient

async def main() -> None:
    settings = KafkaSettings()
    key, namespace, sync_id, data, server = sys.argv[1:6]
    async with SynclifeClient(settings, api_key=key, namespace=namespace) as client:
        result = await client.create(sync_id, **json.loads(data))
    print(json.dumps({
        "outcome": result.outcome.value,
        "status": result.status,
        "version": result.version,
        "server_modules": sorted(
            m for m in sys.modules
            if m.split(".")[0] in server.split(",")
            or m.split(".")[:2] in (["events", "service"], ["events", "cli"])
        ),
    }))

asyncio.run(main())
"""


async def _run(*argv: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *map(str, argv),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd="/",  # not this checkout: its folders would shadow the installed packages
    )
    out, err = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _must(*argv: str | Path, env: dict[str, str] | None = None) -> str:
    code, out, err = await _run(*argv, env=env)
    assert code == 0, f"{argv}: exit {code}\n{out}\n{err}"
    return out


@pytest.mark.timeout(600)
async def test_the_wheel_is_the_client_and_server_adds_the_cli(
    tmp_path: Path, settings: Settings, service: Service, tenant: Tenant
) -> None:
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    dist = tmp_path / "dist"
    await _must(
        sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, ROOT, env=pip_env
    )
    (wheel,) = dist.glob("synclife-*.whl")
    env_dir = tmp_path / "venv"
    await asyncio.to_thread(venv.create, env_dir, with_pip=True)
    python, pip = env_dir / "bin" / "python", env_dir / "bin" / "pip"
    constraints = ROOT / "constraints.txt"
    await _must(pip, "install", "--quiet", "-c", constraints, wheel, env=pip_env)

    installed = {
        p["name"].lower().replace("-", "_")
        for p in json.loads(await _must(pip, "list", "--format", "json", env=pip_env))
    }
    assert {"aiokafka", "pydantic", "synclife"} <= installed
    assert not installed & set(SERVER_ONLY)

    # The client publishes a command and gets its result, with only the client installed.
    client_env = {
        "PATH": os.environ["PATH"],
        "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SYNCLIFE_COMMANDS_TOPIC": settings.commands_topic,
        "SYNCLIFE_RESULTS_TOPIC": settings.results_topic,
    }
    sync_id = new_sync_id()
    out = await _must(
        python,
        "-c",
        CLIENT_SCRIPT,
        tenant.write_key,
        tenant.namespace,
        sync_id,
        json.dumps(CREATE),
        ",".join(SERVER_ONLY),
        env=client_env,
    )
    answer = json.loads(out)
    assert (answer["outcome"], answer["status"], answer["version"]) == ("applied", "PENDING", 1)
    assert answer["server_modules"] == []

    # Without [server] the command line says what is missing; with it, it works.
    code, _, err = await _run(env_dir / "bin" / "synclife", "--help", env=client_env)
    assert code == 2 and "pip install 'synclife[server]'" in err, err
    await _must(
        pip, "install", "--quiet", "-c", constraints, f"synclife[server] @ {wheel.as_uri()}"
    )
    out = await _must(env_dir / "bin" / "synclife", "--help", env=client_env)
    assert "serve" in out and "stack" in out
    out = await _must(python, "-m", "events", "--help", env=client_env)
    assert "serve" in out
