"""Random sequences of lifecycle commands through ``decide``, checked against a reference model.

The reference model (tests/helpers/reference.py) is written from the wire contract
(docs/contract.md) as plain conditions, independently of ``table.TABLE``; its ``HoldModel``
follows the pause holds (named, plain, the service's own labels, timed pauses, admin and
force) and the invariants hold after every step: SUSPENDED exactly while a hold is held, the
seed's pause fields describe the earliest hold, a named hold goes only by naming it (its
owner, or admin), force, its expiry or the sync's end, versions are gap-free.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from statemachine.commands import Command, CommandType, SystemTrigger
from statemachine.decider import decide
from statemachine.decision import Decision, EventType, Outcome
from statemachine.durations import parse_until
from statemachine.errors import ErrorCode
from statemachine.model import SyncConfiguration
from statemachine.runs import system_command
from statemachine.status import SYNC_STATUSES, TERMINAL_STATUSES, SyncStatus
from tests.helpers.reference import FAILURES, MAX_PAUSE, HoldModel, RefHold, reference
from tests.helpers.syncs import T0, make_command, make_sync

S = SyncStatus
C = CommandType
HOLDABLE = (S.PENDING, S.ACTIVE, S.SUSPENDED)

COMMAND_DATA: dict[CommandType, st.SearchStrategy[dict[str, Any]]] = {
    C.ACTIVATE: st.fixed_dictionaries({}, optional={"activated_by_user_id": st.just("u1")}),
    # batch_size 0 and 101 are past the limits: a valid transition then fails validation.
    C.UPDATE: st.fixed_dictionaries({"batch_size": st.integers(0, 101)}),
    C.PAUSE: st.fixed_dictionaries(
        {},
        optional={
            "paused_by_user_id": st.sampled_from(["u1", "u2"]),
            "reason": st.sampled_from(["audit", "migration"]),
            "hold": st.sampled_from(["maint:1", "maint:2", "bulk:op1", "System:x"]),
            # Past, too far and malformed-for-now values are refused (validation_error).
            "until": st.sampled_from(["PT10M", "PT1H", "P2D", "P91D", "2000-01-01T00:00:00Z"]),
        },
    ),
    C.RESUME: st.fixed_dictionaries(
        {},
        optional={
            "resumed_by_user_id": st.sampled_from(["u1", "u2"]),
            "hold": st.sampled_from(["maint:1", "maint:2", "bulk:op1", "user:u1", FAILURES]),
            "force": st.booleans(),
            "mode": st.sampled_from(["incremental", "full"]),
            "run": st.sampled_from(["due", "next_interval"]),
        },
    ),
    C.CANCEL: st.fixed_dictionaries({}, optional={"reason": st.just("done")}),
    C.ARCHIVE: st.fixed_dictionaries({}, optional={"reason": st.just("old")}),
    C.TRIGGER: st.fixed_dictionaries({}, optional={"requested_by_user_id": st.just("u3")}),
    # No run ever holds the lock here: unlock is a noop (or refused from ARCHIVED).
    C.UNLOCK: st.fixed_dictionaries({}, optional={"reason": st.just("stuck")}),
}


#: Pauses and resumes about named holds, for the rule that mostly places and releases them.
HOLD_DATA: dict[CommandType, st.SearchStrategy[dict[str, Any]]] = {
    C.PAUSE: st.fixed_dictionaries(
        {"hold": st.sampled_from(["maint:1", "maint:2", "bulk:op1"])},
        optional={
            "reason": st.sampled_from(["audit", "migration"]),
            "until": st.sampled_from(["PT10M", "PT1H"]),
            "paused_by_user_id": st.sampled_from(["u1", "u2"]),
        },
    ),
    C.RESUME: st.fixed_dictionaries(
        {"hold": st.sampled_from(["maint:1", "maint:2", "bulk:op1", "user:u1"])},
        optional={"force": st.booleans(), "resumed_by_user_id": st.sampled_from(["u1", "u2"])},
    ),
}


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sync: SyncConfiguration | None = None
        self.now = T0
        self.model = HoldModel()

    @initialize(
        # Mostly statuses that pauses and resumes act on.
        start=st.sampled_from([S.ACTIVE, S.SUSPENDED, S.PENDING])
        | st.sampled_from(sorted(SYNC_STATUSES)),
        via_create=st.booleans(),
        next_due=st.none() | st.integers(-3600, 3600),
    )
    def start(self, start: SyncStatus, via_create: bool, next_due: int | None) -> None:
        if via_create and start in (S.PENDING, S.DRAFT, S.SUSPENDED):
            command = make_command(
                C.CREATE,
                {
                    "bucket_id": "bkt_1",
                    "connection_id": "conn_1",
                    "provider": "tigris",
                    "source_path": "media-bucket/raw",
                    "created_by_user_id": "u0",
                    "initial_status": start.value,
                },
            )
            decision = decide(None, command, self.now)
            assert decision.outcome is Outcome.APPLIED
            self.sync = decision.final
        else:
            # Built directly: COMPLETED and FAILED are reached by runs, not lifecycle commands.
            next_sync_at = None if next_due is None else self.now + timedelta(seconds=next_due)
            failures = 5 if start is S.FAILED else 0  # FAILED: its run failed 5 times in a row
            self.sync = make_sync(
                status=start, next_sync_at=next_sync_at, consecutive_failures=failures
            )
        assert self.sync is not None
        assert self.sync.status is start
        self.model = HoldModel(
            {h.hold: RefHold(h.paused_by_user_id, h.reason, h.until) for h in self.sync.pause_holds}
        )

    @precondition(lambda self: self.sync is not None)
    @rule(
        command_type=st.sampled_from(list(COMMAND_DATA)),
        data=st.data(),
        elapsed=st.integers(0, 1200),
        caller=st.sampled_from(["u1", "u2", "u3"]),
        admin=st.booleans(),
        service=st.booleans(),
    )
    def send(
        self,
        command_type: CommandType,
        data: st.DataObject,
        elapsed: int,
        caller: str,
        admin: bool,
        service: bool,
    ) -> None:
        self.decide_one(command_type, data, elapsed, caller, admin, service)

    @precondition(lambda self: self.sync is not None and self.sync.status in HOLDABLE)
    @rule(
        command_type=st.sampled_from([C.PAUSE, C.RESUME]),
        data=st.data(),
        elapsed=st.integers(0, 1200),
        caller=st.sampled_from(["u1", "u2", "u3"]),
        admin=st.booleans(),
        service=st.booleans(),
    )
    def pause_or_resume(
        self,
        command_type: CommandType,
        data: st.DataObject,
        elapsed: int,
        caller: str,
        admin: bool,
        service: bool,
    ) -> None:
        """Pauses and resumes of named holds by several callers, with and without admin."""
        self.decide_one(command_type, data, elapsed, caller, admin, service, HOLD_DATA)

    def decide_one(
        self,
        command_type: CommandType,
        data: st.DataObject,
        elapsed: int,
        caller: str,
        admin: bool,
        service: bool,
        strategies: dict[CommandType, st.SearchStrategy[dict[str, Any]]] = COMMAND_DATA,
    ) -> None:
        sync = self.sync
        assert sync is not None
        self.now += timedelta(seconds=elapsed)
        payload = data.draw(strategies[command_type], label="data")
        command = dataclasses.replace(
            make_command(command_type, payload),
            caller=caller,
            admin=admin,
            system_labels_allowed=service,
        )
        before = sync.model_copy(deep=True)
        model_before = copy.deepcopy(self.model)
        decision = decide(sync, command, self.now)
        assert sync == before  # pure

        unheld = (
            command_type is C.RESUME
            and payload.get("hold") is not None
            and not payload.get("force")
            and all(h.hold != payload["hold"] for h in sync.pause_holds)
        )
        expected_outcome, expected_status = reference(sync.status, command_type, unheld_hold=unheld)
        expected_code: ErrorCode | None = None
        invalid_update = command_type is C.UPDATE and not 1 <= payload["batch_size"] <= 100
        if expected_outcome is Outcome.APPLIED and invalid_update:
            expected_outcome = Outcome.REJECTED
            expected_status = sync.status
        holds_apply = (command_type is C.PAUSE and sync.status in HOLDABLE) or (
            command_type is C.RESUME and sync.status is S.SUSPENDED
        )
        if holds_apply:
            said = self.hold_step(command_type, payload, caller, admin, service)
            if isinstance(said, ErrorCode):
                self.model = model_before
                expected_outcome, expected_status, expected_code = (
                    Outcome.REJECTED,
                    sync.status,
                    said,
                )
            else:
                expected_outcome = said
                expected_status = S.SUSPENDED if self.model.holds else S.ACTIVE
        elif expected_status is not S.SUSPENDED:
            self.model.holds.clear()  # cancel, archive, ... of a paused sync end its holds
        assert decision.outcome is expected_outcome, (sync.status, command_type, decision)
        if expected_code is not None:
            assert decision.error is not None and decision.error.code is expected_code
        self.check_decision(sync, decision, command_type, expected_status, expected_code)
        self.check_releases(sync, decision, command, payload)
        self.sync = decision.final

    def hold_step(
        self,
        command_type: CommandType,
        payload: dict[str, Any],
        caller: str,
        admin: bool,
        service: bool,
    ) -> Outcome | ErrorCode:
        """What the hold model says of a pause or a resume (its caller: the data's user, else
        the key's)."""
        if command_type is C.PAUSE:
            until = None
            if "until" in payload:
                parsed = parse_until(payload["until"])
                assert parsed is not None
                until = self.now + parsed if isinstance(parsed, timedelta) else parsed
                if not self.now < until <= self.now + MAX_PAUSE:
                    return ErrorCode.VALIDATION_ERROR
            return self.model.pause(
                caller=payload.get("paused_by_user_id", caller),
                hold=payload.get("hold"),
                reason=payload.get("reason"),
                until=until,
                owner_given="paused_by_user_id" in payload,
                service=service,
            )
        return self.model.resume(
            caller=payload.get("resumed_by_user_id", caller),
            hold=payload.get("hold"),
            force=payload.get("force", False),
            admin=admin,
            service=service,
        )

    def check_releases(
        self,
        sync: SyncConfiguration,
        decision: Decision,
        command: Command,
        payload: dict[str, Any],
    ) -> None:
        """A named hold goes only by naming it (its owner, or admin), by force (admin), by
        its expiry, or with the sync's end (cancel, archive); a plain resume leaves every
        named hold."""
        after = decision.final
        assert after is not None
        gone = {h.hold for h in sync.pause_holds} - {h.hold for h in after.pause_holds}
        named = {h for h in gone if not h.startswith("user:") and h != FAILURES}
        if not named:
            return
        if after.status is not S.SUSPENDED and command.type in (C.CANCEL, C.ARCHIVE):
            return
        assert command.type is C.RESUME, (command.type, named)
        if payload.get("force"):
            assert command.admin
            return
        assert named == {payload.get("hold")}
        (label,) = named
        owner = next(h.paused_by_user_id for h in sync.pause_holds if h.hold == label)
        own_label = command.system_labels_allowed and label.startswith(("system:", "bulk:"))
        caller = payload.get("resumed_by_user_id") or command.caller
        assert command.admin or own_label or owner == caller

    @precondition(lambda self: self.sync is not None)
    @rule(elapsed=st.integers(0, 4000))
    def expire(self, elapsed: int) -> None:
        """The scheduler releases the holds whose ``until`` passed, as one change."""
        sync = self.sync
        assert sync is not None
        self.now += timedelta(seconds=elapsed)
        decision = decide(sync, system_command(sync, SystemTrigger.PAUSE_EXPIRED), self.now)
        if sync.status is not S.SUSPENDED:
            assert decision.outcome is Outcome.REJECTED  # nothing held: not a pause to end
            return
        outcome = self.model.expire(self.now)
        assert decision.outcome is outcome
        expected = S.SUSPENDED if self.model.holds else S.ACTIVE
        self.check_decision(sync, decision, C.RESUME, expected)
        if outcome is Outcome.APPLIED:
            first = decision.changes[0]
            assert (first.actor, first.trigger) == ("system", "pause_expired")
        self.sync = decision.final

    def check_decision(
        self,
        sync: SyncConfiguration,
        decision: Decision,
        command_type: CommandType,
        expected_status: SyncStatus,
        expected_code: ErrorCode | None = None,
    ) -> None:
        after = decision.final
        assert after is not None
        assert after.status is expected_status
        # Version rises by exactly the number of changes, one per change, gap-free.
        assert after.version == sync.version + len(decision.changes)
        assert [c.sync.version for c in decision.changes] == list(
            range(sync.version + 1, sync.version + 1 + len(decision.changes))
        )
        if decision.outcome is Outcome.APPLIED:
            assert decision.error is None
            assert 1 <= len(decision.changes) <= 2
            first = decision.changes[0]
            assert first.from_status is sync.status
            if first.to_status is not sync.status:
                assert first.event_type is EventType.STATUS_CHANGED
            elif command_type is C.TRIGGER:
                assert first.event_type is EventType.RUN_REQUESTED
            elif command_type in (C.PAUSE, C.RESUME):
                assert first.event_type is EventType.HOLDS_CHANGED
            else:
                assert first.event_type is EventType.UPDATED
            if len(decision.changes) == 2:
                # Resume asks for a run when one is due; the retry of a FAILED sync always.
                assert command_type in (C.RESUME, C.TRIGGER)
                assert decision.changes[1].event_type is EventType.RUN_REQUESTED
            if sync.status is S.FAILED:
                assert len(decision.changes) == (2 if after.status is S.PENDING else 1)
                if after.status is S.PENDING:
                    assert after.consecutive_failures == 0
                    assert decision.changes[0].sync.next_sync_at == self.now
        else:
            assert decision.changes == ()
            assert after == sync
            if decision.outcome is Outcome.REJECTED:
                assert decision.error is not None
                if expected_code is None:
                    expected_code = (
                        ErrorCode.VALIDATION_ERROR
                        if reference(sync.status, command_type)[0] is Outcome.APPLIED
                        else ErrorCode.INVALID_TRANSITION
                    )
                assert decision.error.code is expected_code
        # Terminal statuses are left only to ARCHIVED, and ARCHIVED never.
        if sync.status in TERMINAL_STATUSES:
            assert after.status in (sync.status, S.ARCHIVED)
        if sync.status is S.ARCHIVED:
            assert after.status is S.ARCHIVED
        for change in decision.changes:
            self.check_flags(change.sync)

    @staticmethod
    def check_flags(sync: SyncConfiguration) -> None:
        assert sync.is_active == (sync.status is S.ACTIVE)
        assert sync.paused == (sync.status is S.SUSPENDED)
        suspended = sync.status is S.SUSPENDED
        # SUSPENDED exactly while a hold is held.
        assert bool(sync.pause_holds) == suspended
        assert (sync.paused_at is not None) == suspended
        assert (sync.paused_by_user_id is not None) == suspended
        if not suspended:
            assert sync.pause_reason is None
        else:  # the seed's fields describe the earliest hold
            earliest = min(sync.pause_holds, key=lambda h: h.paused_at)
            assert sync.paused_at == earliest.paused_at
            assert sync.paused_by_user_id == earliest.paused_by_user_id
            assert sync.pause_reason == (
                earliest.reason or f"paused by {earliest.paused_by_user_id}"
            )

    @invariant()
    def flags_agree_with_status(self) -> None:
        if self.sync is not None:
            self.check_flags(self.sync)
            assert self.sync.status in SYNC_STATUSES

    @invariant()
    def holds_agree_with_the_model(self) -> None:
        if self.sync is not None:
            held = {
                h.hold: RefHold(h.paused_by_user_id, h.reason, h.until)
                for h in self.sync.pause_holds
            }
            assert held == self.model.holds


def test_lifecycle_sequences() -> None:
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=200,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
