"""The contract as documents: the checked-in AsyncAPI document and JSON Schemas.

(a) docs/asyncapi.json and docs/schemas/ are what the code generates now; (b) real messages,
built by the project's own code, validate against them and invalid ones do not; (c) the
AsyncAPI document is complete and self-contained.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from events.contract.asyncapi import asyncapi_document, json_schemas, to_json
from events.contract.messages import (
    DEAD_LETTER_MESSAGE,
    RESULT_MESSAGE,
    command_message_id,
    event_message_id,
)
from events.envelope import ce_headers
from events.messages import RESULT_TYPE, CommandResult, LifecycleEvent
from events.service.packed_headers import unpack_headers
from events.service.processor import command_result
from events.service.processor.decisions import Batch
from events.service.settings import Settings
from statemachine.commands import Command, CommandType, SystemTrigger, parse_data
from statemachine.decider import decide
from statemachine.decision import Decision, EventType, Outcome
from statemachine.errors import CommandError
from statemachine.model import SyncConfiguration
from statemachine.runs import system_command
from tests.helpers.syncs import SYNC_ID, T0, make_command

C = CommandType
E = EventType
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REGENERATE = (
    ".venv/bin/synclife asyncapi --output docs/asyncapi.json && "
    ".venv/bin/synclife schemas --output-dir docs/schemas"
)
DOC_URI = "urn:synclife:asyncapi"
RUN_ID = "0b7e4a4e-4f8e-4c1e-9a53-6f1b8f0c2d11"
API_KEY = "sk_" + "A" * 43

CREATE_DATA: dict[str, Any] = {
    "bucket_id": "bkt_marketing_assets",
    "connection_id": "conn_abc123",
    "provider": "s3",
    "source_path": "marketing-assets/campaigns",
    "created_by_user_id": "user_alice",
}

#: Valid data of every command type, parsed by ``parse_data`` before it is validated.
VALID: dict[CommandType, list[dict[str, Any]]] = {
    C.CREATE: [
        CREATE_DATA,
        {
            **CREATE_DATA,
            "sync_config_id": SYNC_ID,
            "sync_mode": "initial_only",
            "polling_interval_seconds": 60,
            "batch_size": 10,
            "metadata": {"team": "marketing"},
            "max_batch_chunk_size": 500,
            "batch_chunk_size": 50,
            "resume_checkpoint_frequency": 200,
            "file_filters": {"include_patterns": ["*.pdf"]},
            "schema_mapping": {
                "mappings": {"title": {"target_type": "field", "source": {"type": "file"}}}
            },
            "initial_status": "DRAFT",
            "reason": "set up for review",
        },
        {**CREATE_DATA, "provider": "snowflake", "source_path": "DB.SCHEMA.TABLE"},
    ],
    C.UPDATE: [{"polling_interval_seconds": 600, "updated_by_user_id": "user_bob"}],
    C.ACTIVATE: [{}],
    C.PAUSE: [{"paused_by_user_id": "user_bob", "reason": "maintenance"}],
    C.RESUME: [{}, {"resumed_by_user_id": "user_bob"}],
    C.CANCEL: [{"reason": "not needed"}],
    C.ARCHIVE: [{}],
    C.TRIGGER: [{"requested_by_user_id": "user_bob"}],
    C.UNLOCK: [{}, {"unlocked_by_user_id": "user_bob", "reason": "worker stuck"}],
    C.RUN_START: [{"worker_id": "worker_1", "lease_seconds": 60}],
    C.RUN_HEARTBEAT: [{"run_id": RUN_ID, "lock_token": 1}],
    C.RUN_CHECKPOINT: [
        {"run_id": RUN_ID, "lock_token": 1, "resume_cursor": "page-3", "files_synced": 10}
    ],
    C.RUN_COMPLETE: [{"run_id": RUN_ID, "lock_token": 1, "files_synced": 10, "batch_ids": ["b1"]}],
    C.RUN_FAIL: [{"run_id": RUN_ID, "lock_token": 1, "error": "boom"}],
    C.BULK_PAUSE: [
        {"selector": {"bucket_id": "bkt_1", "metadata": {"team": "a", "tier": 2}}},
        {"selector": {"provider": "s3", "status": "ACTIVE"}, "reason": "audit"},
    ],
    C.BULK_RESUME: [{"selector": {"connection_id": "conn_1"}}],
    C.BULK_UNDO: [{}, {"undone_by_user_id": "user_1", "reason": "done"}],
}

#: Data that ``parse_data`` (or the configuration built from it) rejects: so must the schema.
INVALID: list[tuple[CommandType, dict[str, Any]]] = [
    (C.PAUSE, {"paused_by_user_id": ""}),
    (C.UPDATE, {"status": "PAUSED"}),
    (C.TRIGGER, {"mode": "partial"}),
    (C.PAUSE, {"paused_by_user_id": "user_bob", "internal_id": "org_other"}),
    (C.CREATE, {**CREATE_DATA, "polling_interval_seconds": 5}),
    (C.CREATE, {**CREATE_DATA, "batch_size": 101}),
    (C.CREATE, {**CREATE_DATA, "source_path": "Not A Bucket!"}),
    (C.CREATE, {**CREATE_DATA, "provider": "ftp"}),
    (C.CREATE, {key: v for key, v in CREATE_DATA.items() if key != "bucket_id"}),
    (C.UPDATE, {}),
    (C.UPDATE, {"updated_by_user_id": "user_bob"}),
    (C.UPDATE, {"polling_interval_seconds": 5}),
    (C.UPDATE, {"bucket_id": "bkt_other"}),
    (C.RUN_START, {"worker_id": "worker_1", "lease_seconds": 1}),
    (C.RUN_HEARTBEAT, {"run_id": "", "lock_token": 1}),
    (C.RUN_FAIL, {"run_id": RUN_ID, "lock_token": 1}),
    (C.BULK_PAUSE, {}),
    (C.BULK_PAUSE, {"selector": {"status": "PAUSED"}}),
    (C.BULK_RESUME, {"selector": {"metadata": {"k": [1]}}}),
    (C.BULK_UNDO, {"selector": {"bucket_id": "b"}}),
    (C.RUN_COMPLETE, {"run_id": RUN_ID, "lock_token": 0}),
    (C.UNLOCK, {"lock_token": 1}),
]


# --- helpers -------------------------------------------------------------------------------


@cache
def document() -> dict[str, Any]:
    return asyncapi_document()


@cache
def standalone() -> dict[str, dict[str, Any]]:
    return json_schemas()


@cache
def _registry() -> Registry[Any]:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(DOC_URI, resource)
    return registry


def doc_validator(pointer: str) -> Any:
    """A validator of the schema at ``pointer`` in the AsyncAPI document, refs resolved there."""
    return Draft202012Validator(
        {"$ref": f"{DOC_URI}#{pointer}"},
        registry=_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def errors(message_id: str, part: str, instance: Any) -> list[str]:
    """Validation errors of ``instance`` as the ``part`` (payload/headers) of a message.

    Payloads are checked twice: against the document and against the standalone schema.
    """
    found = [
        e.message
        for e in doc_validator(f"/components/messages/{message_id}/{part}").iter_errors(instance)
    ]
    if part == "payload":
        schema = standalone()[f"{message_id}.json"]
        own = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        found += [f"(standalone) {e.message}" for e in own.iter_errors(instance)]
    return found


def text_headers(pairs: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """Kafka headers as a consumer reads them: names and UTF-8 text."""
    return {name: value.decode() for name, value in pairs}


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class Wire:
    """A message as the processor writes it to the outbox."""

    topic: str
    key: bytes | None
    value: Any
    headers: dict[str, str]


def _rows(batch: Batch) -> list[Wire]:
    out = [
        Wire(
            topic=row[0],
            key=row[1],
            value=row[2],
            headers=text_headers(unpack_headers(row[3])),
        )
        for row in batch.writes.outbox
    ]
    batch.writes.outbox.clear()
    return out


@dataclass
class Scenario:
    """One sync walked through every kind of change by ``decide``; the processor's output."""

    settings: Settings
    events: list[Wire] = field(default_factory=list)
    results: list[Wire] = field(default_factory=list)
    sync: SyncConfiguration | None = None
    at: datetime = T0

    def batch(self) -> Batch:
        return Batch(self.settings, self.at)

    def apply(self, command: Command) -> Decision:
        self.at += timedelta(minutes=1)
        decision = decide(self.sync, command, self.at)
        batch = self.batch()
        for change in decision.changes:
            batch._persist(command, change)
        self.events += _rows(batch)
        if command.command_id is not None:
            final = decision.final if decision.visible else None
            result = command_result(
                command.command_id,
                command.type.value,
                command.sync_config_id,
                decision,
                final,
            )
            batch._record_result(
                command.command_id, command.type.value, command.sync_config_id, None, result
            )
            self.results += _rows(batch)
        self.sync = decision.final or self.sync
        return decision

    def run(self, command_type: CommandType, data: dict[str, Any]) -> Decision:
        return self.apply(make_command(command_type, data))

    def lock(self) -> dict[str, Any]:
        assert self.sync is not None
        return {"run_id": str(self.sync.current_sync_run_id), "lock_token": self.sync.lock_token}

    def rejected(self, command_type: CommandType, data: Any) -> None:
        """A command whose data ``parse_data`` rejects: a result with its error."""
        error = parse_data(command_type, SYNC_ID, data)
        assert isinstance(error, CommandError)
        batch = self.batch()
        command_id = f"cmd_bad_{len(self.results)}"
        result = CommandResult(
            command_id=command_id,
            command_type=command_type.value,
            sync_config_id=SYNC_ID,
            outcome=Outcome.REJECTED,
            error=error,
        )
        batch._record_result(command_id, command_type.value, SYNC_ID, None, result)
        self.results += _rows(batch)


