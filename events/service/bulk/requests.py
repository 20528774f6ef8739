"""A bulk command in a consumed batch: checked like any command (key, scope ``syncs:write``,
namespace, data), then recorded in ``bulk_requests`` in the batch's transaction. It gets no
result there: the bulk worker answers it once the operation is done (a redelivery meanwhile
records nothing new: the command id is the request's key)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Final

from statemachine.errors import CommandError, ErrorCode

if TYPE_CHECKING:  # the processor imports this module
    import asyncpg

    from events.envelope import RawCommand
    from events.service.processor.rows import Writes
    from statemachine.commands import CommandData

__all__ = [
    "OPERATION_ID",
    "bulk_problem",
    "canonical_operation_id",
    "record_request",
    "write_requests",
]

#: An operation id: ``bulk_`` + a ULID (Crockford base32, 26 characters), as stored: upper case.
OPERATION_ID: Final = re.compile(r"bulk_[0-9A-HJKMNP-TV-Z]{26}")


def canonical_operation_id(text: str) -> str:
    """An operation id as stored: its ULID in upper case (a ULID is case-insensitive, so
    ``bulk_01j9...`` names the operation ``bulk_01J9...``); any other text as it is."""
    return "bulk_" + text[5:].upper() if text.startswith("bulk_") else text


_INSERT: Final = """
    INSERT INTO bulk_requests (command_id, operation_id, command_type, internal_id,
                               namespace_id, key_id, caller, data)
    SELECT id, op, kind, internal_id, namespace_id, key_id, caller, data::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[]) WITH ORDINALITY
         AS u(id, op, kind, internal_id, namespace_id, key_id, caller, data, n)
    ORDER BY n
    ON CONFLICT (command_id) DO NOTHING"""


def _invalid(field: str, problem: str) -> CommandError:
    return CommandError(
        code=ErrorCode.VALIDATION_ERROR,
        message=f"{field}: {problem}",
        details={"errors": [{"field": field, "problem": problem}]},
    )


def bulk_problem(raw: RawCommand) -> CommandError | None:
    """What is wrong with a bulk command's envelope, if anything: its key must be an
    operation id, and a bulk command has no expected version."""
    if not OPERATION_ID.fullmatch(canonical_operation_id(raw.sync_config_id)):
        return _invalid(
            "key", "a bulk command's key and ce_subject are its operation id: bulk_ + a ULID"
        )
    if raw.expected_version is not None:
        return _invalid("ce_expectedversion", "a bulk operation has no expected version")
    return None


def record_request(
    writes: Writes,
    raw: RawCommand,
    data: CommandData,
    internal_id: str,
    namespace_id: str,
    key_id: str,
    caller: str | None,
) -> None:
    """Record an accepted bulk command for the worker, in the batch's transaction."""
    body: dict[str, Any] = data.model_dump(mode="json", exclude_unset=True)
    writes.bulk_requests.append(
        (
            raw.command_id,
            canonical_operation_id(raw.sync_config_id),
            raw.type.value,
            internal_id,
            namespace_id,
            key_id,
            caller,
            json.dumps(body),
        )
    )


async def write_requests(conn: asyncpg.Connection, writes: Writes) -> None:
    """Insert the batch's bulk requests (in the caller's transaction); a command id already
    recorded (a redelivery) is left as it is."""
    if writes.bulk_requests:
        columns = [list(c) for c in zip(*writes.bulk_requests, strict=True)]
        await conn.execute(_INSERT, *columns)
