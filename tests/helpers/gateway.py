"""The HTTP gateway in tests: run in-process on an ephemeral port, and a client that keeps
every answer it got, so that a test can check that no answer ever carried a secret."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

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
