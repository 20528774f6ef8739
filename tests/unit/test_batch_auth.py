"""Who a batch answers, and under which id (in memory, no I/O): a message the service cannot
authenticate or decode is answered under the id derived from its offset, never its ``ce_id``;
a stored result is replayed only to the key that earned it; a command whose Kafka key is not
its sync id is rejected; a poison record gets one ``internal`` result."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.auth import SCOPES, generate_key, grants
from events.envelope import RawCommand, command_headers, decode_command, derived_id
from events.service.processor import decisions
from events.service.processor.decisions import Batch
from events.service.settings import Settings
from events.service.tenancy import ApiKey
from statemachine import Command, ErrorCode, decide

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SYNC = "sync_a"
NAMESPACE = "ns_1"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class World:
    def __init__(self) -> None:
        self.settings = Settings()
        self.batch = Batch(self.settings, NOW)
        self.offset = 0

    def key(
        self,
        key_id: str,
        *,
        revoked: bool = False,
        scopes: frozenset[str] = frozenset({"syncs:write"}),
        user_id: str | None = None,
    ) -> str:
        material = generate_key()
        self.batch.keys[material.plaintext] = ApiKey(
            key_id=key_id,
            internal_id="org_1",
            scopes=scopes,
            namespaces=None,
            expires_at=None,
            revoked_at=NOW - timedelta(hours=1) if revoked else None,
            user_id=user_id,
        )
        self.batch.namespaces[("org_1", NAMESPACE)] = NAMESPACE
        return material.plaintext

    def record(self, command_id: str, api_key: str, key: bytes | None = SYNC.encode()) -> Record:
        self.offset += 1
        headers = command_headers(
            command_id=command_id,
            command_type="sync.pause",
            sync_config_id=SYNC,
            api_key=api_key,
            namespace=NAMESPACE,
            source="test",
        )
        value = json.dumps({"paused_by_user_id": "u"}).encode()
        return Record(self.settings.commands_topic, 0, self.offset, key, value, headers)

    def send(self, record: Record) -> None:
        item = decode_command(record.key, record.value, record.headers, 1 << 20)
        if isinstance(item, RawCommand):
            self.batch.command(record, item)
        else:
            self.batch.undecodable(record, item, True)

    def results(self) -> dict[str, Any]:
        """command id -> its recorded result (as JSON)."""
        return {row[0]: json.loads(row[5]) for row in self.batch.writes.processed}

    def topics(self) -> list[str]:
        return [row[0] for row in self.batch.writes.outbox]


def test_an_unauthenticated_message_is_answered_under_its_offset_and_reserves_nothing() -> None:
    w = World()
    record = w.record("c-1", "sk_" + "a" * 43)  # well formed, unknown
    w.send(record)
    own = derived_id(record.topic, record.partition, record.offset)
    assert list(w.results()) == [own]
    assert w.results()[own]["error"]["code"] == "unauthenticated"
    assert w.batch.writes.live_keys == set()


def test_a_stored_result_is_replayed_only_to_its_key() -> None:
    w = World()
    a = w.key("key_a", revoked=True)
    b = w.key("key_b")
    w.batch.processed["c-1"] = ("key_a", b'{"command_id": "c-1"}')
    w.send(w.record("c-1", a))  # its own key, revoked since: the same result again
    assert w.batch.stats.replayed == 1 and w.batch.writes.processed == []
    w.send(w.record("c-1", b))  # another valid key: not answered, dead-lettered
    assert w.batch.stats.dead_lettered == 1 and w.batch.writes.processed == []
    stranger = w.record("c-1", "sk_" + "b" * 43)  # nobody: answered under its offset
    w.send(stranger)
    assert list(w.results()) == [derived_id(stranger.topic, 0, stranger.offset)]
    assert w.topics() == [
        w.settings.results_topic,
        w.settings.dlq_topic,
        w.settings.results_topic,
    ]


def test_a_command_acts_for_its_keys_user_else_for_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decided: list[Command] = []

    def recording(sync: Any, command: Command, *args: Any) -> Any:
        decided.append(command)
        return decide(sync, command, *args)

    monkeypatch.setattr(decisions, "decide", recording)
    w = World()
    w.send(w.record("c-1", w.key("key_a", user_id="user_ada")))
    w.send(w.record("c-2", w.key("key_b")))
    assert [(c.command_id, c.key_id, c.caller) for c in decided] == [
        ("c-1", "key_a", "user_ada"),
        ("c-2", "key_b", "key:key_b"),
    ]


def test_scopes_grant_down_the_hierarchy_and_run_stands_apart() -> None:
    w = World()
    admin = w.key("key_admin", scopes=frozenset({"syncs:admin"}))
    read = w.key("key_read", scopes=frozenset({"syncs:read"}))
    run = w.key("key_run", scopes=frozenset({"syncs:run"}))
    for n, key in enumerate((admin, read, run)):
        w.send(w.record(f"c-{n}", key))
    results = w.results()
    # Admin includes write: the pause is decided (no such sync here), not refused.
    assert results["c-0"]["error"]["code"] == "not_found"
    for command_id in ("c-1", "c-2"):
        assert results[command_id]["error"]["code"] == "forbidden"
        assert results[command_id]["error"]["details"] == {"required_scope": "syncs:write"}
    assert [grants({s}, "syncs:read") for s in sorted(SCOPES)] == [True, True, False, True]
    assert [grants({s}, "syncs:run") for s in sorted(SCOPES)] == [False, False, True, False]


def test_a_command_whose_kafka_key_is_not_its_sync_id_is_rejected() -> None:
    w = World()
    a = w.key("key_a")
    for n, key in enumerate((None, b"sync_b")):
        w.send(w.record(f"c-{n}", a, key))
    for n in range(2):
        error = w.results()[f"c-{n}"]["error"]
        assert error["code"] == ErrorCode.VALIDATION_ERROR.value
        assert [e["field"] for e in error["details"]["errors"]] == ["key"]
    assert w.batch.writes.live_keys == {"key_a"}
    assert w.batch.writes.inserts == {} and w.batch.writes.updates == {}


def test_a_poison_record_gets_one_internal_result() -> None:
    w = World()
    a = w.key("key_a")
    mine = w.record("c-1", a)
    nobody = w.record("c-2", "sk_" + "c" * 43)
    undecodable = w.record("c-3", a)
    undecodable.value = b"{not json"
    for record in (mine, nobody, undecodable):
        item = decode_command(record.key, record.value, record.headers, 1 << 20)
        w.batch.poisoned(record, item)
    results = w.results()
    assert set(results) == {
        "c-1",
        derived_id(nobody.topic, 0, nobody.offset),
        derived_id(undecodable.topic, 0, undecodable.offset),
    }
    for result in results.values():
        assert result["error"]["code"] == "internal"
        assert result["error"]["details"] == {}
    assert [row[3] for row in w.batch.writes.processed] == ["key_a", None, None]


def test_a_message_type_is_a_metric_label_only_if_it_is_one_of_ours() -> None:
    """``synclife_commands_total{type}`` takes its label from the batch's counts: a type read
    from a hostile message must not become a label (unbounded, and any text at all)."""
    w = World()
    a = w.key("key_a")
    hostile = w.record("c-1", a)
    junk = ("sync.\u2028" + "x" * 5000).encode()
    hostile.headers = [(k, junk if k == "ce_type" else v) for k, v in hostile.headers]
    w.send(hostile)
    w.send(w.record("c-2", a))
    assert set(w.batch.stats.outcomes) == {
        ("unknown", "rejected"),
        ("sync.pause", "rejected"),  # the sync does not exist in this world: not_found
    }


def test_a_dead_letter_with_a_null_header_value_is_a_row_the_relay_can_read() -> None:
    """Kafka header values may be null: the dead letter keeps the header, with an empty value,
    and its outbox row's headers unpack (a row that did not would stop the relay)."""
    from events.service.packed_headers import unpack_headers

    w = World()
    a = w.key("key_a")
    record = w.record("c-1", a)
    record.value = b"{not json"
    record.headers = [*record.headers, ("x-null", None)]  # type: ignore[list-item]
    w.send(record)
    (dead,) = [row for row in w.batch.writes.outbox if row[0] == w.settings.dlq_topic]
    packed = dead[3]  # (topic, key, value, headers)
    headers = dict(unpack_headers(packed))
    assert headers["x-null"] == b""
    assert headers["authorization"] == b"[redacted]"
