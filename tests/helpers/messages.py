"""Commands written by hand, as any Kafka client following the contract would, and the waits
for what they produce (their result, their dead letter)."""

from __future__ import annotations

import asyncio
from typing import Any

from events.messages import CommandResult
from statemachine import ErrorCode, Outcome
from tests.helpers.live import Seen, Tenant

#: The data of a valid ``sync.create`` (an s3 sync; add or override fields with ``**``).
CREATE: dict[str, Any] = {
    "bucket_id": "bkt_marketing_assets",
    "connection_id": "conn_abc123",
    "provider": "s3",
    "source_path": "marketing-assets/2026/",
    "created_by_user_id": "user_ada",
}


Headers = list[tuple[str, bytes]]


def envelope(
    command_id: str | None,
    kind: str | None,
    sync_id: str | None,
    *,
    tenant: Tenant | None = None,
    auth: str | bytes | None = None,
    namespace: str | None = None,
    drop: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
) -> Headers:
    """Binary-mode CloudEvents headers of a command, as any Kafka client would write them.

    With ``tenant``, the command carries its write key and namespace.
    """
    if tenant is not None:
        auth = f"Bearer {tenant.write_key}"
        namespace = tenant.namespace
    base: dict[str, str | bytes | None] = {
        "ce_specversion": "1.0",
        "ce_id": command_id,
        "ce_type": kind,
        "ce_source": "//tests",
        "ce_subject": sync_id,
        "ce_time": "2026-11-29T12:00:00Z",
        "content-type": "application/json",
        "authorization": auth,
        "x-namespace": namespace,
        **(extra or {}),
    }
    out: Headers = []
    for name, value in base.items():
        if value is None or name in drop:
            continue
        out.append((name, value if isinstance(value, bytes) else value.encode()))
    return out


async def result_for(
    results: Seen, key: str, command_id: str, timeout: float = 20.0
) -> CommandResult:
    """The one result of ``command_id`` (published under ``key``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = [r for r in results.results(key) if r.command_id == command_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert loop.time() < deadline, f"no result for {command_id} under {key}"
        await asyncio.sleep(0.02)


async def dead_letter_for(
    dlq: Seen, key: str, command_id: str | None = None, timeout: float = 20.0
) -> tuple[dict[str, bytes], bytes | None]:
    """The one dead letter under ``key`` (with that ``ce_id`` when given)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = [
            (h, v)
            for h, v in dlq.by_key[key]
            if command_id is None or h.get("ce_id") == command_id.encode()
        ]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert loop.time() < deadline, f"no dead letter for {command_id} under {key}"
        await asyncio.sleep(0.02)


def rejected(result: CommandResult, code: ErrorCode) -> CommandResult:
    """Assert ``result`` is a rejection with exactly ``code``."""
    assert result.outcome is Outcome.REJECTED, result
    assert result.error is not None
    assert result.error.code is code, result.error
    return result