@cache
def scenario() -> Scenario:
    s = Scenario(settings=Settings.model_construct())
    s.run(C.CREATE, {**CREATE_DATA, "polling_interval_seconds": 60})
    s.run(C.UPDATE, {"batch_size": 10, "updated_by_user_id": "user_alice"})
    s.run(C.RUN_START, {"worker_id": "worker_1", "lease_seconds": 60})  # PENDING -> ACTIVE
    s.run(C.RUN_HEARTBEAT, s.lock())
    s.run(C.RUN_CHECKPOINT, {**s.lock(), "files_synced": 3, "resume_cursor": "page-2"})
    s.run(C.RUN_COMPLETE, {**s.lock(), "files_synced": 5, "bytes_synced": 100, "batch_ids": ["b"]})
    s.run(C.TRIGGER, {"requested_by_user_id": "user_bob"})
    s.run(C.RUN_START, {"worker_id": "worker_2", "lease_seconds": 60})
    s.run(C.RUN_FAIL, {**s.lock(), "error": "connection reset"})
    s.run(C.RUN_START, {"worker_id": "worker_3", "lease_seconds": 5})
    assert s.sync is not None
    s.apply(system_command(s.sync, SystemTrigger.LOCK_EXPIRED))
    s.apply(system_command(s.sync, SystemTrigger.REQUEST_RUN))
    s.run(C.PAUSE, {"paused_by_user_id": "user_bob", "reason": "maintenance"})
    s.run(C.PAUSE, {"paused_by_user_id": "user_bob"})  # noop
    s.run(C.PAUSE, {"hold": "maint:INC-42", "until": "PT2H", "paused_by_user_id": "user_carol"})
    s.run(C.RESUME, {"resumed_by_user_id": "user_bob"})  # the plain hold: still SUSPENDED
    s.apply(system_command(s.sync, SystemTrigger.PAUSE_EXPIRED))  # not yet: a noop
    s.run(C.RESUME, {"hold": "maint:INC-42", "resumed_by_user_id": "user_carol", "mode": "full"})
    s.run(C.RUN_START, {"worker_id": "worker_4", "lease_seconds": 60})
    s.run(C.UNLOCK, {"unlocked_by_user_id": "user_bob", "reason": "worker stuck"})
    s.run(C.UNLOCK, {})  # noop
    s.run(C.RUN_HEARTBEAT, {"run_id": RUN_ID, "lock_token": 99})  # lock_lost
    s.run(C.CANCEL, {"reason": "not needed"})
    s.run(C.ARCHIVE, {})
    s.run(C.PAUSE, {"paused_by_user_id": "user_bob"})  # invalid_transition
    s.rejected(C.PAUSE, {"paused_by_user_id": ""})
    return s


