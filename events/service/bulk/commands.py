"""The command each matched sync gets from a bulk operation: built by the service itself.

With pause holds (CONTRACT.md v1.1) a bulk pause places the hold ``bulk:<operation id>`` and
its undo releases exactly that hold: the command may use the service's own labels
(``system_labels_allowed``), is recorded as the operation's (``actor``), and carries the key's
``admin`` (a bulk resume's ``force``, or another owner's named hold). Without holds (a model
that has none), the pause and the undo are plain ones.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from statemachine import Command, CommandType
from statemachine.commands import (
    BulkPauseData,
    BulkResumeData,
    BulkUndoData,
    PauseData,
    ResumeData,
)
from statemachine.errors import CommandError, ErrorCode
from statemachine.holds import until_at

__all__ = ["APPLY", "UNDO", "pauses", "per_sync_command", "refused_up_front"]

APPLY: Final = "apply"
UNDO: Final = "undo"


def bulk_label(operation_id: str) -> str:
    return f"bulk:{operation_id}"


def pauses(kind: str, phase: str) -> bool:
    """Does an item of ``phase`` pause its sync? (A pause's apply; never an undo.)"""
    return kind == "pause" and phase == APPLY


def refused_up_front(
    data: BulkPauseData | BulkResumeData, now: datetime, admin: bool
) -> CommandError | None:
    """What refuses a bulk pause or resume as a whole, before it matches a sync (each sync
    would refuse it alike): an ``until`` in the past or more than 90 days after ``now``
    (``validation_error`` naming it), ``force`` from a key without ``syncs:admin``."""
    if isinstance(data, BulkPauseData) and data.until is not None:
        until = until_at(data.until, now)
        if isinstance(until, CommandError):
            return until
    if isinstance(data, BulkResumeData) and data.force and not admin:
        return CommandError(
            code=ErrorCode.FORBIDDEN,
            message="force needs the scope syncs:admin",
            details={"required_scope": "syncs:admin"},
        )
    return None


def _data(
    operation_id: str, kind: str, phase: str, op_data: str, request_data: dict[str, Any]
) -> PauseData | ResumeData:
    if phase == UNDO:
        undo = BulkUndoData.model_validate(request_data)
        return ResumeData.model_validate(
            {"resumed_by_user_id": undo.undone_by_user_id, "hold": bulk_label(operation_id)}
        )
    fields = {k: v for k, v in json.loads(op_data).items() if k != "selector"}
    if kind == "pause":
        fields["hold"] = bulk_label(operation_id)
        return PauseData.model_validate(fields)
    return ResumeData.model_validate(fields)


def per_sync_command(
    *,
    operation_id: str,
    kind: str,
    phase: str,
    op_data: str,
    request_data: dict[str, Any],
    command_id: str,
    sync_config_id: str,
    internal_id: str,
    namespace_id: str,
    key_id: str,
    caller: str | None,
    admin: bool,
) -> Command:
    """The command a bulk operation (``phase`` apply) or its undo gives one sync."""
    return Command(
        command_id=command_id,
        type=CommandType.PAUSE if pauses(kind, phase) else CommandType.RESUME,
        sync_config_id=sync_config_id,
        internal_id=internal_id,
        namespace_id=namespace_id,
        data=_data(operation_id, kind, phase, op_data, request_data),
        key_id=key_id,
        caller=caller,
        admin=admin,
        system_labels_allowed=True,
        actor=bulk_label(operation_id),
    )
