"""Stored documents as the model reads them: ``locked`` is derived whatever a document says,
and a SUSPENDED document written before holds gets the one hold its pause fields describe."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from events.messages import CommandResult
from statemachine import Outcome
from statemachine.changes import build
from statemachine.model import SyncConfiguration
from statemachine.status import SyncStatus
from tests.helpers.syncs import T1, make_sync


def _pre_holds(**fields: Any) -> dict[str, Any]:
    """A SUSPENDED document as written before holds existed (no ``pause_holds``)."""
    doc = make_sync(status=SyncStatus.ACTIVE, is_active=True).model_dump(mode="json")
    del doc["pause_holds"]
    doc.update(status="SUSPENDED", is_active=False, paused=True, **fields)
    return doc


@pytest.mark.parametrize("stored", [True, False, None, "maybe", 2])
def test_locked_is_derived_whatever_the_document_says(stored: Any) -> None:
    doc = make_sync().model_dump(mode="json")
    assert SyncConfiguration.model_validate({**doc, "locked": stored}).locked is False
    held = {**doc, "locked": stored, "locked_by_worker_id": "w1"}
    assert SyncConfiguration.model_validate(held).locked is True


@pytest.mark.parametrize(
    ("paused_by", "label"), [("alice", "user:alice"), ("system", "system:failures")]
)
def test_a_document_from_before_holds_gets_the_hold_of_its_pause(
    paused_by: str, label: str
) -> None:
    doc = _pre_holds(paused_by_user_id=paused_by, pause_reason="why", paused_at=None)
    loaded = SyncConfiguration.model_validate(doc)
    stored_again = SyncConfiguration.model_validate_json(loaded.model_dump_json())
    (hold,) = loaded.pause_holds
    assert (hold.hold, hold.reason, hold.paused_by_user_id) == (label, "why", paused_by)
    assert hold.paused_at == loaded.updated_at  # no paused_at: the last update's time
    assert "pause_holds" in loaded.model_fields_set
    assert stored_again.pause_holds == loaded.pause_holds


def test_the_derived_hold_is_not_derived_again_for_a_later_version() -> None:
    """A copy made by a trusted change, validated again as a result's field, keeps the hold
    its document had (derived once, at the load)."""
    loaded = SyncConfiguration.model_validate(_pre_holds(paused_by_user_id="alice", paused_at=None))
    later = build(
        loaded,
        {"pending_full_sync": True, "updated_at": T1 + timedelta(days=3), "version": 9},
    )
    assert isinstance(later, SyncConfiguration)
    CommandResult(
        command_id="c1",
        command_type="sync.trigger",
        sync_config_id=later.sync_config_id,
        outcome=Outcome.APPLIED,
        sync=later,
    )
    assert later.pause_holds == loaded.pause_holds


def test_pause_fields_that_make_no_hold_are_refused_naming_pause_holds() -> None:
    with pytest.raises(ValidationError, match="pause_holds: the pause fields"):
        SyncConfiguration.model_validate(_pre_holds(paused_by_user_id="x" * 400))
