"""Apply one batch of consumed commands atomically: one read, one write.

For a batch: decode every record; read, in one statement, what is already known (processed
command ids, keys, namespaces, the syncs; undecodable records are first recorded as dead
letters), decide each command in offset order against the in-memory state, then write, in one
statement (its own transaction), the changed syncs (fenced on the version read), their
history, the processed command ids with their results, and the outbox rows. The caller commits
Kafka offsets only after this commits: a redelivered command finds its recorded result and
changes nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import asyncpg
from pydantic import BaseModel

from events.auth import SCOPE_RUN, SCOPE_WRITE, hash_key, parse_authorization
from events.envelope import (
    REDACTED,
    SOURCE,
    RawCommand,
    Undecodable,
    ce_headers,
    decode_command,
    header,
    pack_headers,
)
from events.messages import RESULT_TYPE, CommandResult, LifecycleEvent
from events.service.faults import crash_point
from events.service.observability import log_context
from events.service.settings import Settings
from events.service.tenancy import ApiKey, match_namespaces
from statemachine import (
    Change,
    Command,
    CommandError,
    Decision,
    ErrorCode,
    Outcome,
    SyncConfiguration,
    SyncStatus,
    decide,
    parse_data,
)
from statemachine.commands import SystemTrigger
from statemachine.machine import Policy, system_command


def policy_of(settings: Settings) -> Policy:
    return Policy(
        max_consecutive_failures=settings.max_consecutive_failures,
        retry_base_seconds=settings.retry_base_seconds,
        retry_max_seconds=settings.retry_max_seconds,
    )


__all__ = [
    "NOTIFY_CHANNEL",
    "BatchStats",
    "Record",
    "apply_batch",
    "apply_system",
    "command_result",
    "dead_letter_one",
    "event_id",
    "result_id",
]

log = logging.getLogger("synclife.processor")

NOTIFY_CHANNEL: Final = "synclife_outbox"


_EXTRAS: Final = frozenset(
    {"modified_since", "checkpoint", "run_id", "worker_id", "lock_token", "error", "run_totals"}
)


class Record(Protocol):
    """The parts of a Kafka ``ConsumerRecord`` the processor reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass
class BatchStats:
    records: int = 0
    applied: int = 0
    noop: int = 0
    rejected: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    events: int = 0
    #: (command type, outcome) -> count, and lifecycle event type -> count.
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    event_types: Counter[str] = field(default_factory=Counter)

    def add(self, other: BatchStats) -> None:
        for name, value in vars(other).items():
            if isinstance(value, Counter):
                getattr(self, name).update(value)
            else:
                setattr(self, name, getattr(self, name) + value)


@dataclass
class _Writes:
    inserts: dict[str, SyncConfiguration] = field(default_factory=dict)
    updates: dict[str, tuple[int, SyncConfiguration]] = field(default_factory=dict)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    processed: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    keys_used: set[str] = field(default_factory=set)
    #: sync id -> its new ``sync_timers.due_at``, for the syncs whose timer moved.
    timers: dict[str, datetime | None] = field(default_factory=dict)
    #: The JSON of each written sync's latest version (its ``data`` column).
    sync_json: dict[str, str] = field(default_factory=dict)


def result_id(command_id: str) -> str:
    """The result's event id is fixed by its command id: resending it is a duplicate."""
    return f"result:{command_id}"


def event_id(sync_config_id: str, version: int) -> str:
    """One event per version: the id is fixed by the sync and version."""
    return f"{sync_config_id}:v{version}"


_SCHEDULED: Final = frozenset({SyncStatus.PENDING, SyncStatus.ACTIVE})


def timer_of(sync: SyncConfiguration) -> datetime | None:
    """When the scheduler must next look at ``sync`` (its ``sync_timers.due_at``): when its
    run's lease expires while a run holds one, else its next poll while it is PENDING or
    ACTIVE, else never."""
    if sync.lock_expires_at is not None:
        return sync.lock_expires_at
    return sync.next_sync_at if sync.status in _SCHEDULED else None


