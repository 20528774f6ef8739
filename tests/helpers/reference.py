"""The lifecycle commands' reference model: what the wire contract (docs/contract.md) says
each command does from each status, written as plain conditions, apart from the transition
table it checks (``statemachine.table.TABLE``). The stateful tests hold ``decide`` to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from statemachine.commands import CommandType
from statemachine.decision import Outcome
from statemachine.errors import ErrorCode
from statemachine.status import SyncStatus

S = SyncStatus
C = CommandType

LIVE = frozenset({S.DRAFT, S.PENDING, S.ACTIVE, S.SUSPENDED})


def reference(
    status: SyncStatus, command: CommandType, locked: bool = False, unheld_hold: bool = False
) -> tuple[Outcome, SyncStatus]:
    """What the contract says ``command`` does from ``status``: (outcome, status after).

    ``locked``: a run holds the lock (it matters to unlock and trigger only). ``unheld_hold``:
    a resume names (without ``force``) a hold the sync does not hold: it changes nothing (a
    FAILED sync is not retried). A rejected command leaves the status as it is.
    """
    if command is C.UNLOCK:
        if status is S.ARCHIVED:
            return Outcome.REJECTED, status
        return (Outcome.APPLIED if locked else Outcome.NOOP), status
    if command is C.TRIGGER:
        if status is S.FAILED:
            return Outcome.APPLIED, S.PENDING
        if status in (S.PENDING, S.ACTIVE):
            return (Outcome.NOOP if locked else Outcome.APPLIED), status
        return Outcome.REJECTED, status
    if command is C.ARCHIVE:
        return (Outcome.NOOP, status) if status is S.ARCHIVED else (Outcome.APPLIED, S.ARCHIVED)
    if command is C.CANCEL:
        if status is S.CANCELED:
            return Outcome.NOOP, status
        if status in LIVE or status is S.FAILED:
            return Outcome.APPLIED, S.CANCELED
        return Outcome.REJECTED, status
    if command is C.PAUSE:  # from SUSPENDED: as the holds say (``HoldModel``)
        if status in (S.PENDING, S.ACTIVE):
            return Outcome.APPLIED, S.SUSPENDED
        return (Outcome.NOOP if status is S.SUSPENDED else Outcome.REJECTED), status
    if command is C.RESUME:  # from SUSPENDED with only plain holds (else ``HoldModel``)
        if status is S.SUSPENDED:
            return Outcome.APPLIED, S.ACTIVE
        if status is S.FAILED:  # retried: PENDING, due at once (not by a hold it lacks)
            return (Outcome.NOOP, status) if unheld_hold else (Outcome.APPLIED, S.PENDING)
        return (Outcome.NOOP if status in (S.ACTIVE, S.PENDING) else Outcome.REJECTED), status
    if command is C.ACTIVATE:
        if status is S.DRAFT:
            return Outcome.APPLIED, S.PENDING
        return (Outcome.NOOP if status in (S.PENDING, S.ACTIVE) else Outcome.REJECTED), status
    assert command is C.UPDATE
    return (Outcome.APPLIED if status in LIVE or status is S.FAILED else Outcome.REJECTED), status


# --- pause holds (wire contract v1.1) --------------------------------------------------------

PLAIN = "user:"
FAILURES = "system:failures"
MAX_PAUSE = timedelta(days=90)


@dataclass
class RefHold:
    owner: str
    reason: str | None
    until: datetime | None


@dataclass
class HoldModel:
    """The holds of one sync as the contract describes them: SUSPENDED exactly while one is
    held; a plain resume releases the plain holds and ``system:failures``; a named hold goes
    only when named (by its owner, or with admin), by ``force`` (admin), or when it expires.
    A method's ``caller`` is the command's: the data's ``paused_by_user_id`` /
    ``resumed_by_user_id`` if given, else the key's caller (the same rule for both).
    A method returns the outcome, or the error code of a refusal (nothing then changes)."""

    holds: dict[str, RefHold] = field(default_factory=dict)

    def pause(
        self,
        *,
        caller: str,
        hold: str | None,
        reason: str | None,
        until: datetime | None,
        owner_given: bool,
        service: bool,
    ) -> Outcome | ErrorCode:
        if hold is not None and hold.lower().startswith(("system:", "bulk:")) and not service:
            return ErrorCode.VALIDATION_ERROR
        label = hold or PLAIN + caller
        held = self.holds.get(label)
        if held is None:
            self.holds[label] = RefHold(caller, reason, until)
            return Outcome.APPLIED
        after = RefHold(
            caller if owner_given else held.owner,
            reason if reason is not None else held.reason,
            until if until is not None else held.until,
        )
        if after == held:
            return Outcome.NOOP
        self.holds[label] = after
        return Outcome.APPLIED

    def resume(
        self, *, caller: str, hold: str | None, force: bool, admin: bool, service: bool
    ) -> Outcome | ErrorCode:
        if force:
            if not admin:  # the service's own command does not make force allowed
                return ErrorCode.FORBIDDEN
            going = set(self.holds)
        elif hold is None:
            going = {h for h in self.holds if h.startswith(PLAIN) or h == FAILURES}
        else:
            held = self.holds.get(hold)
            named = held is not None and not (hold.startswith(PLAIN) or hold == FAILURES)
            own_label = service and hold.lower().startswith(("system:", "bulk:"))
            if named and held is not None and not (held.owner == caller or admin or own_label):
                return ErrorCode.FORBIDDEN
            going = {hold} & set(self.holds)
        for label in going:
            del self.holds[label]
        return Outcome.APPLIED if going else Outcome.NOOP

    def expire(self, now: datetime) -> Outcome:
        going = {h for h, v in self.holds.items() if v.until is not None and v.until <= now}
        for label in going:
            del self.holds[label]
        return Outcome.APPLIED if going else Outcome.NOOP