# --- (a) the checked-in documents are current ----------------------------------------------


def test_checked_in_asyncapi_document_is_current() -> None:
    path = DOCS / "asyncapi.json"
    assert path.exists(), f"docs/asyncapi.json is missing: run `{REGENERATE}`"
    assert path.read_text(encoding="utf-8") == to_json(document()), (
        f"docs/asyncapi.json is out of date with the code: run `{REGENERATE}`"
    )


def test_checked_in_json_schemas_are_current() -> None:
    directory = DOCS / "schemas"
    on_disk = {p.name for p in directory.glob("*.json")}
    generated = standalone()
    assert on_disk == set(generated), (
        f"docs/schemas/ differs from the code: run `{REGENERATE}`"
        f" (missing: {sorted(set(generated) - on_disk)};"
        f" delete: {sorted(on_disk - set(generated))})"
    )
    stale = [
        name
        for name, schema in generated.items()
        if (directory / name).read_text(encoding="utf-8") != to_json(schema)
    ]
    assert not stale, f"docs/schemas/{stale} are out of date with the code: run `{REGENERATE}`"


def test_documents_do_not_depend_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCLIFE_COMMANDS_TOPIC", "elsewhere")
    assert asyncapi_document() == document()
    configured = asyncapi_document(Settings())
    assert configured["channels"]["commands"]["address"] == "elsewhere"