def _outbox_row(
    topic: str, key: str | bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> tuple[Any, ...]:
    raw_key = key.encode() if isinstance(key, str) else key
    return (topic, raw_key, value, pack_headers(headers))


def _result_row(
    settings: Settings, result: bytes, command_id: str, key: str, at: datetime
) -> tuple[Any, ...]:
    headers = ce_headers(
        event_id=result_id(command_id), event_type=RESULT_TYPE, source=SOURCE, subject=key, time=at
    )
    return _outbox_row(settings.results_topic, key, result, headers)


def _around_sync(model: type[BaseModel]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The model's fields before ``sync`` (all scalars) and after it, in order."""
    names = list(model.model_fields)
    at = names.index("sync")
    return tuple(names[:at]), tuple(names[at + 1 :])


_EVENT_PARTS: Final = _around_sync(LifecycleEvent)
_RESULT_PARTS: Final = _around_sync(CommandResult)


def _dump_with_sync(
    model: BaseModel,
    parts: tuple[tuple[str, ...], tuple[str, ...]],
    sync_json: str,
    exclude: AbstractSet[str] = frozenset(),
) -> bytes:
    """``model.model_dump_json(exclude=exclude)``, with its ``sync`` given already serialized.

    A sync is serialized once per version and reused in its event, its result and its row:
    the model is dumped without it and the sync's JSON put back before the field that follows
    it (found by its key: the fields before ``sync`` are scalars, whose strings escape every
    quote). The bytes are those of a whole dump (a unit test holds them equal).
    """
    text = model.model_dump_json(exclude={"sync", *exclude})
    following = next((name for name in parts[1] if name not in exclude), None)
    at = text.find(f',"{following}":') if following is not None else len(text) - 1
    if at <= 0:
        return model.model_dump_json(exclude=set(exclude)).encode()
    return (text[:at] + ',"sync":' + sync_json + text[at:]).encode()


def command_result(
    command_id: str,
    command_type: str,
    sync_config_id: str,
    decision: Decision,
    final: SyncConfiguration | None,
) -> CommandResult:
    """The result of a decided command; ``final`` is the sync if the caller may see it."""
    return CommandResult(
        command_id=command_id,
        command_type=command_type,
        sync_config_id=sync_config_id,
        outcome=decision.outcome,
        version=final.version if final else None,
        status=final.status if final else None,
        sync=final,
        error=decision.error,
        events=[event_id(c.sync.sync_config_id, c.sync.version) for c in decision.changes],
        run=decision.run if final is not None else None,
    )


class _Batch:
    """The state of one batch while it is decided."""

    def __init__(self, settings: Settings, now: datetime) -> None:
        self.settings = settings
        self.now = now
        self.syncs: dict[str, SyncConfiguration] = {}
        self.loaded_versions: dict[str, int] = {}
        self.loaded_timers: dict[str, datetime | None] = {}
        self.processed: dict[str, tuple[str | None, bytes]] = {}  # id -> (key_id, result json)
        self.keys: dict[str, ApiKey] = {}
        self.namespaces: dict[tuple[str, str], str] = {}
        self.writes = _Writes()
        self.stats = BatchStats()
        self.policy = policy_of(settings)
        # (sync id, version) -> (the sync, its JSON): each version is serialized once.
        self._json: dict[tuple[str, int], tuple[SyncConfiguration, str]] = {}
        self._tokens: dict[bytes | None, str | None] = {}

    def sync_json(self, sync: SyncConfiguration) -> str:
        cached = self._json.get((sync.sync_config_id, sync.version))
        if cached is not None and cached[0] is sync:
            return cached[1]
        text = sync.model_dump_json()
        self._json[(sync.sync_config_id, sync.version)] = (sync, text)
        return text

    def token(self, authorization: bytes | None) -> str | None:
        """``parse_authorization``, once per distinct header in the batch."""
        if authorization not in self._tokens:
            self._tokens[authorization] = parse_authorization(authorization)
        return self._tokens[authorization]

    # --- results -------------------------------------------------------------------------

    def _record_result(
        self,
        command_id: str,
        command_type: str,
        sync_config_id: str | None,
        key_id: str | None,
        result: CommandResult,
    ) -> None:
        if result.sync is not None:
            payload = _dump_with_sync(result, _RESULT_PARTS, self.sync_json(result.sync))
        else:
            payload = result.model_dump_json().encode()
        self.processed[command_id] = (key_id, payload)
        self.writes.processed.append(
            (
                command_id,
                command_type,
                sync_config_id,
                key_id,
                result.outcome.value,
                payload.decode(),
                self.now,
            )
        )
        key = sync_config_id or command_id
        self.writes.outbox.append(_result_row(self.settings, payload, command_id, key, self.now))
        self.stats.outcomes[(command_type, result.outcome.value)] += 1
        match result.outcome:
            case Outcome.APPLIED:
                self.stats.applied += 1
            case Outcome.NOOP:
                self.stats.noop += 1
            case Outcome.REJECTED:
                self.stats.rejected += 1

    def _rejected(
        self,
        raw: RawCommand | Undecodable,
        command_type: str,
        error: CommandError,
        key_id: str | None,
        sync: SyncConfiguration | None = None,
    ) -> None:
        assert raw.command_id is not None  # noqa: S101 - callers check
        result = CommandResult(
            command_id=raw.command_id,
            command_type=command_type,
            sync_config_id=raw.sync_config_id,
            outcome=Outcome.REJECTED,
            version=sync.version if sync else None,
            status=sync.status if sync else None,
            sync=sync,
            error=error,
        )
        self._record_result(raw.command_id, command_type, raw.sync_config_id, key_id, result)

    def _replay(self, command_id: str, key: str) -> None:
        _, payload = self.processed[command_id]
        self.writes.outbox.append(_result_row(self.settings, payload, command_id, key, self.now))
        self.stats.replayed += 1

    # --- dead letters --------------------------------------------------------------------

    def dead_letter(self, record: Record, reason: str) -> None:
        headers = [
            (k, REDACTED if k.lower() == "authorization" else v) for k, v in record.headers or ()
        ]
        headers += [
            ("dlq_reason", reason.encode()),
            ("dlq_source_topic", record.topic.encode()),
            ("dlq_source_partition", str(record.partition).encode()),
            ("dlq_source_offset", str(record.offset).encode()),
        ]
        self.writes.outbox.append(
            _outbox_row(self.settings.dlq_topic, record.key, record.value, headers)
        )
        self.stats.dead_lettered += 1

    def undecodable(self, record: Record, bad: Undecodable, fresh: bool) -> None:
        if not fresh:  # this offset was dead-lettered by an earlier delivery of the batch
            return
        self.dead_letter(record, bad.reason)
        if bad.command_id is None or bad.sync_config_id is None:
            return
        if bad.command_id in self.processed:
            self._replay(bad.command_id, bad.sync_config_id)
            return
        type_text = (header(record.headers, "ce_type") or b"").decode("utf-8", "replace")
        type_text = type_text.replace("\x00", "\ufffd")[:128]  # U+0000 cannot be stored
        error = CommandError(code=bad.code, message=bad.message)
        self._rejected(bad, type_text or "unknown", error, None)

    # --- commands ------------------------------------------------------------------------

    def authenticate(self, raw: RawCommand) -> tuple[ApiKey | None, str | CommandError]:
        """The caller's key and namespace id, or the error that rejects the command."""
        token = self.token(raw.authorization)
        if token is None:
            return None, CommandError(
                code=ErrorCode.UNAUTHENTICATED,
                message="missing or malformed authorization header: expected 'Bearer sk_...'",
            )
        key = self.keys.get(token)
        if key is None:
            return None, CommandError(code=ErrorCode.UNAUTHENTICATED, message="unknown API key")
        problem = key.problem(self.now)
        if problem is not None:
            return key, CommandError(code=ErrorCode.UNAUTHENTICATED, message=problem)
        needed = SCOPE_RUN if raw.type.is_run else SCOPE_WRITE
        if needed not in key.scopes:
            return key, CommandError(
                code=ErrorCode.FORBIDDEN,
                message=f"{raw.type.value} needs the {needed} scope",
                details={"required_scope": needed},
            )
        if raw.namespace is None:
            return key, CommandError(
                code=ErrorCode.VALIDATION_ERROR,
                message="the x-namespace header is required",
                details={"errors": [{"field": "x-namespace", "problem": "missing header"}]},
            )
        namespace_id = self.namespaces.get((key.internal_id, raw.namespace))
        if namespace_id is None or (
            key.namespaces is not None and namespace_id not in key.namespaces
        ):
            return key, CommandError(
                code=ErrorCode.FORBIDDEN,
                message=f"namespace {raw.namespace!r} is not available to this key",
            )
        return key, namespace_id

    def command(self, record: Record, raw: RawCommand) -> None:
        if raw.command_id in self.processed:
            stored_key_id, _ = self.processed[raw.command_id]
            token = self.token(raw.authorization)
            presented = self.keys.get(token) if token else None
            if (presented.key_id if presented else None) == stored_key_id:
                self._replay(raw.command_id, raw.sync_config_id)
            else:
                # Another caller reusing a command id gets neither its result nor a second
                # result under that id: the message is dead-lettered.
                self.dead_letter(record, "command_id_reused")
            return
        key, auth = self.authenticate(raw)
        key_id = key.key_id if key else None
        if key_id is not None:
            self.writes.keys_used.add(key_id)
        if isinstance(auth, CommandError):
            self._rejected(raw, raw.type.value, auth, key_id)
            return
        assert key is not None  # noqa: S101 - authenticate returns a key with a namespace
        namespace_id = auth
        sync = self.syncs.get(raw.sync_config_id)
        visible = (
            sync
            if sync is not None
            and sync.internal_id == key.internal_id
            and sync.namespace_id == namespace_id
            else None
        )
        if raw.expected_version_error is not None:
            error = CommandError(
                code=ErrorCode.VALIDATION_ERROR,
                message=raw.expected_version_error,
                details={
                    "errors": [
                        {"field": "ce_expectedversion", "problem": raw.expected_version_error}
                    ]
                },
            )
            self._rejected(raw, raw.type.value, error, key_id, visible)
            return
        data = parse_data(raw.type, raw.sync_config_id, raw.data)
        if isinstance(data, CommandError):
            self._rejected(raw, raw.type.value, data, key_id, visible)
            return
        command = Command(
            command_id=raw.command_id,
            type=raw.type,
            sync_config_id=raw.sync_config_id,
            internal_id=key.internal_id,
            namespace_id=namespace_id,
            data=data,
            expected_version=raw.expected_version,
            key_id=key_id,
            issued_at=raw.time,
        )
        decision = decide(sync, command, self.now, self.policy)
        for change in decision.changes:
            self._persist(command, change)
        final = decision.final if decision.visible else None
        if final is not None and (
            final.internal_id != key.internal_id or final.namespace_id != namespace_id
        ):
            final = None
        result = command_result(raw.command_id, raw.type.value, raw.sync_config_id, decision, final)
        self._record_result(raw.command_id, raw.type.value, raw.sync_config_id, key_id, result)

    def _persist(self, command: Command | None, change: Change) -> None:
        sync = change.sync
        sid = sync.sync_config_id
        if sid in self.loaded_versions:
            self.writes.updates[sid] = (self.loaded_versions[sid], sync)
        else:
            self.writes.inserts[sid] = sync
        due = timer_of(sync)
        if sid in self.loaded_timers and self.loaded_timers[sid] == due:
            self.writes.timers.pop(sid, None)  # back where it was: nothing to write
        else:
            self.writes.timers[sid] = due
        self.syncs[sid] = sync
        sync_json = self.writes.sync_json[sid] = self.sync_json(sync)
        command_id = None if change.system or command is None else command.command_id
        self.writes.history.append(
            (
                sid,
                sync.version,
                change.event_type.value,
                change.from_status.value if change.from_status else None,
                change.to_status.value if change.to_status else None,
                change.trigger,
                command_id,
                change.actor,
                change.reason,
                sync.updated_at,
            )
        )
        event = LifecycleEvent(
            sync_config_id=sid,
            bucket_id=sync.bucket_id,
            namespace_id=sync.namespace_id,
            internal_id=sync.internal_id,
            version=sync.version,
            occurred_at=sync.updated_at,
            command_id=command_id,
            actor=change.actor,
            reason=change.reason,
            trigger=change.trigger,
            sync=sync,
            from_status=change.from_status,
            to_status=change.to_status,
            **change.extra,
        )
        headers = ce_headers(
            event_id=event_id(sid, sync.version),
            event_type=change.event_type.value,
            source=SOURCE,
            subject=sid,
            time=sync.updated_at,
        )
        self.writes.outbox.append(
            _outbox_row(
                self.settings.lifecycle_topic,
                sid,
                # Type-specific fields appear only on the events that carry them.
                _dump_with_sync(event, _EVENT_PARTS, sync_json, _EXTRAS - change.extra.keys()),
                headers,
            )
        )
        self.stats.events += 1
        self.stats.event_types[change.event_type.value] += 1


# Everything a batch reads, in one statement and one snapshot, without locks: the presented
# keys, the namespaces their organizations have by the names asked for (a superset, matched in
# Python), the syncs, and which commands are done. What the batch decided from it is checked
# when it writes: each updated sync must still be at the version read (the version fence), a
# new sync's id and a processed command's id must still be free (unique keys). When two
# processes briefly own a partition (a rebalance, a zombie waking up), both may decide the same
# commands; the second write collides on the processed-command key or the fence, is rolled
# back, and the batch is retried (a conflict), reading the first one's results this time.
# Nothing is applied twice.
_LOAD: Final = """
    WITH k AS (
        SELECT key_id, internal_id, key_hash, scopes, namespaces, expires_at, revoked_at
        FROM api_keys WHERE key_hash = ANY($1::bytea[])
    ), s AS (
        SELECT sync_config_id, data FROM syncs WHERE sync_config_id = ANY($3::text[])
    )
    SELECT 'k' AS kind, key_id AS id, internal_id AS owner, NULL::text AS name, key_hash,
           scopes, namespaces, expires_at, revoked_at, NULL::text AS doc
    FROM k
    UNION ALL
    SELECT 'n', namespace_id, internal_id, name, NULL, NULL, NULL, NULL, NULL, NULL
    FROM namespaces
    WHERE internal_id IN (SELECT internal_id FROM k)
      AND (namespace_id = ANY($2::text[]) OR name = ANY($2::text[]))
    UNION ALL
    SELECT 's', sync_config_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, data::text FROM s
    UNION ALL
    SELECT 'p', command_id, key_id, NULL, NULL, NULL, NULL, NULL, NULL, result
    FROM processed_commands WHERE command_id = ANY($4::text[])"""


async def _load(
    conn: asyncpg.Connection, batch: _Batch, decoded: list[tuple[Record, RawCommand | Undecodable]]
) -> set[tuple[int, int]]:
    """Read everything the batch needs; returns the offsets newly dead-lettered."""
    bad = [(r, d) for r, d in decoded if isinstance(d, Undecodable)]
    fresh: set[tuple[int, int]] = set()
    if bad:
        rows = await conn.fetch(
            """INSERT INTO dead_letters (source_topic, source_partition, source_offset, reason)
               SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[])
               ON CONFLICT DO NOTHING RETURNING source_partition, source_offset""",
            [r.topic for r, _ in bad],
            [r.partition for r, _ in bad],
            [r.offset for r, _ in bad],
            [d.reason for _, d in bad],
        )
        fresh = {(row["source_partition"], row["source_offset"]) for row in rows}

    commands = [d for _, d in decoded if isinstance(d, RawCommand)]
    by_hash = {hash_key(t): t for t in (batch.token(c.authorization) for c in commands) if t}
    sync_ids = sorted({c.sync_config_id for c in commands})
    command_ids = sorted({d.command_id for _, d in decoded if d.command_id is not None})
    if not (by_hash or sync_ids or command_ids):
        return fresh
    refs = sorted({c.namespace for c in commands if c.namespace is not None})
    rows = await conn.fetch(_LOAD, list(by_hash), refs, sync_ids, command_ids)
    namespace_rows: list[tuple[str, str, str]] = []
    for r in rows:
        match r["kind"]:
            case "k":
                batch.keys[by_hash[bytes(r["key_hash"])]] = ApiKey(
                    key_id=r["id"],
                    internal_id=r["owner"],
                    scopes=frozenset(r["scopes"]),
                    namespaces=frozenset(r["namespaces"]) if r["namespaces"] is not None else None,
                    expires_at=r["expires_at"],
                    revoked_at=r["revoked_at"],
                )
            case "n":
                namespace_rows.append((r["id"], r["owner"], r["name"]))
            case "s":
                sync = SyncConfiguration.model_validate_json(r["doc"])
                batch.syncs[r["id"]] = sync
                batch.loaded_versions[r["id"]] = sync.version
                batch.loaded_timers[r["id"]] = timer_of(sync)
            case _:
                batch.processed[r["id"]] = (r["owner"], r["doc"].encode())
    wanted = set()
    for c in commands:
        token = batch.token(c.authorization)
        key = batch.keys.get(token) if token else None
        if key is not None and c.namespace is not None:
            wanted.add((key.internal_id, c.namespace))
    batch.namespaces = match_namespaces(namespace_rows, wanted)
    return fresh


def _sync_columns(sync: SyncConfiguration, data: str) -> tuple[Any, ...]:
    return (
        sync.sync_config_id,
        sync.internal_id,
        sync.namespace_id,
        sync.status.value,
        sync.version,
        sync.next_sync_at,
        sync.lock_expires_at,
        data,
        sync.updated_at,
    )


# Every write of a batch, in one statement: new syncs, changed syncs (fenced on the version
# read: the statement fails if one moved on), their history, the processed commands with their
# results, the outbox rows (headers packed in one text value), the timers that moved, the
# keys' last use, and one NOTIFY for the relay if the outbox grew. Each part is an unnest of
# column arrays: one prepared statement for every batch, whatever it holds. The outbox ids
# follow the order of the rows given.
_WRITE: Final = """
    WITH inserted AS (
        INSERT INTO syncs (sync_config_id, internal_id, namespace_id, status, version,
                           next_sync_at, lock_expires_at, data, updated_at)
        SELECT id, internal_id, namespace_id, status, version, next_sync_at,
               lock_expires_at, data::jsonb, updated_at
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],
                    $6::timestamptz[], $7::timestamptz[], $8::text[], $9::timestamptz[])
             AS u(id, internal_id, namespace_id, status, version, next_sync_at,
                  lock_expires_at, data, updated_at)
    ), updated AS (
        UPDATE syncs AS s SET status = u.status, version = u.version,
               next_sync_at = u.next_sync_at, lock_expires_at = u.lock_expires_at,
               data = u.data::jsonb, updated_at = u.updated_at
        FROM unnest($10::text[], $11::text[], $12::int[], $13::timestamptz[],
                    $14::timestamptz[], $15::text[], $16::timestamptz[], $17::int[])
             AS u(id, status, version, next_sync_at, lock_expires_at, data, updated_at, prev)
        WHERE s.sync_config_id = u.id AND s.version = u.prev
        RETURNING 1
    ), history AS (
        INSERT INTO sync_history (sync_config_id, version, event_type, from_status, to_status,
                                  trigger, command_id, actor, reason, occurred_at)
        SELECT * FROM unnest($18::text[], $19::int[], $20::text[], $21::text[], $22::text[],
                             $23::text[], $24::text[], $25::text[], $26::text[],
                             $27::timestamptz[])
    ), processed AS (
        INSERT INTO processed_commands (command_id, command_type, sync_config_id, key_id,
                                        outcome, result, processed_at)
        SELECT *
        FROM unnest($28::text[], $29::text[], $30::text[], $31::text[], $32::text[],
                    $33::text[], $34::timestamptz[])
             AS u(id, command_type, sync_config_id, key_id, outcome, result, processed_at)
    ), outbox AS (
        INSERT INTO outbox (topic, key, value, headers)
        SELECT topic, key, value, headers
        FROM unnest($35::text[], $36::bytea[], $37::bytea[], $38::text[]) WITH ORDINALITY
             AS u(topic, key, value, headers, n)
        ORDER BY n
        RETURNING 1
    ), timers AS (
        INSERT INTO sync_timers (sync_config_id, due_at)
        SELECT * FROM unnest($42::text[], $43::timestamptz[])
        ON CONFLICT (sync_config_id) DO UPDATE SET due_at = EXCLUDED.due_at
    ), touched AS (
        UPDATE api_keys SET last_used_at = now()
        WHERE key_id = ANY($39::text[])
          AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')
    )
    SELECT synclife_version_fence($41, (SELECT count(*) FROM updated)) AS updated,
           (SELECT count(*) FROM (SELECT pg_notify($40, '') FROM outbox LIMIT 1) AS n)
               AS notified"""


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as ``width`` column lists (empty lists when there are no rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]


async def _write(conn: asyncpg.Connection, writes: _Writes) -> None:
    """Write the batch's effects in one set-based statement."""
    inserts = _columns(
        [_sync_columns(s, writes.sync_json[sid]) for sid, s in writes.inserts.items()], 9
    )
    updates = _columns(
        [
            (*_sync_columns(s, writes.sync_json[sid]), prev)
            for sid, (prev, s) in writes.updates.items()
        ],
        10,
    )
    await conn.fetchrow(
        _WRITE,
        *inserts,
        updates[0],
        *updates[3:],
        *_columns(writes.history, 10),
        *_columns(writes.processed, 7),
        *_columns(writes.outbox, 4),
        sorted(writes.keys_used),
        NOTIFY_CHANNEL,
        len(writes.updates),
        list(writes.timers),
        list(writes.timers.values()),
    )


async def apply_batch(
    conn: asyncpg.Connection,
    settings: Settings,
    records: Sequence[Record],
    now: datetime | None = None,
) -> BatchStats:
    """Decide and persist ``records`` (in their order) atomically on ``conn``.

    Two round trips: one read, one write. The write is one statement, so its own (implicit)
    transaction; it fails as a whole with a serialization failure (a conflict: the caller
    reads again and retries) if a sync it updates is no longer at the version read. A batch
    holding undecodable records records them as dead letters first, in an explicit
    transaction with the write, so that the dead letters and their messages commit together.
    """
    batch = _Batch(settings, now or datetime.now(UTC))
    decoded = [
        (r, decode_command(r.key, r.value, r.headers, settings.max_message_bytes)) for r in records
    ]
    batch.stats.records = len(records)
    if any(isinstance(item, Undecodable) for _, item in decoded):
        async with conn.transaction():
            await _decide_and_write(conn, batch, decoded)
    else:
        await _decide_and_write(conn, batch, decoded)
    return batch.stats


async def _decide_and_write(
    conn: asyncpg.Connection, batch: _Batch, decoded: list[tuple[Record, RawCommand | Undecodable]]
) -> None:
    fresh = await _load(conn, batch, decoded)
    for record, item in decoded:
        with log_context(
            command_id=item.command_id,
            sync_config_id=item.sync_config_id,
            partition=record.partition,
            offset=record.offset,
        ):
            if isinstance(item, Undecodable):
                batch.undecodable(record, item, (record.partition, record.offset) in fresh)
            else:
                batch.command(record, item)
    crash_point("apply.before_commit")  # decided, nothing committed
    await _write(conn, batch.writes)


async def apply_system(
    conn: asyncpg.Connection, settings: Settings, now: datetime, limit: int
) -> BatchStats:
    """One scheduler pass: request due runs and reap expired leases, in one transaction.

    The candidates are the syncs whose timer is due; each is checked again on the locked row
    (a change committed since this statement's snapshot may have moved it: its timer is then
    set right, nothing else). ``SKIP LOCKED``: a sync being written is left for the next pass,
    never waited on.
    """
    batch = _Batch(settings, now)
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT s.sync_config_id, s.data
               FROM sync_timers AS t JOIN syncs AS s USING (sync_config_id)
               WHERE t.due_at <= $1
               ORDER BY t.due_at
               LIMIT $2 FOR UPDATE OF s SKIP LOCKED""",
            now,
            limit,
        )
        for r in rows:
            sync = SyncConfiguration.model_validate_json(r["data"])
            sid = sync.sync_config_id
            batch.syncs[sid] = sync
            batch.loaded_versions[sid] = sync.version
            due = timer_of(sync)
            if due is None or due > now:
                batch.writes.timers[sid] = due
                continue
            batch.loaded_timers[sid] = due
            trigger = (
                SystemTrigger.LOCK_EXPIRED
                if sync.lock_expires_at is not None
                else SystemTrigger.REQUEST_RUN
            )
            decision = decide(sync, system_command(sync, trigger), now, batch.policy)
            for change in decision.changes:
                batch._persist(None, change)
        batch.stats.records = len(rows)
        await _write(conn, batch.writes)
    return batch.stats


async def dead_letter_one(
    conn: asyncpg.Connection, settings: Settings, record: Record, reason: str
) -> bool:
    """Dead-letter one record whose processing keeps failing (once per offset)."""
    batch = _Batch(settings, datetime.now(UTC))
    async with conn.transaction():
        inserted = await conn.fetchval(
            """INSERT INTO dead_letters (source_topic, source_partition, source_offset, reason)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
            record.topic,
            record.partition,
            record.offset,
            reason,
        )
        if inserted:
            batch.dead_letter(record, reason)
            await _write(conn, batch.writes)
    return bool(inserted)
