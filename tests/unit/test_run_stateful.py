"""Random interleavings of lifecycle commands, worker reports and the service's own changes.

A small reference model of the run rules (written from the contract and the issue, not from
``table.TABLE``) predicts each outcome; invariants hold after every step: the flags agree
with the status, counters never decrease, lock tokens only grow, a terminal status is left
only to ARCHIVED.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from statemachine.commands import Command, CommandType, SystemTrigger
from statemachine.decider import decide
from statemachine.decision import Decision, EventType, Outcome
from statemachine.errors import ErrorCode
from statemachine.model import SyncConfiguration
from statemachine.runs import system_command
from statemachine.status import SYNC_STATUSES, TERMINAL_STATUSES, SyncStatus
from tests.helpers.reference import reference
from tests.helpers.syncs import T0, make_command

S = SyncStatus
C = CommandType
MAX_FAILURES = 5
REPORTING = {S.ACTIVE, S.SUSPENDED, S.CANCELED}
COUNTERS = (
    "total_files_discovered",
    "total_files_synced",
    "total_files_failed",
    "total_bytes_synced",
    "sync_run_counter",
    "batches_created",
    "version",
)


class Runs(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.sync: SyncConfiguration
        self.max_token = 0
        self.run_id: str | None = None  # the run's job id
        self.token: int | None = None

    @initialize(mode=st.sampled_from(["continuous", "initial_only"]))
    def create(self, mode: str) -> None:
        decision = decide(
            None,
            make_command(
                C.CREATE,
                {
                    "bucket_id": "bkt_1",
                    "connection_id": "conn_1",
                    "provider": "s3",
                    "source_path": "bucket-a/x",
                    "created_by_user_id": "u0",
                    "sync_mode": mode,
                    "polling_interval_seconds": 60,
                },
            ),
            self.now,
        )
        assert decision.final is not None
        self.sync = decision.final

    def apply(self, command: Command) -> Decision:
        before = self.sync
        decision = decide(before, command, self.now)
        after = decision.final
        assert after is not None
        for name in COUNTERS:
            assert getattr(after, name) >= getattr(before, name), name
        assert after.version == before.version + len(decision.changes)
        if before.status in TERMINAL_STATUSES:
            assert after.status in (before.status, S.ARCHIVED)
        if after.lock_token is not None and after.lock_token != before.lock_token:
            assert after.lock_token > self.max_token  # fencing tokens only grow
            self.max_token = after.lock_token
        if decision.outcome is not Outcome.APPLIED:
            assert decision.changes == () and after == before
        self.sync = after
        return decision

    @rule(command=st.sampled_from([C.PAUSE, C.RESUME, C.CANCEL, C.ARCHIVE, C.ACTIVATE]))
    def lifecycle(self, command: CommandType) -> None:
        data = {"paused_by_user_id": "u1"} if command is C.PAUSE else {}
        status = self.sync.status
        held = {h.hold for h in self.sync.pause_holds}
        decision = self.apply(make_command(command, data))
        outcome, expected = reference(status, command)
        if command is C.PAUSE and status is S.SUSPENDED and "user:u1" not in held:
            outcome = Outcome.APPLIED  # u1's plain hold joins the auto-suspension's
        assert decision.outcome is outcome
        assert self.sync.status is expected
        if command is C.RESUME and outcome is Outcome.APPLIED:
            # The plain resume releases u1's hold and system:failures: nothing is left.
            assert self.sync.consecutive_failures == 0 and not self.sync.pause_holds

    @rule(worker=st.sampled_from(["w1", "w2"]), lease=st.integers(5, 120))
    def start(self, worker: str, lease: int) -> None:
        before = self.sync
        decision = self.apply(
            make_command(C.RUN_START, {"worker_id": worker, "lease_seconds": lease})
        )
        live_lock = before.lock_token is not None  # expired leases are reaped, not taken
        if before.status not in (S.PENDING, S.ACTIVE):
            assert decision.error is not None
            assert decision.error.code is ErrorCode.INVALID_TRANSITION
        elif live_lock:
            assert decision.error is not None and decision.error.code is ErrorCode.LOCK_CONFLICT
        else:
            assert decision.outcome is Outcome.APPLIED
            assert self.sync.status is S.ACTIVE and self.sync.locked_by_worker_id == worker
            assert self.sync.sync_run_counter == before.sync_run_counter + 1
            self.run_id, self.token = self.sync.current_sync_run_id, self.sync.lock_token

    @rule(
        kind=st.sampled_from([C.RUN_HEARTBEAT, C.RUN_CHECKPOINT, C.RUN_COMPLETE, C.RUN_FAIL]),
        stale=st.booleans(),
        synced=st.integers(0, 50),
    )
    def report(self, kind: CommandType, stale: bool, synced: int) -> None:
        if self.run_id is None or self.token is None:
            return
        before = self.sync
        data: dict[str, Any] = {
            "run_id": str(self.run_id),
            "lock_token": self.token + 1 if stale else self.token,
        }
        if kind in (C.RUN_CHECKPOINT, C.RUN_COMPLETE):
            data["files_synced"] = synced
        if kind is C.RUN_FAIL:
            data["error"] = "boom"
        decision = self.apply(make_command(kind, data))
        holds = (
            before.lock_token is not None
            and before.lock_token == data["lock_token"]
            and before.current_sync_run_id == self.run_id
        )
        if before.status not in REPORTING:
            assert decision.error is not None
            assert decision.error.code is ErrorCode.INVALID_TRANSITION
            return
        if not holds:
            assert decision.error is not None and decision.error.code is ErrorCode.LOCK_LOST
            return
        assert decision.outcome is Outcome.APPLIED
        if kind is C.RUN_COMPLETE:
            assert self.sync.lock_token is None and self.sync.consecutive_failures == 0
            initial_only = before.sync_mode.value == "initial_only"
            if initial_only and before.status in (S.ACTIVE, S.SUSPENDED):
                assert self.sync.status is S.COMPLETED
            else:
                assert self.sync.status is before.status
        if kind is C.RUN_FAIL:
            failures = before.consecutive_failures + 1
            assert self.sync.lock_token is None and self.sync.consecutive_failures == failures
            if before.status is S.ACTIVE and failures >= MAX_FAILURES:
                self.check_fails_out(before, decision)
            else:
                assert self.sync.status is before.status

    def check_fails_out(self, before: SyncConfiguration, decision: Decision) -> None:
        """The threshold's failure: continuous syncs are auto-suspended, initial_only FAILED."""
        if before.sync_mode.value == "initial_only":
            assert self.sync.status is S.FAILED
            assert not self.sync.paused and not self.sync.is_active
            assert self.sync.next_sync_at is None
            assert decision.changes[-1].trigger == "failures"
        else:
            assert self.sync.status is S.SUSPENDED
            assert self.sync.paused_by_user_id == "system"
            assert [h.hold for h in self.sync.pause_holds] == ["system:failures"]

    @rule(reason=st.none() | st.just("stuck worker"))
    def unlock(self, reason: str | None) -> None:
        before = self.sync
        data = {} if reason is None else {"reason": reason}
        decision = self.apply(make_command(C.UNLOCK, data))
        outcome, status = reference(before.status, C.UNLOCK, locked=before.lock_token is not None)
        assert decision.outcome is outcome, (before.status, decision)
        assert self.sync.status is status
        if outcome is Outcome.APPLIED:
            (change,) = decision.changes
            assert change.event_type is EventType.LOCK_RELEASED and change.reason == reason
            assert self.sync.lock_token is None and self.sync.locked_by_worker_id is None
            # Interrupted, not failed: no failure is counted.
            assert self.sync.consecutive_failures == before.consecutive_failures
            if before.status in (S.PENDING, S.ACTIVE):
                assert self.sync.next_sync_at == self.now  # due again at once
        elif outcome is Outcome.REJECTED:
            assert decision.error is not None
            assert decision.error.code is ErrorCode.INVALID_TRANSITION

    @rule()
    def trigger(self) -> None:
        before = self.sync
        decision = self.apply(make_command(C.TRIGGER, {}))
        outcome, status = reference(before.status, C.TRIGGER, locked=before.lock_token is not None)
        assert decision.outcome is outcome, (before.status, decision)
        assert self.sync.status is status
        if before.status is S.FAILED:
            assert [c.event_type for c in decision.changes] == [
                EventType.STATUS_CHANGED,
                EventType.RUN_REQUESTED,
            ]
            assert self.sync.consecutive_failures == 0 and self.sync.lock_token is None

    @rule(error=st.sampled_from(["timeout", "403 from the source"]))
    def failing_run(self, error: str) -> None:
        """A whole run that fails (start, then fail): failures pile up quickly this way."""
        self.start("w3", 60)
        if self.sync.locked_by_worker_id == "w3":
            self.report(C.RUN_FAIL, False, 0)

    @rule(seconds=st.integers(0, 600))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(trigger=st.sampled_from(list(SystemTrigger)))
    def system(self, trigger: SystemTrigger) -> None:
        before = self.sync
        decision = self.apply(system_command(before, trigger))
        if trigger is SystemTrigger.REQUEST_RUN:
            due = (
                before.status in (S.PENDING, S.ACTIVE)
                and before.lock_token is None
                and before.next_sync_at is not None
                and before.next_sync_at <= self.now
            )
            assert (decision.outcome is Outcome.APPLIED) == due
            idle = (S.SUSPENDED, S.CANCELED, S.COMPLETED, S.ARCHIVED, S.DRAFT, S.FAILED)
            if before.status in idle:
                assert decision.changes == ()  # never a run for a paused or finished sync
        elif trigger is SystemTrigger.PAUSE_EXPIRED:
            # Only a timed pause ends by itself; these pauses have no until.
            expected = Outcome.NOOP if before.status is S.SUSPENDED else Outcome.REJECTED
            assert decision.outcome is expected
        else:
            expired = before.lock_expires_at is not None and before.lock_expires_at <= self.now
            if decision.outcome is Outcome.APPLIED:
                assert expired and self.sync.lock_token is None
                assert self.sync.consecutive_failures == before.consecutive_failures + 1
                if before.status is S.ACTIVE and self.sync.consecutive_failures >= MAX_FAILURES:
                    self.check_fails_out(before, decision)
            else:
                assert not expired or before.status not in (*REPORTING, S.COMPLETED, S.ARCHIVED)

    @invariant()
    def flags_agree(self) -> None:
        sync = self.sync
        assert sync.status in SYNC_STATUSES
        assert sync.is_active == (sync.status is S.ACTIVE)
        assert sync.paused == (sync.status is S.SUSPENDED)
        assert bool(sync.pause_holds) == (sync.status is S.SUSPENDED)
        assert (sync.locked_by_worker_id is None) == (sync.lock_token is None)
        assert sync.consecutive_failures <= MAX_FAILURES or sync.status is not S.ACTIVE


TestRuns = Runs.TestCase
TestRuns.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
