"""Slow clients on the HTTP gateway (``SYNCLIFE_GATEWAY_READ_TIMEOUT_SECONDS``): a body that
stops coming is answered 408 in the error body and its connection closed (after aiohttp's
lingering close, for what the client still sends); headers that never end,
however slowly they trickle, have their connection closed; an idle keep-alive connection too.
Each within the timeout (plus a margin for a loaded machine), while the gateway answers others.
A body that arrives in pieces within the timeout is taken. Written on a raw socket: an HTTP
client library sends a request whole.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from events.gateway import Gateway
from events.service.app import Service
from events.service.settings import Settings
from tests.helpers.gateway import KEYS, api_for, create_body, running_gateway
from tests.helpers.live import Tenant

pytestmark = pytest.mark.stack

TIMEOUT = 2.0
#: How long past the timeout an answer or a close may come on a loaded machine.
MARGIN = 10.0
#: aiohttp's lingering close: how long it reads what a client still sends after its answer.
LINGERING = 10.0
BUCKET = "bkt_slow"


@pytest.fixture
async def gateway(settings: Settings, service: Service) -> AsyncIterator[Gateway]:
    async with running_gateway(settings, gateway_read_timeout_seconds=TIMEOUT) as gw:
        yield gw


def head(tenant: Tenant, path: str, length: int | None) -> bytes:
    """A request's headers, on a connection kept alive, with its body's length if given."""
    KEYS.add(tenant.write_key)
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: gateway",
        f"Authorization: Bearer {tenant.write_key}",
        f"X-Namespace: {tenant.namespace}",
        "Content-Type: application/json",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Conn:
    """A raw connection to the gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = socket.create_connection(("127.0.0.1", gateway.port))
        self.sock.setblocking(False)
        self.opened = time.monotonic()
        self.headers: str | None = None  # of the last whole answer

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def read_until_closed(self, within: float) -> bytes:
        """Everything the gateway sends until it closes the connection (``within`` seconds at
        most: the test fails if it keeps it open longer)."""
        got = bytearray()
        async with asyncio.timeout(within):
            while True:
                try:
                    chunk = await self.loop.sock_recv(self.sock, 65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += chunk
        return bytes(got)

    async def answer(self, within: float) -> tuple[int, dict[str, Any]]:
        """One whole answer (status, JSON body; its headers in ``headers``), the connection
        left open."""
        got = bytearray()
        async with asyncio.timeout(within):
            while True:
                header, sep, body = bytes(got).partition(b"\r\n\r\n")
                if sep:
                    length = next(
                        int(line.split(b":")[1])
                        for line in header.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    if len(body) >= length:
                        self.headers = header.decode("latin-1")
                        return int(header.split()[1]), json.loads(body[:length])
                chunk = await self.loop.sock_recv(self.sock, 65536)
                assert chunk, f"closed before a whole answer: {bytes(got)[:300]!r}"
                got += chunk

    def close(self) -> None:
        self.sock.close()


async def test_a_body_that_stops_coming_is_408_and_the_connection_closed(
    gateway: Gateway, tenant: Tenant
) -> None:
    conn = Conn(gateway)
    try:
        body = json.dumps(create_body()).encode()
        await conn.send(head(tenant, f"/v1/buckets/{BUCKET}/syncs", len(body)) + body[:10])
        async with api_for(gateway, tenant) as api:  # others are answered meanwhile
            listed = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs/list", {})
            assert listed.status == 200, listed.body
        status, error = await conn.answer(TIMEOUT + MARGIN)
        elapsed = time.monotonic() - conn.opened
        # Then closed, after aiohttp's lingering close: at most ``LINGERING`` s of reading
        # what the client still sends (so that the answer is not lost to a reset).
        assert await conn.read_until_closed(LINGERING + MARGIN) == b""
    finally:
        conn.close()
    assert status == 408, error
    assert conn.headers is not None and "connection: close" in conn.headers.lower()
    assert error["success"] is False and error["status"] == 408
    assert error["error"]["type"] == "request_timeout"
    assert error["error"]["details"] == {"timeout_seconds": TIMEOUT}
    assert elapsed >= TIMEOUT * 0.9, f"answered after {elapsed:.2f} s, before the timeout"
    async with api_for(gateway, tenant) as api:  # nothing was created from the half body
        listed = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs/list", {})
    assert listed.status == 200 and listed.body["total"] == 0, listed.body


async def test_headers_that_trickle_past_the_timeout_have_their_connection_closed(
    gateway: Gateway, tenant: Tenant
) -> None:
    conn = Conn(gateway)
    trickled = 0
    try:
        await conn.send(b"POST /v1/buckets/bkt_slow/syncs/list HTTP/1.1\r\nHost: gateway\r\n")

        async def trickle() -> None:
            nonlocal trickled
            for byte in b"X-Slow: " + b"a" * 1000:  # a byte every 0.2 s: never a whole header
                await asyncio.sleep(0.2)
                try:
                    await conn.send(bytes([byte]))
                except OSError:
                    return
                trickled += 1

        sender = asyncio.create_task(trickle())
        try:
            got = await conn.read_until_closed(TIMEOUT + MARGIN)
        finally:
            sender.cancel()
        elapsed = time.monotonic() - conn.opened
    finally:
        conn.close()
    assert got == b"", f"a request that never ended was answered: {got[:300]!r}"
    assert elapsed >= TIMEOUT * 0.9, f"closed after {elapsed:.2f} s, before the timeout"
    # Bytes kept coming after the request began: they did not keep the connection open.
    assert trickled >= 3, trickled


async def test_a_body_sent_in_pieces_within_the_timeout_is_taken_and_an_idle_connection_closed(
    gateway: Gateway, tenant: Tenant
) -> None:
    conn = Conn(gateway)
    try:
        body = json.dumps(create_body()).encode()
        await conn.send(head(tenant, f"/v1/buckets/{BUCKET}/syncs", len(body)))
        for start in range(0, len(body), 16):
            await asyncio.sleep(TIMEOUT / 2 / (len(body) / 16 + 1))
            await conn.send(body[start : start + 16])
        status, answer = await conn.answer(30)
        assert status == 200, answer
        assert answer["bucket_id"] == BUCKET
        answered = time.monotonic()
        # Kept alive for the next request, then closed once idle for the timeout.
        assert await conn.read_until_closed(TIMEOUT + MARGIN) == b""
        idle = time.monotonic() - answered
    finally:
        conn.close()
    assert idle >= TIMEOUT * 0.9, f"closed {idle:.2f} s after the answer, before the timeout"
