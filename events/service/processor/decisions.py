"""The decisions of one batch, in memory: authenticate each command, skip or replay the ones
already processed, decide the others in offset order, and gather what to write (the changed
syncs, their history, the results, the outbox rows, the dead letters)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from events.auth import SCOPE_ADMIN, SCOPE_RUN, SCOPE_WRITE, grants, parse_authorization
from events.envelope import REDACTED, RawCommand, Undecodable, derived_id
from events.messages import CommandResult
from events.service.access import caller_of, check
from events.service.bulk.requests import bulk_problem, record_request
from events.service.processor.rows import (
    RESULT_PARTS,
    Writes,
    applied_result_json,
    command_result,
    dump_with_sync,
    event_id,
    event_json,
    outbox_row,
    packed_ce_headers,
    result_row,
    timer_of,
)
from events.service.settings import Settings
from events.service.tenancy import ApiKey
from statemachine import (
    Change,
    Command,
    CommandError,
    CommandType,
    ErrorCode,
    Outcome,
    SyncConfiguration,
    decide,
    parse_data,
)
from statemachine.errors import bounded
from statemachine.runs import Policy

#: The message of an ``internal`` rejection: fixed, nothing of the input in it.
INTERNAL_MESSAGE: Final = (
    "the command could not be processed and was dead-lettered; send it again with a new "
    "command id, or ask the operators (the dead letter says why)"
)

#: The values ``synclife_commands_total``'s ``type`` label may take (besides ``unknown``).
_COMMAND_TYPES: Final = frozenset(t.value for t in CommandType)


def policy_of(settings: Settings) -> Policy:
    return Policy(
        max_consecutive_failures=settings.max_consecutive_failures,
        retry_base_seconds=settings.retry_base_seconds,
        retry_max_seconds=settings.retry_max_seconds,
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


class Batch:
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
        self.writes = Writes()
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
        key: str | None = None,
    ) -> None:
        """Record ``result`` as the one result of ``command_id`` and publish it under ``key``
        (default: the sync id, else the command id)."""
        if result.sync is not None:
            payload = dump_with_sync(result, RESULT_PARTS, self.sync_json(result.sync))
        else:
            payload = result.model_dump_json().encode()
        self._record_payload(
            command_id, command_type, sync_config_id, key_id, result.outcome, payload, key
        )

    def _record_payload(
        self,
        command_id: str,
        command_type: str,
        sync_config_id: str | None,
        key_id: str | None,
        outcome: Outcome,
        payload: bytes,
        key: str | None = None,
    ) -> None:
        self.processed[command_id] = (key_id, payload)
        self.writes.processed.append(
            (
                command_id,
                command_type,
                sync_config_id,
                key_id,
                outcome._value_,
                payload,  # bytes: the write sends it once, with the outbox row's
                self.now,
            )
        )
        key = key or sync_config_id or command_id
        self.writes.outbox.append(result_row(self.settings, payload, command_id, key, self.now))
        # A metric label: a type read from a message is a label only if it is one of ours.
        kind = command_type if command_type in _COMMAND_TYPES else "unknown"
        self.stats.outcomes[(kind, outcome._value_)] += 1
        match outcome:
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

    def _rejected_derived(
        self,
        record: Record,
        raw: RawCommand | Undecodable,
        command_type: str,
        error: CommandError,
        key_id: str | None,
    ) -> None:
        """Reject a message the service cannot authenticate or decode under the id derived
        from where it is: its ``ce_id`` neither replays nor reserves anything. Published under
        the message's key when that is readable, else under the derived id."""
        command_id = derived_id(record.topic, record.partition, record.offset)
        result = CommandResult(
            command_id=command_id,
            command_type=command_type,
            sync_config_id=raw.sync_config_id,
            outcome=Outcome.REJECTED,
            error=error,
        )
        self._record_result(
            command_id, command_type, raw.sync_config_id, key_id, result, raw.kafka_key
        )

    def _replay(self, command_id: str, key: str) -> None:
        _, payload = self.processed[command_id]
        self.writes.outbox.append(result_row(self.settings, payload, command_id, key, self.now))
        self.stats.replayed += 1

    # --- dead letters --------------------------------------------------------------------

    def dead_letter(self, record: Record, reason: str) -> None:
        # A Kafka header's value may be null (aiokafka gives None); the outbox row stores bytes,
        # so a null value is kept as an empty one (else the relay could not read the row back).
        headers = [
            (k, REDACTED if k.lower() == "authorization" else (v or b""))
            for k, v in record.headers or ()
        ]
        headers += [
            ("dlq_reason", reason.encode()),
            ("dlq_source_topic", record.topic.encode()),
            ("dlq_source_partition", str(record.partition).encode()),
            ("dlq_source_offset", str(record.offset).encode()),
        ]
        self.writes.outbox.append(
            outbox_row(self.settings.dlq_topic, record.key, record.value, headers)
        )
        self.stats.dead_lettered += 1

    def undecodable(self, record: Record, bad: Undecodable, fresh: bool) -> None:
        if not fresh:  # this offset was dead-lettered by an earlier delivery of the batch
            return
        self.dead_letter(record, bad.reason)
        error = CommandError(code=bad.code, message=bounded(bad.message))
        self._rejected_derived(record, bad, bad.command_type, error, None)

    def poisoned(self, record: Record, item: RawCommand | Undecodable) -> None:
        """The one result of a record dead-lettered after its processing kept failing:
        ``internal``, with a fixed message (nothing of the input), under the command id if an
        authenticated sender's, else under the derived id; the stored result again if the
        command id already has one of this sender."""
        error = CommandError(code=ErrorCode.INTERNAL, message=INTERNAL_MESSAGE)
        if isinstance(item, Undecodable):
            self._rejected_derived(record, item, item.command_type, error, None)
            return
        token = self.token(item.authorization)
        key = self.keys.get(token) if token else None
        if key is None or key.problem(self.now) is not None:
            self._rejected_derived(record, item, item.type.value, error, None)
            return
        if item.command_id in self.processed:
            stored_key_id, _ = self.processed[item.command_id]
            if stored_key_id == key.key_id:
                self._replay(item.command_id, item.sync_config_id)
            return
        self._rejected(item, item.type.value, error, key.key_id)

    # --- commands ------------------------------------------------------------------------

    def authenticate(self, raw: RawCommand) -> tuple[ApiKey | None, str | CommandError]:
        """The caller's key and namespace id, or the error that rejects the command."""
        token = self.token(raw.authorization)
        key = self.keys.get(token) if token else None
        namespace_id = None
        if key is not None and raw.namespace is not None:
            namespace_id = self.namespaces.get((key.internal_id, raw.namespace))
        needed = SCOPE_RUN if raw.type.is_run else SCOPE_WRITE
        error = check(
            token is not None, key, self.now, needed, raw.type.value, raw.namespace, namespace_id
        )
        if error is not None:
            return key, error
        assert namespace_id is not None  # noqa: S101 - checked
        return key, namespace_id

    def command(self, record: Record, raw: RawCommand) -> None:
        token = self.token(raw.authorization)
        presented = self.keys.get(token) if token else None
        if raw.command_id in self.processed:
            stored_key_id, _ = self.processed[raw.command_id]
            if presented is not None and presented.key_id == stored_key_id:
                self._replay(raw.command_id, raw.sync_config_id)
                return
            if presented is not None and presented.problem(self.now) is None:
                # Another caller reusing a command id gets neither its result nor a second
                # result under that id: the message is dead-lettered.
                self.dead_letter(record, "command_id_reused")
                return
            # Unauthenticated: rejected under an id of its own, below.
        key, auth = self.authenticate(raw)
        key_id = key.key_id if key else None
        if key_id is not None:
            self.writes.keys_used.add(key_id)
        if isinstance(auth, CommandError) and auth.code is ErrorCode.UNAUTHENTICATED:
            self._rejected_derived(record, raw, raw.type.value, auth, key_id)
            return
        assert key is not None  # noqa: S101 - authenticated: a key
        # The write checks that the key is still unrevoked (a revocation committed after
        # this batch read it makes the batch read and decide again).
        self.writes.live_keys.add(key.key_id)
        if isinstance(auth, CommandError):
            self._rejected(raw, raw.type.value, auth, key_id)
            return
        if raw.key_error is not None:
            error = CommandError(
                code=ErrorCode.VALIDATION_ERROR,
                message=raw.key_error,
                details={"errors": [{"field": "key", "problem": raw.key_error}]},
            )
            self._rejected(raw, raw.type.value, error, key_id)
            return
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
        if raw.type.is_bulk and not isinstance(data, CommandError):
            # Recorded for the bulk worker, which answers it (events/service/bulk/).
            data = bulk_problem(raw) or data
            if not isinstance(data, CommandError):
                caller = caller_of(key.key_id, key.user_id)
                record_request(
                    self.writes, raw, data, key.internal_id, namespace_id, key.key_id, caller
                )
                return
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
            caller=caller_of(key.key_id, key.user_id),
            admin=grants(key.scopes, SCOPE_ADMIN),
        )
        decision = decide(sync, command, self.now, self.policy)
        for change in decision.changes:
            self._persist(command, change)
        final = decision.final if decision.visible else None
        if final is not None and (
            final.internal_id != key.internal_id or final.namespace_id != namespace_id
        ):
            final = None
        if final is not None and decision.error is None:  # applied or noop, seen: the hot path
            kind: str = raw.type._value_
            payload = applied_result_json(
                raw.command_id,
                kind,
                raw.sync_config_id,
                decision,
                final,
                self.sync_json(final),
            )
            self._record_payload(
                raw.command_id,
                kind,
                raw.sync_config_id,
                key_id,
                decision.outcome,
                payload,
            )
            return
        result = command_result(raw.command_id, raw.type.value, raw.sync_config_id, decision, final)
        self._record_result(raw.command_id, raw.type.value, raw.sync_config_id, key_id, result)

    def _persist(self, command: Command | None, change: Change) -> None:
        sync = change.sync
        # ``_value_`` (here and below): an enum member's value without the ``value``
        # property's Python call, a few of which per command add up.
        event_type: str = change.event_type._value_
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
        for job in change.jobs:
            self.writes.job(sync, job)
        sync_json = self.writes.sync_json[sid] = self.sync_json(sync)
        command_id = None if change.system or command is None else command.command_id
        self.writes.history.append(
            (
                sid,
                sync.version,
                event_type,
                change.from_status._value_ if change.from_status else None,
                change.to_status._value_ if change.to_status else None,
                change.trigger,
                command_id,
                change.actor,
                change.reason,
                sync.updated_at,
            )
        )
        headers = packed_ce_headers(event_id(sid, sync.version), event_type, sid, sync.updated_at)
        self.writes.outbox.append(
            outbox_row(
                self.settings.lifecycle_topic,
                sid,
                # Type-specific fields appear only on the events that carry them.
                event_json(change, command_id, sync_json),
                headers,
            )
        )
        self.stats.events += 1
        self.stats.event_types[event_type] += 1
