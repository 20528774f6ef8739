"""The lifecycle commands' reference model: what the wire contract (docs/contract.md) says
each command does from each status, written as plain conditions, apart from the transition
table it checks (``statemachine.table.TABLE``). The stateful tests hold ``decide`` to it."""

from __future__ import annotations

from statemachine.commands import CommandType
from statemachine.decision import Outcome
from statemachine.status import SyncStatus

S = SyncStatus
C = CommandType

LIVE = frozenset({S.DRAFT, S.PENDING, S.ACTIVE, S.SUSPENDED})


def reference(
    status: SyncStatus, command: CommandType, locked: bool = False
) -> tuple[Outcome, SyncStatus]:
    """What the contract says ``command`` does from ``status``: (outcome, status after).

    ``locked``: a run holds the lock (it matters to unlock and trigger only). A rejected
    command leaves the status as it is.
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
    if command is C.PAUSE:
        if status in (S.PENDING, S.ACTIVE):
            return Outcome.APPLIED, S.SUSPENDED
        return (Outcome.NOOP if status is S.SUSPENDED else Outcome.REJECTED), status
    if command is C.RESUME:
        if status is S.SUSPENDED:
            return Outcome.APPLIED, S.ACTIVE
        if status is S.FAILED:  # retried: PENDING, due at once
            return Outcome.APPLIED, S.PENDING
        return (Outcome.NOOP if status in (S.ACTIVE, S.PENDING) else Outcome.REJECTED), status
    if command is C.ACTIVATE:
        if status is S.DRAFT:
            return Outcome.APPLIED, S.PENDING
        return (Outcome.NOOP if status in (S.PENDING, S.ACTIVE) else Outcome.REJECTED), status
    assert command is C.UPDATE
    return (Outcome.APPLIED if status in LIVE or status is S.FAILED else Outcome.REJECTED), status
