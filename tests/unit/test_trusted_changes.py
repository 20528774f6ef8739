"""A change of the fields the machine computes is applied to the validated sync as a copy (no
second validation); anything else, or a value its check does not pass, validates in full."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from statemachine import changes
from statemachine.changes import TRUSTED_FIELDS, build
from statemachine.errors import CommandError
from statemachine.model import MAX_LAST_ERROR, SyncConfiguration
from statemachine.status import SyncStatus
from tests.helpers.syncs import T1, make_sync


@pytest.fixture(autouse=True)
def _counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which path each build took: ``fast`` (a copy) or ``full`` (validated)."""
    taken: list[str] = []
    full = changes._validated

    def validated(base: Any, change: dict[str, Any]) -> Any:
        taken.append("full")
        return full(base, change)

    monkeypatch.setattr(changes, "_validated", validated)
    monkeypatch.setattr(changes, "VERIFY_TRUSTED", False)
    return taken


def test_a_status_change_is_a_copy_with_the_new_values(_counted: list[str]) -> None:
    sync = make_sync(status=SyncStatus.ACTIVE, is_active=True)
    later = T1 + timedelta(minutes=1)
    built = build(sync, {"status": SyncStatus.PENDING, "is_active": False, "updated_at": later})
    assert isinstance(built, SyncConfiguration)
    assert _counted == []
    assert (built.status, built.is_active, built.updated_at) == (SyncStatus.PENDING, False, later)
    assert built.model_dump() == SyncConfiguration.model_validate(built.__dict__).model_dump()
    assert sync.status is SyncStatus.ACTIVE  # the base is unchanged


@pytest.mark.parametrize(
    "change",
    [
        {"pause_reason": "x" * (MAX_LAST_ERROR + 1)},  # past its limit
        {"updated_at": datetime(2026, 12, 5, 8, 0)},  # noqa: DTZ001 - naive: left to validation
        {"updated_at": "2026-12-05T08:00:00Z"},  # text: validation would parse it
        {"version": 0},
        {"consecutive_failures": -1},
        {"status": "ACTIVE", "is_active": True},  # text, not the enum
        {"pause_holds": [{"hold": "user:a"}]},  # not PauseHold models
        {"batch_size": 10},  # not a field the machine computes
    ],
)
def test_a_value_outside_its_check_or_another_field_validates_in_full(
    change: dict[str, Any], _counted: list[str]
) -> None:
    sync = make_sync(status=SyncStatus.ACTIVE, is_active=True)
    build(sync, change)
    assert _counted == ["full"]


def test_a_copy_breaking_a_cross_field_rule_is_validated_and_refused(_counted: list[str]) -> None:
    sync = make_sync(status=SyncStatus.ACTIVE, is_active=True)
    built = build(sync, {"status": SyncStatus.PENDING})  # is_active left true: inconsistent
    assert _counted == ["full"]
    assert isinstance(built, CommandError)
    assert "is_active" in built.message or "is_active" in str(built.details)


def test_the_trusted_fields_are_fields_of_the_model() -> None:
    assert set(TRUSTED_FIELDS) <= set(SyncConfiguration.model_fields)


def test_a_trusted_list_is_never_shared_with_the_change() -> None:
    sync = make_sync(status=SyncStatus.ACTIVE, is_active=True)
    holds: list[Any] = []
    built = build(sync, {"pause_holds": holds})
    assert isinstance(built, SyncConfiguration)
    assert built.pause_holds == [] and built.pause_holds is not holds
