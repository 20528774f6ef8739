"""The HTTP gateway in tests: run in-process on an ephemeral port, and a client that keeps
every answer it got, so that a test can check that no answer ever carried a secret."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict

from events.gateway import Gateway
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key
from tests.helpers.live import Tenant

#: Every answer body the gateway tests received, in order (checked for secrets at the end).
ANSWERS: list[str] = []
#: Every key the gateway tests used (none may show in an answer).
KEYS: set[str] = set()


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings, **update: Any) -> AsyncIterator[Gateway]:
    """A gateway on ``settings`` (an ephemeral port unless given), stopped after the block."""
    gateway = Gateway(settings.model_copy(update={"gateway_port": 0, **update}))
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.close()


@dataclass
class Answer:
    status: int
    body: Any
    headers: CIMultiDict[str]
    text: str = ""

    @property
    def error_type(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return str(self.body["error"].get("type"))
        return None


@dataclass
class Api:
    """Calls to one gateway with one tenant's key and namespace (each may be overridden)."""

    session: aiohttp.ClientSession
    base: str
    key: str | None
    namespace: str | None
    log: list[Answer] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = "",
        namespace: str | None = "",
        params: dict[str, str] | None = None,
    ) -> Answer:
        sent: dict[str, str] = {}
        used_key = self.key if key == "" else key
        used_ns = self.namespace if namespace == "" else namespace
        if used_key is not None:
            KEYS.add(used_key)
            sent["Authorization"] = f"Bearer {used_key}"
        if used_ns is not None:
            sent["X-Namespace"] = used_ns
        sent.update(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        payload: Any = io.BytesIO(data) if data is not None and len(data) > 65536 else data
        async with self.session.request(
            method, self.base + path, data=payload, headers=sent, params=params
        ) as response:
            text = await response.text()
        ANSWERS.append(text)
        # No answer ever carries a run's fencing token or an API key.
        assert "lock_token" not in text, text
        assert not any(k in text for k in KEYS), "an answer carried an API key"
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        answer = Answer(response.status, parsed, CIMultiDict(response.headers), text)
        self.log.append(answer)
        return answer


@contextlib.asynccontextmanager
async def api_for(gateway: Gateway, tenant: Tenant) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, gateway.url, tenant.write_key, tenant.namespace)


async def key_with(settings: Settings, tenant: Tenant, scopes: list[str]) -> str:
    """Another key of ``tenant``'s organization, with ``scopes``."""
    conn = await connect(settings)
    try:
        made = await create_key(conn, tenant.org_id, scopes)
    finally:
        await conn.close()
    key = str(made["key"])
    KEYS.add(key)
    return key


def create_body(**more: Any) -> dict[str, Any]:
    """A create body as the vendor's SDK sends it (no provider, no user)."""
    return {"connection_id": "conn_abc123", "source_path": "assets/incoming", **more}


async def create_sync(api: Api, bucket: str, **more: Any) -> dict[str, Any]:
    """A sync created in ``bucket`` (encoded in the path) with ``create_body(**more)``."""
    answer = await api.call(
        "POST", f"/v1/buckets/{quote(bucket, safe='')}/syncs", create_body(**more)
    )
    assert answer.status == 200, answer.body
    assert isinstance(answer.body, dict)
    return answer.body


def sync_path(sync: dict[str, Any], tail: str = "") -> str:
    """The API's path of ``sync``, then ``tail`` (its ids as they are: a test of hostile ids
    builds its own)."""
    return f"/v1/buckets/{sync['bucket_id']}/syncs/{sync['sync_config_id']}{tail}"


async def status_of(api: Api, sync: dict[str, Any]) -> str:
    """The sync's status as the API reads it now (its bucket encoded in the path)."""
    bucket = quote(str(sync["bucket_id"]), safe="")
    got = await api.call("GET", f"/v1/buckets/{bucket}/syncs/{sync['sync_config_id']}")
    assert got.status == 200, got.body
    return str(got.body["status"])


@contextlib.asynccontextmanager
async def gateway_process(settings: Settings, **env: str) -> AsyncIterator[str]:
    """``synclife gateway`` in a process of its own on ``settings``' stack and topics, on
    a free port: yields its URL (read from the line it logs), then SIGTERMs it and checks that
    it exits 0."""
    from events.devtools.loadgen import serve_env

    variables = {
        **os.environ,
        **serve_env(settings, f"{settings.client_id}-gateway-test"),
        "SYNCLIFE_GATEWAY_PORT": "0",
        "SYNCLIFE_LOG_FORMAT": "text",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "events.cli",
        "gateway",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=variables,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        url = None
        async with asyncio.timeout(60):
            while url is None:
                line = (await proc.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"synclife gateway exited: {''.join(lines)}")
                lines.append(line)
                found = re.search(r"gateway listening on (http://\S+)", line)
                url = found.group(1) if found else None
        drain = asyncio.create_task(proc.stderr.read())
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    rest = (await drain).decode()
    assert code == 0, "".join(lines) + rest
    assert "Traceback" not in rest, rest
