"""Hostile input mixed into the fault suite's load, and what each must produce.

Two streams run beside the load's commands, under the same faults:

- **hostile messages** (``Hostile``): a message that is not JSON, one of an unknown type, one
  without a Kafka key, one with an unknown API key, one over the size limit, in turn, each for a
  sync id of its own (so that whatever the service answers can be told apart);
- **a key revoked mid-load** (``Revocation``): some syncs are commanded with a key of their own,
  which is revoked halfway through; the commands before the revocation are processed, those
  after it are rejected ``unauthenticated``.

The checks (``check_hostile``, ``check_revocation``) hold each message to what the contract
(shared ``CONTRACT.md``, v1.1 "Results") says, and fail when there was nothing to check: every
kind must have been sent, and the dead letters must be as many as the messages that must be
dead-lettered, never zero.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from events.devtools.loadgen import Command, Sender
from events.envelope import REDACTED
from events.kafka import idempotent_producer
from events.service.settings import Settings
from events.service.tenancy import revoke_key

# What the checks hold the service to: "v1.1" (CONTRACT.md's v1.1 additions: a message that
# cannot be authenticated or decoded is answered under an id of its own, never its ce_id; a
# command without a Kafka key is rejected) or "v1" (the service before them: answered under
# the ce_id; a command without a key is processed). "v1" until the service implements v1.1.
CONTRACT = "v1.1"

KINDS = ("invalid_json", "unknown_type", "no_key", "unknown_key", "oversized")
# Per kind: the dlq_reason of its dead letter (None: no dead letter), and its result's code.
EXPECTED: dict[str, tuple[str | None, str]] = {
    "invalid_json": ("invalid_json", "validation_error"),
    "unknown_type": ("unsupported_type", "unsupported_type"),
    "oversized": ("too_large", "too_large"),
    "unknown_key": (None, "unauthenticated"),
    "no_key": (None, "validation_error"),
}
# Answered under an id derived from where the message is (v1.1), never under its ce_id.
DERIVED = frozenset({"invalid_json", "unknown_type", "oversized", "unknown_key"})
OVERSIZED_BYTES = 1_100_000  # over the service's 1 MiB limit, under the topic's 2 MiB


@dataclass
class HostileSent:
    kind: str
    command_id: str
    sync_id: str
    sends: int = 0  # publish attempts (each may have landed at an offset of its own)


class Hostile:
    """Publishes one hostile message every ``every`` seconds, the kinds in turn."""

    def __init__(self, settings: Settings, sender: Sender, create: dict[str, Any]) -> None:
        self.settings = settings
        self.sender = sender
        self.create = create
        self.sent: list[HostileSent] = []

    @property
    def sync_ids(self) -> set[str]:
        return {h.sync_id for h in self.sent}

    def message(self, kind: str) -> tuple[HostileSent, bytes | None, bytes, list[Any]]:
        h = HostileSent(kind, str(uuid.uuid4()), f"sync_hostile_{uuid.uuid4().hex}")
        data = dict(self.create)
        if kind == "oversized":
            data["metadata"] = {"padding": "x" * OVERSIZED_BYTES}
        c: Command = self.sender.command(h.command_id, "sync.create", h.sync_id, data)
        headers = list(c.headers)
        value = c.value
        key: bytes | None = c.key
        if kind == "invalid_json":
            value = b"{not json"
        elif kind == "unknown_type":
            headers = [(k, b"sync.explode" if k == "ce_type" else v) for k, v in headers]
        elif kind == "no_key":
            key = None
        elif kind == "unknown_key":
            fake = f"Bearer sk_{secrets.token_urlsafe(32)}".encode()
            headers = [(k, fake if k == "authorization" else v) for k, v in headers]
        return h, key, value, headers

    async def run(self, deadline: float, every: float = 0.4) -> None:
        producer = idempotent_producer(self.settings, client_id="faults-hostile")
        await producer.start()
        try:
            n = 0
            while time.monotonic() < deadline:
                await self._send(producer, KINDS[n % len(KINDS)])
                n += 1
                await asyncio.sleep(every)
        finally:
            await producer.stop()

    async def _send(self, producer: AIOKafkaProducer, kind: str) -> None:
        h, key, value, headers = self.message(kind)
        while True:
            h.sends += 1
            try:
                await producer.send_and_wait(
                    self.settings.commands_topic, key=key, value=value, headers=headers
                )
            except KafkaError:
                await asyncio.sleep(0.5)
            else:
                break
        self.sent.append(h)


@dataclass
class KeyedSent:
    command_id: str
    sync_id: str
    command_type: str
    started: float  # monotonic time the first send began
    sends: int


@dataclass
class Revocation:
    """The syncs commanded with a key that is revoked mid-load."""

    sender: Sender
    key_id: str
    database_url: str
    sent: list[KeyedSent] = field(default_factory=list)
    sync_ids: list[str] = field(default_factory=list)
    revoking: float | None = None  # monotonic: the revocation began
    revoked: float | None = None  # monotonic: it was committed

    async def revoke(self) -> None:
        """Revoke the key, trying again while Postgres is away (one of the faults)."""
        self.revoking = time.monotonic()
        while True:
            try:
                conn = await asyncpg.connect(self.database_url, timeout=5)
                try:
                    await revoke_key(conn, self.key_id)  # idempotent
                finally:
                    await conn.close()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(0.5)
            else:
                self.revoked = time.monotonic()
                return


def _result_index(
    messages: Iterable[Any], sync_ids: set[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Sync id: result ce_id: the copies of that result, for the results of ``sync_ids`` (by
    the message's key, or its data's sync id when it has no key of those)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for m in messages:
        data = json.loads(m.value)
        sid = m.key if m.key in sync_ids else data.get("sync_config_id")
        if sid in sync_ids:
            out[sid][m.id].append(data)
    return out


def _code(result: dict[str, Any]) -> str | None:
    error = result.get("error") or {}
    return error.get("code")


@dataclass
class HostileTally:
    sent: int = 0
    dead_letters: int = 0  # distinct source offsets on the dead-letter topic


def check_hostile(
    hostile: Hostile,
    results: Iterable[Any],
    dlq: Iterable[Any],
    dead_rows: int,
    problems: list[str],
) -> HostileTally:
    """Each hostile message got exactly the dead letter and the result the contract says."""
    tally = HostileTally(sent=len(hostile.sent))
    kinds = {h.kind for h in hostile.sent}
    if kinds != set(KINDS):
        problems.append(f"hostile kinds sent: {sorted(kinds)}, not all of {KINDS}")
    by_sync = _result_index(results, hostile.sync_ids)
    letters: dict[str, set[tuple[int, int]]] = defaultdict(set)
    all_offsets: set[tuple[int, int]] = set()
    for m in dlq:
        offset = (int(m.headers["dlq_source_partition"]), int(m.headers["dlq_source_offset"]))
        all_offsets.add(offset)
        ce_id = m.headers.get("ce_id", b"").decode()
        letters[ce_id].add(offset)
        auth = m.headers.get("authorization")
        if auth is not None and auth != REDACTED:
            problems.append(f"dead letter {offset} carries its authorization header")
        reason = m.headers.get("dlq_reason", b"").decode()
        kind = next((h.kind for h in hostile.sent if h.command_id == ce_id), None)
        if kind is None:
            problems.append(f"a dead letter of no hostile message: {ce_id!r} ({reason})")
        elif EXPECTED[kind][0] != reason:
            problems.append(f"{kind} {ce_id}: dead letter reason {reason!r}")
    tally.dead_letters = len(all_offsets)
    if dead_rows != tally.dead_letters:
        problems.append(f"{dead_rows} dead_letters rows, {tally.dead_letters} dead letters")
    must_dead_letter = [h for h in hostile.sent if EXPECTED[h.kind][0] is not None]
    if not must_dead_letter or tally.dead_letters < len(must_dead_letter):
        problems.append(
            f"{tally.dead_letters} dead letters for {len(must_dead_letter)} messages that must "
            "be dead-lettered"
        )

    for h in hostile.sent:
        reason, code = EXPECTED[h.kind]
        got = len(letters.get(h.command_id, ()))
        if reason is None and got:
            problems.append(f"{h.kind} {h.command_id}: dead-lettered ({got})")
        if reason is not None and not 1 <= got <= h.sends:
            problems.append(f"{h.kind} {h.command_id}: {got} dead letters for {h.sends} sends")
        answers = by_sync.get(h.sync_id, {})
        # One result per id (a derived id is one per offset the message landed at).
        if not 1 <= len(answers) <= (h.sends if h.kind in DERIVED else 1):
            problems.append(f"{h.kind} {h.command_id}: {len(answers)} results")
        for ce_id, copies in answers.items():
            first = copies[0]
            if any(c != first for c in copies[1:]):
                problems.append(f"{h.kind} {ce_id}: differing copies of its result")
            wanted: tuple[str, str | None]
            if CONTRACT == "v1" and h.kind == "no_key":
                wanted = ("applied", None)
            else:
                wanted = ("rejected", code)
            if (first.get("outcome"), _code(first)) != wanted:
                problems.append(
                    f"{h.kind} {h.command_id}: result {first.get('outcome')} "
                    f"{_code(first)}, not {wanted}"
                )
            under_ce_id = first.get("command_id") == h.command_id
            if CONTRACT == "v1.1" and h.kind in DERIVED and under_ce_id:
                problems.append(f"{h.kind} {h.command_id}: answered under its ce_id")
            if CONTRACT == "v1" and not under_ce_id:
                problems.append(f"{h.kind} {h.command_id}: answered under {first['command_id']}")
            if wanted[0] == "rejected" and first.get("sync") is not None:
                problems.append(f"{h.kind} {h.command_id}: its rejection shows a sync")
    return tally


def check_revocation(
    revocation: Revocation,
    results: Iterable[Any],
    history: dict[str, list[str]],
    events_by_command: dict[str, set[str]],
    problems: list[str],
) -> tuple[int, int]:
    """Per sync of the revoked key: its commands were processed up to some point and rejected
    ``unauthenticated`` after it (never accepted again), every command sent after the
    revocation was rejected, and a rejected one is answered as the contract says. Returns
    (processed, rejected): both must be more than zero."""
    assert revocation.revoked is not None, "the key was never revoked"
    ids = set(revocation.sync_ids)
    by_sync = _result_index(results, ids)
    processed = rejected = 0
    for sid in revocation.sync_ids:
        answers = by_sync.get(sid, {})
        commands = [c for c in revocation.sent if c.sync_id == sid]
        by_id = {ce_id.removeprefix("result:"): copies for ce_id, copies in answers.items()}
        states: list[str] = []
        for c in commands:
            copies = by_id.pop(c.command_id, None)
            if copies is not None and any(x != copies[0] for x in copies[1:]):
                problems.append(f"revoked key: {c.command_id} has differing results")
            first = copies[0] if copies else None
            refused = first is not None and _code(first) == "unauthenticated"
            if first is None or refused:
                if CONTRACT == "v1.1" and refused:
                    problems.append(f"revoked key: {c.command_id} refused under its ce_id")
                if CONTRACT == "v1" and first is None:
                    problems.append(f"revoked key: {c.command_id} has no result")
                states.append("refused")
                continue
            states.append("processed")
            listed = first.get("events") or []
            if len(history.get(c.command_id, [])) > len(listed) or len(
                events_by_command.get(c.command_id, ())
            ) > len(listed):
                problems.append(f"revoked key: {c.command_id} applied twice")
            if c.started > revocation.revoked:
                problems.append(
                    f"revoked key: {c.command_id}, sent after the revocation, "
                    f"was {first.get('outcome')}"
                )
        if "refused" in states and "processed" in states[states.index("refused") :]:
            problems.append(f"revoked key: {sid} accepted again after a refusal: {states}")
        refused_commands = [c for c, s in zip(commands, states, strict=True) if s == "refused"]
        # What is left are the rejections under ids of their own (v1.1): one per offset.
        derived = list(by_id.values())
        for copies in derived:
            if (copies[0].get("outcome"), _code(copies[0])) != ("rejected", "unauthenticated"):
                problems.append(f"revoked key: {sid}: unexpected result {copies[0]}")
            if copies[0].get("sync") is not None:
                problems.append(f"revoked key: {sid}: an unauthenticated result shows a sync")
        if CONTRACT == "v1.1" and not (
            len(refused_commands) <= len(derived) <= sum(c.sends for c in refused_commands)
        ):
            problems.append(
                f"revoked key: {sid}: {len(derived)} rejections under their own ids for "
                f"{len(refused_commands)} refused commands"
            )
        processed += states.count("processed")
        rejected += len(refused_commands)
    if not processed or not rejected:
        problems.append(f"revoked key: {processed} commands processed, {rejected} refused")
    return processed, rejected


def pending(hostile: Hostile | None, revocation: Revocation | None, results: Iterable[Any]) -> int:
    """How many hostile messages and revoked-key commands are still without an answer."""
    ids: set[str] = set()
    if hostile is not None:
        ids |= hostile.sync_ids
    if revocation is not None:
        ids |= set(revocation.sync_ids)
    if not ids:
        return 0
    counts = {sid: len(v) for sid, v in _result_index(results, ids).items()}
    left = 0
    if hostile is not None:
        left += sum(1 for h in hostile.sent if not counts.get(h.sync_id))
    if revocation is not None:
        per_sync: dict[str, int] = defaultdict(int)
        for c in revocation.sent:
            per_sync[c.sync_id] += 1
        left += sum(max(0, n - counts.get(sid, 0)) for sid, n in per_sync.items())
    return left