# --- (b) real messages validate; invalid ones do not ---------------------------------------


@pytest.mark.parametrize(
    ("command_type", "data"), [(t, d) for t, examples in VALID.items() for d in examples]
)
def test_valid_command_data_validates(command_type: CommandType, data: dict[str, Any]) -> None:
    parsed = parse_data(command_type, SYNC_ID, data)
    assert not isinstance(parsed, CommandError), parsed
    mid = command_message_id(command_type)
    assert errors(mid, "payload", data) == []
    for dumped in (
        parsed.model_dump(mode="json"),
        parsed.model_dump(mode="json", exclude_unset=True),
        parsed.model_dump(mode="json", exclude_none=True),
    ):
        assert errors(mid, "payload", json.loads(json.dumps(dumped))) == [], dumped


def test_every_command_type_has_a_valid_example() -> None:
    assert set(VALID) == set(CommandType)


@pytest.mark.parametrize(("command_type", "data"), INVALID)
def test_invalid_command_data_fails(command_type: CommandType, data: dict[str, Any]) -> None:
    parsed = parse_data(command_type, SYNC_ID, data)
    if not isinstance(parsed, CommandError):
        # The configuration's limits are checked when the sync is built from the data.
        created = decide(None, make_command(C.CREATE, CREATE_DATA), T0).final
        existing = None if command_type is C.CREATE else created
        decision = decide(existing, make_command(command_type, data), T0)
        assert decision.outcome is Outcome.REJECTED, f"the code accepts {data}"
    assert errors(command_message_id(command_type), "payload", data) != []


@pytest.mark.parametrize("command_type", list(CommandType))
def test_command_headers_validate(command_type: CommandType) -> None:
    """Headers as the client builds them; and without the credentials they do not."""
    mid = command_message_id(command_type)
    extra = {
        "authorization": f"Bearer {API_KEY}",
        "x-namespace": "ns_marketing",
        "ce_expectedversion": "3",
    }
    raw = ce_headers(
        event_id="cmd_1", event_type=command_type.value, source="test", subject=SYNC_ID, time=T0
    ) + [(k, v.encode()) for k, v in extra.items()]
    headers = text_headers(raw)
    assert errors(mid, "headers", headers) == []
    for missing in ("authorization", "x-namespace", "ce_id"):
        without = {k: v for k, v in headers.items() if k != missing}
        assert errors(mid, "headers", without) != [], missing
    assert errors(mid, "headers", {**headers, "ce_type": "sync.other"}) != []
    assert errors(mid, "headers", {**headers, "authorization": "Bearer nope"}) != []
    assert errors(mid, "headers", {**headers, "ce_expectedversion": "-1"}) != []


def test_every_event_type_is_produced_and_validates() -> None:
    s = scenario()
    seen: set[EventType] = set()
    base = set(LifecycleEvent.model_fields) - _event_extras()
    for wire in s.events:
        assert wire.topic == s.settings.lifecycle_topic
        event_type = EventType(wire.headers["ce_type"])
        seen.add(event_type)
        mid = event_message_id(event_type)
        data = json.loads(wire.value)
        assert errors(mid, "payload", data) == [], (event_type, data)
        assert errors(mid, "headers", wire.headers) == [], wire.headers
        assert wire.key == data["sync_config_id"].encode()
        # The fields the document says this type carries are exactly the ones it carries.
        documented = set(_refinement(mid)["required"]) - base
        carried = set(data) - base
        if event_type is E.STATUS_CHANGED:
            assert carried <= _event_extras()
        else:
            assert carried == documented, event_type
    assert seen == set(EventType)


def test_invalid_events_fail() -> None:
    started = next(w for w in scenario().events if w.headers["ce_type"] == E.RUN_STARTED)
    data = json.loads(started.value)
    mid = event_message_id(E.RUN_STARTED)
    assert errors(mid, "payload", {k: v for k, v in data.items() if k != "run_id"}) != []
    assert errors(mid, "payload", {**data, "lock_token": None}) != []
    assert errors(mid, "payload", {**data, "version": "two"}) != []
    assert errors(mid, "payload", {**data, "unknown": 1}) != []
    assert errors(mid, "headers", {**started.headers, "ce_type": E.RUN_FAILED.value}) != []
    assert errors(event_message_id(E.RUN_FAILED), "payload", data) != []


