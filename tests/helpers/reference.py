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


def reference(status: SyncStatus, command: CommandType) -> tuple[Outcome, SyncStatus]:
    """What the contract says ``command`` does from ``status``: (outcome, status after).

    A rejected command leaves the status as it is.
    """
    if command is C.ARCHIVE:
        return (Outcome.NOOP, status) if status is S.ARCHIVED else (Outcome.APPLIED, S.ARCHIVED)
    if command is C.CANCEL:
        if status is S.CANCELED:
            return Outcome.NOOP, status
        return (Outcome.APPLIED, S.CANCELED) if status in LIVE else (Outcome.REJECTED, status)
    if command is C.PAUSE:
        if status in (S.PENDING, S.ACTIVE):
            return Outcome.APPLIED, S.SUSPENDED
        return (Outcome.NOOP if status is S.SUSPENDED else Outcome.REJECTED), status
    if command is C.RESUME:
        if status is S.SUSPENDED:
            return Outcome.APPLIED, S.ACTIVE
        return (Outcome.NOOP if status in (S.ACTIVE, S.PENDING) else Outcome.REJECTED), status
    if command is C.ACTIVATE:
        if status is S.DRAFT:
            return Outcome.APPLIED, S.PENDING
        return (Outcome.NOOP if status in (S.PENDING, S.ACTIVE) else Outcome.REJECTED), status
    assert command is C.UPDATE
    return (Outcome.APPLIED if status in LIVE else Outcome.REJECTED), status
