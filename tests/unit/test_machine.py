"""``decide`` for the lifecycle commands: every rule of ``TABLE``, create, tenancy, versions.

The expectations come from a hand-written table (``EXPECTED``), written from the wire contract
(docs/contract.md) and the seed's sync model, not from ``table.TABLE``; a separate test checks
that the two agree.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, Literal

import pytest

from statemachine.commands import CommandType
from statemachine.decider import decide
from statemachine.decision import Decision, EventType, Outcome
from statemachine.errors import ErrorCode
from statemachine.model import SyncConfiguration
from statemachine.status import SYNC_STATUSES, TERMINAL_STATUSES, SyncStatus
from statemachine.table import TABLE
from tests.helpers.syncs import (
    NS,
    ORG,
    SYNC_ID,
    T0,
    T1,
    lifecycle_command,
    make_command,
    make_sync,
)

S = SyncStatus
C = CommandType
NOW = T1

LIFECYCLE: tuple[CommandType, ...] = (
    C.ACTIVATE,
    C.UPDATE,
    C.PAUSE,
    C.RESUME,
    C.CANCEL,
    C.ARCHIVE,
)

Expectation = tuple[Literal["applied"], SyncStatus] | tuple[Literal["noop"], None]


def applied(dest: SyncStatus) -> Expectation:
    return ("applied", dest)


NOOP: Expectation = ("noop", None)

#: Hand-written from the contract: status -> command -> what it does. Missing: invalid.
EXPECTED: dict[SyncStatus, dict[CommandType, Expectation]] = {
    S.DRAFT: {
        C.ACTIVATE: applied(S.PENDING),
        C.UPDATE: applied(S.DRAFT),
        C.CANCEL: applied(S.CANCELED),
        C.ARCHIVE: applied(S.ARCHIVED),
    },
    S.PENDING: {
        C.ACTIVATE: NOOP,
        C.UPDATE: applied(S.PENDING),
        C.PAUSE: applied(S.SUSPENDED),
        C.RESUME: NOOP,
        C.CANCEL: applied(S.CANCELED),
        C.ARCHIVE: applied(S.ARCHIVED),
    },
    S.ACTIVE: {
        C.ACTIVATE: NOOP,
        C.UPDATE: applied(S.ACTIVE),
        C.PAUSE: applied(S.SUSPENDED),
        C.RESUME: NOOP,
        C.CANCEL: applied(S.CANCELED),
        C.ARCHIVE: applied(S.ARCHIVED),
    },
    S.SUSPENDED: {
        C.UPDATE: applied(S.SUSPENDED),
        # Another user's pause places their own hold (v1.1): still SUSPENDED.
        C.PAUSE: applied(S.SUSPENDED),
        C.RESUME: applied(S.ACTIVE),
        C.CANCEL: applied(S.CANCELED),
        C.ARCHIVE: applied(S.ARCHIVED),
    },
    S.COMPLETED: {
        C.ARCHIVE: applied(S.ARCHIVED),
    },
    # An initial_only sync whose run kept failing: resume (or trigger) retries it from PENDING.
    S.FAILED: {
        C.UPDATE: applied(S.FAILED),
        C.RESUME: applied(S.PENDING),
        C.CANCEL: applied(S.CANCELED),
        C.ARCHIVE: applied(S.ARCHIVED),
    },
    S.CANCELED: {
        C.CANCEL: NOOP,
        C.ARCHIVE: applied(S.ARCHIVED),
    },
    S.ARCHIVED: {
        C.ARCHIVE: NOOP,
    },
}

PAIRS = [(command, status) for status in sorted(SYNC_STATUSES) for command in LIFECYCLE]


def table_implied() -> dict[SyncStatus, dict[CommandType, Expectation]]:
    """What ``table.TABLE`` says about the lifecycle commands, in the shape of EXPECTED."""
    implied: dict[SyncStatus, dict[CommandType, Expectation]] = {s: {} for s in SYNC_STATUSES}
    conditional: set[tuple[CommandType, SyncStatus]] = set()
    for rule in TABLE:
        if rule.command not in LIFECYCLE:
            continue
        assert isinstance(rule.command, CommandType)
        # The only condition of a lifecycle rule: a resume that releases the last hold runs
        # the sync again (EXPECTED is of a sync paused by a plain hold: it does); the rule
        # after it (holds left) is the fallback.
        assert rule.condition in (None, "no_hold_left"), rule
        for source in rule.sources:
            if (rule.command, source) in conditional:
                continue
            if rule.condition is not None:
                conditional.add((rule.command, source))
            assert rule.command not in implied[source], f"two rules for {rule.command}/{source}"
            implied[source][rule.command] = (
                NOOP if rule.noop else applied(rule.dest if rule.dest is not None else source)
            )
    return implied


LOCK_HOLDER_REPORTS = {
    CommandType.RUN_HEARTBEAT,
    CommandType.RUN_CHECKPOINT,
    CommandType.RUN_COMPLETE,
    CommandType.RUN_FAIL,
}
#: Offered only while a run holds the lock: the holder's reports, and unlock (else a noop).
LOCK_COMMANDS = {*LOCK_HOLDER_REPORTS, CommandType.UNLOCK}


def non_lifecycle_allowed(status: SyncStatus, locked: bool = False) -> set[str]:
    """Commands other than the lifecycle ones that TABLE allows from ``status``.

    A worker's reports and unlock are only offered while a run lock is held.
    """
    return {
        r.command.value
        for r in TABLE
        if isinstance(r.command, CommandType)
        and r.command not in LIFECYCLE
        and status in r.sources
        and (locked or r.command not in LOCK_COMMANDS)
    }


def test_allowed_commands_offer_run_reports_only_while_locked() -> None:
    from statemachine.table import allowed_commands

    locked = allowed_commands(SyncStatus.CANCELED, locked=True)
    free = allowed_commands(SyncStatus.CANCELED, locked=False)
    assert "sync.run.complete" in locked and "sync.run.heartbeat" in locked
    assert "sync.unlock" in locked
    assert free == ["sync.archive", "sync.cancel"]


def base_sync(status: SyncStatus, **overrides: Any) -> SyncConfiguration:
    # version 3 so "+1" is not confused with a fresh sync; the next run is not yet due, so
    # resuming changes the status only (a due run is requested too: see its own test).
    fields: dict[str, Any] = {"version": 3, "next_sync_at": NOW + timedelta(hours=1)}
    fields.update(overrides)
    return make_sync(status=status, **fields)


def pause_fields_set(sync: SyncConfiguration) -> bool:
    return sync.paused_at is not None and sync.paused_by_user_id is not None


# --------------------------------------------------------------------------- the table


def test_expectations_cover_only_sync_statuses() -> None:
    assert set(EXPECTED) == SYNC_STATUSES
    assert len(SYNC_STATUSES) == 8
    assert {S.COMPLETED, S.CANCELED, S.ARCHIVED} == TERMINAL_STATUSES


def test_hand_written_expectations_equal_what_table_implies() -> None:
    assert table_implied() == EXPECTED


@pytest.mark.parametrize(("command_type", "status"), PAIRS)
def test_every_command_from_every_status(command_type: CommandType, status: SyncStatus) -> None:
    sync = base_sync(status)
    before = sync.model_copy(deep=True)
    command = lifecycle_command(command_type)
    decision = decide(sync, command, NOW)
    assert sync == before  # decide is pure
    assert decision.visible is True
    assert decision.sync == sync
    expected = EXPECTED[status].get(command_type)

    if expected is None:
        assert decision.outcome is Outcome.REJECTED
        assert decision.changes == ()
        assert decision.error is not None
        assert decision.error.code is ErrorCode.INVALID_TRANSITION
        allowed_lifecycle = {c.value for c in EXPECTED[status]}
        assert decision.error.details == {
            "current_status": status.value,
            "allowed_commands": sorted(allowed_lifecycle | non_lifecycle_allowed(status)),
        }
        assert command_type.value not in decision.error.details["allowed_commands"]
        assert decision.final == sync
        return

    if expected == NOOP:
        assert decision.outcome is Outcome.NOOP
        assert decision.error is None
        assert decision.changes == ()
        assert decision.final == sync
        return

    dest = expected[1]
    assert dest is not None
    assert decision.outcome is Outcome.APPLIED
    assert decision.error is None
    change, *more = decision.changes
    after = change.sync
    if (status, command_type) == (S.FAILED, C.RESUME):  # the retry's run is requested at once
        assert [c.event_type for c in more] == [EventType.RUN_REQUESTED]
    else:
        assert more == []
        assert decision.final == after
    assert after.status is dest
    assert after.version == sync.version + 1
    assert after.updated_at == NOW
    assert after.is_active is (dest is S.ACTIVE)
    assert after.paused is (dest is S.SUSPENDED)
    assert pause_fields_set(after) is (dest is S.SUSPENDED)
    unchanged = EventType.HOLDS_CHANGED if command_type is C.PAUSE else EventType.UPDATED
    assert change.event_type is (EventType.STATUS_CHANGED if dest is not status else unchanged)
    assert change.from_status is status
    assert change.to_status is dest
    assert change.trigger == command_type.value
    assert change.actor == "user:user_bob"
    # Identity and tenancy never change.
    for field in ("sync_config_id", "bucket_id", "internal_id", "namespace_id", "created_at"):
        assert getattr(after, field) == getattr(sync, field)


def test_every_lifecycle_pair_is_covered() -> None:
    assert len(PAIRS) == len(set(PAIRS)) == 8 * 6
    outcomes = [EXPECTED[s].get(c, ("invalid", None))[0] for c, s in PAIRS]
    assert (outcomes.count("applied"), outcomes.count("noop"), outcomes.count("invalid")) == (
        23,
        6,
        19,
    )


# --------------------------------------------------------------------------- pause and resume


@pytest.mark.parametrize("status", [S.PENDING, S.ACTIVE])
def test_pause_suspends_and_records_who_why_when(status: SyncStatus) -> None:
    sync = base_sync(status)
    decision = decide(sync, lifecycle_command(C.PAUSE), NOW)
    after = decision.final
    assert after is not None
    assert after.status is S.SUSPENDED
    assert after.paused is True
    assert after.is_active is False
    assert after.pause_reason == "quarterly audit"
    assert after.paused_at == NOW
    assert after.paused_by_user_id == "user_bob"
    assert decision.changes[0].reason == "quarterly audit"
    # Settings are kept.
    assert after.model_dump(include={"batch_size", "polling_interval_seconds", "metadata"}) == (
        sync.model_dump(include={"batch_size", "polling_interval_seconds", "metadata"})
    )


def test_pause_of_a_suspended_sync_adds_a_hold_and_keeps_the_first_pause() -> None:
    sync = base_sync(S.SUSPENDED, pause_reason="first", paused_by_user_id="user_carol")
    decision = decide(sync, lifecycle_command(C.PAUSE), NOW)
    assert decision.outcome is Outcome.APPLIED
    after = decision.final
    assert after is not None and after.status is S.SUSPENDED
    assert [h.hold for h in after.pause_holds] == ["user:user_carol", "user:user_bob"]
    # The seed's fields describe the earliest hold.
    assert (after.pause_reason, after.paused_by_user_id) == ("first", "user_carol")
    # The same pause again changes nothing.
    again = decide(after, lifecycle_command(C.PAUSE), NOW)
    assert again.outcome is Outcome.NOOP and again.final == after


def test_resume_activates_and_clears_the_pause() -> None:
    sync = base_sync(S.SUSPENDED)
    assert pause_fields_set(sync)
    decision = decide(sync, lifecycle_command(C.RESUME), NOW)
    after = decision.final
    assert after is not None
    assert after.status is S.ACTIVE
    assert after.is_active is True
    assert after.paused is False
    assert (after.pause_reason, after.paused_at, after.paused_by_user_id) == (None, None, None)


def test_resume_when_a_run_is_due_also_requests_an_incremental_run() -> None:
    last_sync = T0 + timedelta(hours=5)
    sync = base_sync(S.SUSPENDED, next_sync_at=None, last_sync_at=last_sync)
    decision = decide(sync, lifecycle_command(C.RESUME), NOW)
    assert decision.outcome is Outcome.APPLIED
    assert [c.event_type for c in decision.changes] == [
        EventType.STATUS_CHANGED,
        EventType.RUN_REQUESTED,
    ]
    # One version per change, gap-free.
    assert [c.sync.version for c in decision.changes] == [sync.version + 1, sync.version + 2]
    assert decision.changes[0].sync.status is S.ACTIVE
    requested = decision.changes[1]
    assert requested.sync.status is S.ACTIVE
    assert requested.from_status is requested.to_status is S.ACTIVE
    assert dict(requested.extra)["modified_since"] == last_sync
    assert requested.sync.next_sync_at == NOW + timedelta(seconds=sync.polling_interval_seconds)


@pytest.mark.parametrize("status", [S.ACTIVE, S.PENDING])
def test_resume_of_a_running_sync_is_a_noop(status: SyncStatus) -> None:
    decision = decide(base_sync(status), lifecycle_command(C.RESUME), NOW)
    assert decision.outcome is Outcome.NOOP
    assert decision.changes == ()


@pytest.mark.parametrize("command_type", [C.PAUSE, C.RESUME])
@pytest.mark.parametrize("status", [S.COMPLETED, S.CANCELED, S.ARCHIVED])
def test_pause_and_resume_from_a_terminal_status_are_invalid(
    command_type: CommandType, status: SyncStatus
) -> None:
    decision = decide(base_sync(status), lifecycle_command(command_type), NOW)
    assert decision.outcome is Outcome.REJECTED
    assert decision.error is not None
    assert decision.error.code is ErrorCode.INVALID_TRANSITION
    assert decision.error.details["current_status"] == status.value
    assert "sync.archive" in decision.error.details["allowed_commands"]


LIFECYCLE_REASONS = {C.CANCEL: "no longer needed", C.ARCHIVE: "cleanup"}


@pytest.mark.parametrize("command_type", [C.CANCEL, C.ARCHIVE])
def test_cancel_and_archive_of_a_suspended_sync_clear_the_pause(
    command_type: CommandType,
) -> None:
    decision = decide(base_sync(S.SUSPENDED), lifecycle_command(command_type), NOW)
    after = decision.final
    assert after is not None
    assert after.paused is False
    assert (after.pause_reason, after.paused_at, after.paused_by_user_id) == (None, None, None)
    assert decision.changes[0].reason == LIFECYCLE_REASONS[command_type]


def test_actor_falls_back_to_the_key() -> None:
    command = dataclasses.replace(make_command(C.CANCEL, {}), key_id="key_42")
    decision = decide(base_sync(S.ACTIVE), command, NOW)
    assert decision.changes[0].actor == "key:key_42"


# --------------------------------------------------------------------------- create

CREATE_DATA: dict[str, Any] = {
    "bucket_id": "bkt_marketing_assets",
    "connection_id": "conn_abc123",
    "provider": "sharepoint",
    "source_path": "/sites/Marketing/Shared Documents",
    "created_by_user_id": "user_alice",
}


def create(data: dict[str, Any], sync: SyncConfiguration | None = None, **kw: Any) -> Decision:
    return decide(sync, make_command(C.CREATE, data, **kw), NOW)


@pytest.mark.parametrize("initial", [None, S.PENDING, S.DRAFT, S.SUSPENDED])
def test_create(initial: SyncStatus | None) -> None:
    data = dict(CREATE_DATA)
    if initial is not None:
        data["initial_status"] = initial.value
    status = initial or S.PENDING
    decision = create(data)
    assert decision.outcome is Outcome.APPLIED
    assert decision.sync is None
    assert decision.error is None
    (change,) = decision.changes
    assert change.event_type is EventType.CREATED
    assert change.from_status is None
    assert change.to_status is status
    assert change.actor == "user:user_alice"
    sync = change.sync
    assert decision.final == sync
    assert sync.status is status
    assert sync.version == 1
    assert sync.sync_config_id == SYNC_ID
    assert (sync.internal_id, sync.namespace_id) == (ORG, NS)
    assert sync.created_at == sync.updated_at == NOW
    assert sync.is_active is False
    assert sync.paused is (status is S.SUSPENDED)
    assert pause_fields_set(sync) is (status is S.SUSPENDED)
    assert sync.batch_size == 50  # defaults of the table apply


def test_create_suspended_records_the_pause() -> None:
    decision = create({**CREATE_DATA, "initial_status": "SUSPENDED", "reason": "not yet"})
    sync = decision.final
    assert sync is not None
    assert sync.status is S.SUSPENDED
    assert sync.paused is True
    assert sync.pause_reason == "not yet"
    assert sync.paused_at == NOW
    assert sync.paused_by_user_id == "user_alice"


def test_create_applies_settings() -> None:
    decision = create(
        {**CREATE_DATA, "batch_size": 7, "max_batch_chunk_size": 20, "batch_chunk_size": 20}
    )
    sync = decision.final
    assert sync is not None
    assert (sync.batch_size, sync.max_batch_chunk_size, sync.batch_chunk_size) == (7, 20, 20)


@pytest.mark.parametrize(
    ("extra", "field", "limit"),
    [
        ({"polling_interval_seconds": 29}, "polling_interval_seconds", {"ge": 30}),
        ({"batch_size": 101}, "batch_size", {"le": 100}),
        ({"max_batch_chunk_size": 50}, "batch_chunk_size", {"le": 50}),
        ({"source_path": "Marketing/Docs"}, "source_path", None),
    ],
)
def test_create_with_invalid_configuration(
    extra: dict[str, Any], field: str, limit: dict[str, Any] | None
) -> None:
    decision = create({**CREATE_DATA, **extra})
    assert decision.outcome is Outcome.REJECTED
    assert decision.changes == ()
    assert decision.sync is None
    assert decision.visible is False
    assert decision.error is not None
    assert decision.error.code is ErrorCode.VALIDATION_ERROR
    (error,) = decision.error.details["errors"]
    assert error["field"] == field
    assert error.get("limit") == limit


def test_create_of_an_existing_id_already_exists() -> None:
    existing = base_sync(S.ACTIVE)
    decision = create(CREATE_DATA, existing)
    assert decision.outcome is Outcome.REJECTED
    assert decision.error is not None
    assert decision.error.code is ErrorCode.ALREADY_EXISTS
    assert decision.changes == ()
    assert decision.final == existing


@pytest.mark.parametrize("tenancy", [{"internal_id": "org_other"}, {"namespace_id": "ns_other"}])
def test_create_over_another_tenants_id_reveals_nothing(tenancy: dict[str, str]) -> None:
    decision = create(CREATE_DATA, base_sync(S.ACTIVE), **tenancy)
    assert decision.outcome is Outcome.REJECTED
    assert decision.error is not None
    assert decision.error.code is ErrorCode.ALREADY_EXISTS
    assert decision.visible is False
    assert decision.sync is None
    assert decision.final is None


@pytest.mark.parametrize(("expected_version", "ok"), [(0, True), (1, False)])
def test_create_expected_version_is_zero(expected_version: int, ok: bool) -> None:
    decision = create(CREATE_DATA, expected_version=expected_version)
    assert decision.outcome is (Outcome.APPLIED if ok else Outcome.REJECTED)
    if not ok:
        assert decision.error is not None
        assert decision.error.code is ErrorCode.VERSION_CONFLICT
        assert decision.error.details == {"expected_version": 1, "current_version": 0}


# --------------------------------------------------------------------------- tenancy, versions


@pytest.mark.parametrize("command_type", LIFECYCLE)
@pytest.mark.parametrize("tenancy", [{"internal_id": "org_other"}, {"namespace_id": "ns_other"}])
def test_another_tenants_sync_is_not_found(
    command_type: CommandType, tenancy: dict[str, str]
) -> None:
    sync = base_sync(S.ACTIVE)
    # Even a wrong expected version does not reveal the sync's version.
    command = lifecycle_command(command_type, expected_version=99, **tenancy)
    decision = decide(sync, command, NOW)
    assert decision.outcome is Outcome.REJECTED
    assert decision.error is not None
    assert decision.error.code is ErrorCode.NOT_FOUND
    assert decision.error.details == {}
    assert decision.visible is False
    assert decision.sync is None
    assert decision.final is None
    assert decision.changes == ()


@pytest.mark.parametrize("command_type", LIFECYCLE)
def test_missing_sync_is_not_found(command_type: CommandType) -> None:
    decision = decide(None, lifecycle_command(command_type), NOW)
    assert decision.outcome is Outcome.REJECTED
    assert decision.error is not None
    assert decision.error.code is ErrorCode.NOT_FOUND
    assert decision.visible is False
    assert decision.sync is None


@pytest.mark.parametrize("command_type", LIFECYCLE)
def test_expected_version_mismatch_is_a_conflict(command_type: CommandType) -> None:
    sync = base_sync(S.ACTIVE)
    decision = decide(sync, lifecycle_command(command_type, expected_version=2), NOW)
    assert decision.outcome is Outcome.REJECTED
    assert decision.error is not None
    assert decision.error.code is ErrorCode.VERSION_CONFLICT
    assert decision.error.details == {"expected_version": 2, "current_version": 3}
    assert decision.final == sync
    assert decision.changes == ()


def test_expected_version_match_applies() -> None:
    sync = base_sync(S.ACTIVE)
    decision = decide(sync, lifecycle_command(C.PAUSE, expected_version=3), NOW)
    assert decision.outcome is Outcome.APPLIED
    assert decision.final is not None
    assert decision.final.version == 4


# --------------------------------------------------------------------------- update


@pytest.mark.parametrize("status", [S.DRAFT, S.PENDING, S.ACTIVE, S.SUSPENDED])
def test_update_changes_only_the_given_fields(status: SyncStatus) -> None:
    sync = base_sync(status, metadata={"team": "marketing"})
    command = make_command(
        C.UPDATE,
        {
            "polling_interval_seconds": 900,
            "file_filters": {"include_patterns": ["*.pdf"], "min_size_bytes": 1},
            "metadata": {"team": "brand"},
        },
    )
    decision = decide(sync, command, NOW)
    after = decision.final
    assert after is not None
    assert after.polling_interval_seconds == 900
    assert after.metadata == {"team": "brand"}
    assert after.file_filters is not None
    assert after.file_filters.include_patterns == ["*.pdf"]
    assert after.file_filters.min_size_bytes == 1
    unchanged = set(SyncConfiguration.model_fields) - {
        "polling_interval_seconds",
        "file_filters",
        "metadata",
        "updated_at",
        "version",
    }
    assert after.model_dump(include=unchanged) == sync.model_dump(include=unchanged)
    assert decision.changes[0].event_type is EventType.UPDATED
    assert decision.changes[0].actor == "unknown"


@pytest.mark.parametrize(
    ("sync_overrides", "update", "field", "limit"),
    [
        ({"max_batch_chunk_size": 200}, {"batch_chunk_size": 300}, "batch_chunk_size", {"le": 200}),
        ({"batch_chunk_size": 100}, {"max_batch_chunk_size": 50}, "batch_chunk_size", {"le": 50}),
        ({}, {"polling_interval_seconds": 901}, "polling_interval_seconds", {"le": 900}),
        ({}, {"batch_size": 0}, "batch_size", {"ge": 1}),
        ({}, {"max_objects_per_run": 0}, "max_objects_per_run", {"ge": 1}),
        ({}, {"resume_checkpoint_frequency": 99}, "resume_checkpoint_frequency", {"ge": 100}),
        ({}, {"metadata": {str(i): i for i in range(51)}}, "metadata", {"max_length": 50}),
    ],
)
def test_update_is_validated_against_the_merged_configuration(
    sync_overrides: dict[str, Any], update: dict[str, Any], field: str, limit: dict[str, Any]
) -> None:
    sync = base_sync(S.ACTIVE, **sync_overrides)
    decision = decide(sync, make_command(C.UPDATE, update), NOW)
    assert decision.outcome is Outcome.REJECTED
    assert decision.changes == ()
    assert decision.final == sync
    assert decision.visible is True
    assert decision.error is not None
    assert decision.error.code is ErrorCode.VALIDATION_ERROR
    (error,) = decision.error.details["errors"]
    assert error["field"] == field
    assert error["limit"] == limit


def test_update_of_both_chunk_sizes_together_is_valid() -> None:
    sync = base_sync(S.ACTIVE)
    decision = decide(
        sync, make_command(C.UPDATE, {"max_batch_chunk_size": 50, "batch_chunk_size": 50}), NOW
    )
    assert decision.outcome is Outcome.APPLIED
    assert decision.final is not None
    assert decision.final.batch_chunk_size == decision.final.max_batch_chunk_size == 50


# --------------------------------------------------------------------------- purity


def test_decide_is_pure_and_repeatable() -> None:
    sync = base_sync(S.SUSPENDED, metadata={"k": [1, 2]}, batch_ids=["b1"])
    before = sync.model_copy(deep=True)
    command = lifecycle_command(C.RESUME)
    first = decide(sync, command, NOW)
    second = decide(sync, command, NOW)
    assert sync == before
    assert sync.model_dump() == before.model_dump()
    assert first == second


def test_a_configuration_too_large_to_travel_is_too_large() -> None:
    big = {f"k{i}": "x" * 6000 for i in range(50)}  # 50 keys (the limit), ~300 KB
    decision = create({**CREATE_DATA, "metadata": big})
    assert decision.outcome is Outcome.REJECTED and decision.error is not None
    assert decision.error.code is ErrorCode.TOO_LARGE
    assert decision.error.details["limit"] == 256 * 1024
    sync = make_sync(status=S.ACTIVE)
    grown = decide(sync, make_command(C.UPDATE, {"metadata": big}), NOW)
    assert grown.error is not None and grown.error.code is ErrorCode.TOO_LARGE
    assert grown.changes == ()
    fits = decide(sync, make_command(C.UPDATE, {"metadata": {"k": "x" * 6000}}), NOW)
    assert fits.outcome is Outcome.APPLIED


def test_tracked_batch_and_task_ids_keep_the_most_recent() -> None:
    from uuid import uuid4

    run_id = str(uuid4())
    old = [f"b{i}" for i in range(1000)]
    sync = make_sync(
        status=S.ACTIVE,
        batch_ids=old,
        task_ids=old,
        batches_created=1000,
        lock_token=3,
        sync_run_counter=3,
        current_sync_run_id=run_id,
        locked_by_worker_id="w",
        locked_at=T0,
        lock_expires_at=NOW + timedelta(minutes=5),
    )
    done = decide(
        sync,
        make_command(
            C.RUN_COMPLETE,
            {
                "run_id": str(run_id),
                "lock_token": 3,
                "batch_ids": ["new1", "new2"],
                "task_ids": ["t-new"],
            },
        ),
        NOW,
    )
    final = done.final
    assert final is not None
    assert len(final.batch_ids) == 1000 and final.batch_ids[-2:] == ["new1", "new2"]
    assert final.batch_ids[0] == "b2" and final.batches_created == 1002
    assert len(final.task_ids) == 1000 and final.task_ids[-1] == "t-new"


@pytest.mark.parametrize("mode", ["continuous", "initial_only"])
@pytest.mark.parametrize("failures", [0, 4])
@pytest.mark.parametrize("holds_left", [None, 0, 1])
def test_fire_remembers_the_machine_answer_of_each_condition_combination(
    mode: str, failures: int, holds_left: int | None
) -> None:
    """``fire`` asks the machine once per combination of a conditional pair's condition
    values; what it returns is what the machine says for that sync, every time."""
    from statemachine.runs import DEFAULT_POLICY
    from statemachine.table import _CONDITIONS, _run_machine, fire

    for trigger, status in _CONDITIONS:
        sync = make_sync(status=status, sync_mode=mode, consecutive_failures=failures)
        expected = _run_machine(sync, trigger, DEFAULT_POLICY, holds_left)
        for _ in range(2):  # the first call asks the machine, the second remembers
            assert fire(sync, trigger, DEFAULT_POLICY, holds_left) == expected