def test_every_kind_of_result_validates() -> None:
    s = scenario()
    outcomes: set[str] = set()
    codes: set[str] = set()
    for wire in s.results:
        assert wire.topic == s.settings.results_topic
        data = json.loads(wire.value)
        outcomes.add(data["outcome"])
        if data["error"] is not None:
            codes.add(data["error"]["code"])
        assert errors(RESULT_MESSAGE, "payload", data) == [], data
        assert errors(RESULT_MESSAGE, "headers", wire.headers) == [], wire.headers
        assert wire.headers["ce_type"] == RESULT_TYPE
    assert outcomes == {"applied", "noop", "rejected"}
    assert {"lock_lost", "invalid_transition", "validation_error"} <= codes

    applied = json.loads(s.results[0].value)
    assert errors(RESULT_MESSAGE, "payload", {**applied, "outcome": "maybe"}) != []
    assert errors(RESULT_MESSAGE, "payload", {**applied, "error": {"code": "oops"}}) != []
    del applied["command_id"]
    assert errors(RESULT_MESSAGE, "payload", applied) != []


def test_dead_letter_headers_validate() -> None:
    s = scenario()
    batch = s.batch()
    headers = [
        ("ce_specversion", b"1.0"),
        ("authorization", f"Bearer {API_KEY}".encode()),
    ]
    record = FakeRecord(s.settings.commands_topic, 3, 42, SYNC_ID.encode(), b"{oops", headers)
    batch.dead_letter(record, "invalid_json")
    (wire,) = _rows(batch)
    assert wire.topic == s.settings.dlq_topic
    assert errors(DEAD_LETTER_MESSAGE, "headers", wire.headers) == [], wire.headers
    assert API_KEY not in json.dumps(wire.headers)
    without = {k: v for k, v in wire.headers.items() if k != "dlq_reason"}
    assert errors(DEAD_LETTER_MESSAGE, "headers", without) != []
    leaked = {**wire.headers, "authorization": f"Bearer {API_KEY}"}
    assert errors(DEAD_LETTER_MESSAGE, "headers", leaked) != []


def _event_extras() -> set[str]:
    """The type-specific fields of ``LifecycleEvent`` (left out where they do not apply)."""
    schema = document()["components"]["schemas"]["LifecycleEvent"]
    return set(schema["properties"]) - set(schema["required"]) - {"from_status", "to_status"}


def _refinement(message_id: str) -> dict[str, Any]:
    payload = document()["components"]["messages"][message_id]["payload"]
    refinement: dict[str, Any] = payload["allOf"][1]
    return refinement


# --- (c) the AsyncAPI document -------------------------------------------------------------


def test_asyncapi_version_and_every_message() -> None:
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    messages = doc["components"]["messages"]
    names = {m["name"] for m in messages.values()}
    assert {t.value for t in CommandType} <= names
    assert {t.value for t in EventType} <= names
    assert RESULT_TYPE in names
    for command_type in CommandType:
        assert command_message_id(command_type) in doc["channels"]["commands"]["messages"]
    for event_type in EventType:
        assert event_message_id(event_type) in doc["channels"]["lifecycle"]["messages"]
    assert set(doc["channels"]["commandResults"]["messages"]) == {RESULT_MESSAGE}
    assert set(doc["channels"]["deadLetters"]["messages"]) == {DEAD_LETTER_MESSAGE}
    settings = Settings.model_construct()
    addresses = {name: channel["address"] for name, channel in doc["channels"].items()}
    assert addresses == {
        "commands": settings.commands_topic,
        "lifecycle": settings.lifecycle_topic,
        "commandResults": settings.results_topic,
        "deadLetters": settings.dlq_topic,
    }
    actions = {op["channel"]["$ref"]: op["action"] for op in doc["operations"].values()}
    assert actions == {
        "#/channels/commands": "receive",
        "#/channels/lifecycle": "send",
        "#/channels/commandResults": "send",
        "#/channels/deadLetters": "send",
    }


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [
            ref
            for key, value in node.items()
            for ref in ([value] if key == "$ref" and isinstance(value, str) else _refs(value))
        ]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def _resolve(doc: Any, ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node = doc
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def test_every_ref_resolves_inside_the_document() -> None:
    doc = document()
    refs = _refs(doc)
    assert refs
    for ref in refs:
        try:
            _resolve(doc, ref)
        except (KeyError, IndexError, ValueError) as exc:
            pytest.fail(f"{ref} does not resolve: {exc!r}")


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_standalone_schemas_are_valid_and_self_contained(name: str) -> None:
    schema = standalone()[name]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/"), ref
        _resolve(schema, ref)


def test_component_schemas_are_valid() -> None:
    for schema in document()["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
