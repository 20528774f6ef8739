"""Builders of the pure unit tests: syncs and commands without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

from statemachine.commands import Command, CommandType, parse_data
from statemachine.errors import CommandError
from statemachine.model import SyncConfiguration
from statemachine.status import SyncStatus

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T1 = datetime(2024, 1, 2, tzinfo=UTC)

ORG = "org_acme"
NS = "ns_marketing"
SYNC_ID = "sync_01HZX3T5ZQ8Y4V9B2M6N7P0QRS"

_command_ids = count(1)


def sync_fields(**overrides: Any) -> dict[str, Any]:
    """The raw fields of a valid PENDING s3 sync, with ``overrides`` applied.

    ``is_active`` and ``paused`` follow ``status`` unless overridden explicitly.
    """
    fields: dict[str, Any] = {
        "sync_config_id": SYNC_ID,
        "bucket_id": "bkt_marketing_assets",
        "connection_id": "conn_abc123",
        "internal_id": ORG,
        "namespace_id": NS,
        "provider": "s3",
        "source_path": "marketing-assets/campaigns/2024",
        "created_by_user_id": "user_alice",
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(overrides)
    status = SyncStatus(fields.get("status", SyncStatus.PENDING))
    fields.setdefault("is_active", status is SyncStatus.ACTIVE)
    fields.setdefault("paused", status is SyncStatus.SUSPENDED)
    if status is SyncStatus.SUSPENDED:
        fields.setdefault("pause_reason", "maintenance")
        fields.setdefault("paused_at", T0)
        fields.setdefault("paused_by_user_id", "user_alice")
    return fields


def make_sync(**overrides: Any) -> SyncConfiguration:
    """A valid sync (PENDING unless ``status`` is given), built directly, not by a command."""
    return SyncConfiguration.model_validate(sync_fields(**overrides))


def make_command(
    command_type: CommandType,
    data: dict[str, Any] | None = None,
    *,
    sync_config_id: str = SYNC_ID,
    internal_id: str = ORG,
    namespace_id: str = NS,
    expected_version: int | None = None,
    command_id: str | None = None,
) -> Command:
    """A command whose data went through ``parse_data`` (which must accept it)."""
    parsed = parse_data(command_type, sync_config_id, data if data is not None else {})
    assert not isinstance(parsed, CommandError), parsed
    return Command(
        command_id=command_id or f"cmd_{next(_command_ids)}",
        type=command_type,
        sync_config_id=sync_config_id,
        internal_id=internal_id,
        namespace_id=namespace_id,
        data=parsed,
        expected_version=expected_version,
    )


#: Valid data for each lifecycle command (pause needs its user).
LIFECYCLE_DATA: dict[CommandType, dict[str, Any]] = {
    CommandType.ACTIVATE: {"activated_by_user_id": "user_bob"},
    CommandType.UPDATE: {"batch_size": 25, "updated_by_user_id": "user_bob"},
    CommandType.PAUSE: {"paused_by_user_id": "user_bob", "reason": "quarterly audit"},
    CommandType.RESUME: {"resumed_by_user_id": "user_bob"},
    CommandType.CANCEL: {"canceled_by_user_id": "user_bob", "reason": "no longer needed"},
    CommandType.ARCHIVE: {"archived_by_user_id": "user_bob", "reason": "cleanup"},
}


def lifecycle_command(command_type: CommandType, **kwargs: Any) -> Command:
    """A lifecycle command with the standard valid data of ``LIFECYCLE_DATA``."""
    return make_command(command_type, LIFECYCLE_DATA[command_type], **kwargs)
