"""Random sequences of lifecycle commands through ``decide``, checked against a reference model.

The reference model (tests/helpers/reference.py) is written from the wire contract
(docs/contract.md) as plain conditions, independently of ``table.TABLE``.
"""

from __future__ import annotations

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

from statemachine.commands import CommandType
from statemachine.decider import decide
from statemachine.decision import Decision, EventType, Outcome
from statemachine.errors import ErrorCode
from statemachine.model import SyncConfiguration
from statemachine.status import SYNC_STATUSES, TERMINAL_STATUSES, SyncStatus
from tests.helpers.reference import reference
from tests.helpers.syncs import T0, make_command, make_sync

S = SyncStatus
C = CommandType

COMMAND_DATA: dict[CommandType, st.SearchStrategy[dict[str, Any]]] = {
    C.ACTIVATE: st.fixed_dictionaries({}, optional={"activated_by_user_id": st.just("u1")}),
    # batch_size 0 and 101 are past the limits: a valid transition then fails validation.
    C.UPDATE: st.fixed_dictionaries({"batch_size": st.integers(0, 101)}),
    C.PAUSE: st.fixed_dictionaries(
        {"paused_by_user_id": st.sampled_from(["u1", "u2"])},
        optional={"reason": st.text(max_size=20)},
    ),
    C.RESUME: st.fixed_dictionaries({}, optional={"resumed_by_user_id": st.just("u2")}),
    C.CANCEL: st.fixed_dictionaries({}, optional={"reason": st.just("done")}),
    C.ARCHIVE: st.fixed_dictionaries({}, optional={"reason": st.just("old")}),
    C.TRIGGER: st.fixed_dictionaries({}, optional={"requested_by_user_id": st.just("u3")}),
    # No run ever holds the lock here: unlock is a noop (or refused from ARCHIVED).
    C.UNLOCK: st.fixed_dictionaries({}, optional={"reason": st.just("stuck")}),
}


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sync: SyncConfiguration | None = None
        self.now = T0

    @initialize(
        start=st.sampled_from(sorted(SYNC_STATUSES)),
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

    @precondition(lambda self: self.sync is not None)
    @rule(
        command_type=st.sampled_from(list(COMMAND_DATA)),
        data=st.data(),
        elapsed=st.integers(0, 1200),
    )
    def send(self, command_type: CommandType, data: st.DataObject, elapsed: int) -> None:
        sync = self.sync
        assert sync is not None
        self.now += timedelta(seconds=elapsed)
        payload = data.draw(COMMAND_DATA[command_type], label="data")
        before = sync.model_copy(deep=True)
        decision = decide(sync, make_command(command_type, payload), self.now)
        assert sync == before  # pure

        expected_outcome, expected_status = reference(sync.status, command_type)
        invalid_update = command_type is C.UPDATE and not 1 <= payload["batch_size"] <= 100
        if expected_outcome is Outcome.APPLIED and invalid_update:
            expected_outcome = Outcome.REJECTED
            expected_status = sync.status
        assert decision.outcome is expected_outcome, (sync.status, command_type, decision)
        self.check_decision(sync, decision, command_type, expected_status)
        self.sync = decision.final

    def check_decision(
        self,
        sync: SyncConfiguration,
        decision: Decision,
        command_type: CommandType,
        expected_status: SyncStatus,
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
        assert (sync.paused_at is not None) == suspended
        assert (sync.paused_by_user_id is not None) == suspended
        if not suspended:
            assert sync.pause_reason is None

    @invariant()
    def flags_agree_with_status(self) -> None:
        if self.sync is not None:
            self.check_flags(self.sync)
            assert self.sync.status in SYNC_STATUSES


def test_lifecycle_sequences() -> None:
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=150,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
