"""The bulk worker's transactions: each step of a request is one transaction, so a crash
between steps loses nothing and repeats nothing.

A request is the oldest unanswered bulk command (``bulk_requests``, in the order received).
Its steps, each under the lock of its request row and of its operation's row:

1. **start** (a pause or resume without an operation yet): match the selector (at most
   ``max_bulk_syncs``; more: the command is rejected, nothing changed), record the operation
   and one item per matched sync, emit ``sync.bulk_started`` (version 1);
2. **a chunk**: up to ``CHUNK`` pending items, their syncs locked (``FOR UPDATE SKIP LOCKED``,
   the scheduler's fence: a sync being written is taken by a later chunk), each decided by
   ``decide`` as the operation's pause or resume (actor ``bulk:<operation id>``) and written
   through the processor's write (syncs, history, outbox, timers, jobs), the items marked with
   their outcome in the same transaction: each sync is changed once;
3. **finish** (no item pending): ``sync.bulk_completed`` (version 2) or ``sync.bulk_undone``
   (version 3), the counts, and the command's one result in ``processed_commands`` (a
   redelivery of the command replays it).

An undo starts by taking the items the operation applied as its own (phase ``undo``), then
goes through chunks and its finish the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg

from events.auth import SCOPE_ADMIN, grants
from events.messages import BULK_EVENT_TYPES, BulkCounts, BulkEvent, CommandResult
from events.service.bulk.commands import APPLY, UNDO, per_sync_command, refused_up_front
from events.service.bulk.selector import match
from events.service.faults import crash_point
from events.service.processor.decisions import Batch
from events.service.processor.rows import (
    event_id,
    outbox_row,
    packed_ce_headers,
    result_row,
    timer_of,
)
from events.service.processor.sql import write
from events.service.settings import Settings
from statemachine import CommandType, Outcome, SyncConfiguration, decide
from statemachine.commands import BulkPauseData, BulkResumeData
from statemachine.errors import CommandError, ErrorCode

__all__ = ["CHUNK", "Request", "Step", "advance", "next_request"]

#: Items applied per transaction.
CHUNK: Final = 250


@dataclass(frozen=True, slots=True)
class Request:
    """An unanswered bulk command, as the batch recorded it."""

    command_id: str
    operation_id: str
    command_type: CommandType
    internal_id: str
    namespace_id: str
    key_id: str
    caller: str | None
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Request:
        return cls(
            command_id=row["command_id"],
            operation_id=row["operation_id"],
            command_type=CommandType(row["command_type"]),
            internal_id=row["internal_id"],
            namespace_id=row["namespace_id"],
            key_id=row["key_id"],
            caller=row["caller"],
            data=json.loads(row["data"]),
        )


@dataclass(slots=True)
class Step:
    """What one step did: the request is answered (``done``), syncs it changed (``events``),
    or nothing could be taken now (``busy``: every pending sync was locked by a writer)."""

    done: bool = False
    events: int = 0
    busy: bool = False


_REQUEST_COLUMNS: Final = (
    "command_id, operation_id, command_type, internal_id, namespace_id, key_id, caller, "
    "data::text AS data"
)


async def next_request(conn: asyncpg.Connection) -> Request | None:
    row = await conn.fetchrow(
        f"SELECT {_REQUEST_COLUMNS} FROM bulk_requests "  # noqa: S608 - constant columns
        "WHERE done_at IS NULL ORDER BY seq LIMIT 1"
    )
    return Request.from_row(row) if row is not None else None


async def advance(
    conn: asyncpg.Connection, settings: Settings, offset: timedelta, request: Request
) -> Step:
    """One step of ``request``, in one transaction, at the database's time plus ``offset``."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """SELECT done_at IS NOT NULL AS done,
                      EXISTS (SELECT 1 FROM processed_commands WHERE command_id = $1) AS answered,
                      clock_timestamp() + $2::interval AS now
               FROM bulk_requests WHERE command_id = $1 FOR UPDATE""",
            request.command_id,
            offset,
        )
        if row is None or row["done"]:
            return Step(done=True)
        now: datetime = row["now"]
        if row["answered"]:  # answered otherwise (never by this worker): nothing to do
            await _done(conn, request, now)
            return Step(done=True)
        work = _Work(conn, settings, Batch(settings, now), request)
        if request.command_type is CommandType.BULK_UNDO:
            step = await work.undo()
        else:
            step = await work.operation()
    crash_point("bulk.after_commit")  # a step committed, the next not begun
    return step


async def _done(conn: asyncpg.Connection, request: Request, now: datetime) -> None:
    await conn.execute(
        "UPDATE bulk_requests SET done_at = $2 WHERE command_id = $1", request.command_id, now
    )


def _error(code: ErrorCode, message: str, field: str | None = None, **more: Any) -> CommandError:
    details: dict[str, Any] = dict(more)
    if field is not None:
        details["errors"] = [{"field": field, "problem": message}]
    return CommandError(code=code, message=message, details=details)


class _Work:
    """One step's transaction: its connection, its batch of writes, its request."""

    def __init__(
        self, conn: asyncpg.Connection, settings: Settings, batch: Batch, request: Request
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.batch = batch
        self.request = request
        self.admin = False  # the key's syncs:admin, read for each chunk

    # --- the steps ---------------------------------------------------------------------

    async def operation(self) -> Step:
        """A bulk pause or resume: start it, apply a chunk, or finish it."""
        req = self.request
        op = await self._operation(req.operation_id)
        if op is None:
            return await self._start()
        if op["command_id"] != req.command_id:
            return await self._answer(
                Outcome.REJECTED,
                error=_error(
                    ErrorCode.ALREADY_EXISTS,
                    f"operation {req.operation_id} exists: a new operation needs a new id",
                ),
            )
        return await self._chunk(op, APPLY, req)

    async def undo(self) -> Step:
        """A bulk undo: release what the operation placed, once."""
        req = self.request
        op = await self._operation(req.operation_id)
        if op is None or (op["internal_id"], op["namespace_id"]) != (
            req.internal_id,
            req.namespace_id,
        ):
            return await self._answer(
                Outcome.REJECTED,
                error=_error(ErrorCode.NOT_FOUND, f"operation {req.operation_id} not found"),
            )
        if op["kind"] != "pause":
            return await self._answer(
                Outcome.REJECTED,
                error=_error(
                    ErrorCode.VALIDATION_ERROR,
                    "only a bulk pause can be undone: a bulk resume placed no hold",
                    "key",
                ),
            )
        if op["status"] == "running":  # its own command is older: it is finished first
            return await self._elsewhere(op["command_id"])
        if op["undo_command_id"] is None:
            await self.conn.execute(
                """WITH o AS (
                       UPDATE bulk_operations SET status = 'undoing', undo_command_id = $2
                       WHERE operation_id = $1)
                   INSERT INTO bulk_items (operation_id, phase, sync_config_id)
                   SELECT operation_id, 'undo', sync_config_id FROM bulk_items
                   WHERE operation_id = $1 AND phase = 'apply' AND outcome = 'applied'""",
                req.operation_id,
                req.command_id,
            )
            return Step()
        if op["undo_command_id"] != req.command_id:
            if op["status"] == "undoing":  # another undo of it is older: finished first
                return await self._elsewhere(op["undo_command_id"])
            counts = BulkCounts.model_validate_json(op["undo_counts"])
            return await self._answer(Outcome.NOOP, counts=counts)
        return await self._chunk(op, UNDO, req)

    async def _elsewhere(self, command_id: str) -> Step:
        """A step of the request ``command_id`` instead (in this transaction)."""
        row = await self.conn.fetchrow(
            f"SELECT {_REQUEST_COLUMNS} FROM bulk_requests "  # noqa: S608 - constant columns
            "WHERE command_id = $1 FOR UPDATE",
            command_id,
        )
        if row is None:  # cannot be: an operation is made from its request
            raise RuntimeError(f"bulk request {command_id[:200]} is missing")
        other = _Work(self.conn, self.settings, self.batch, Request.from_row(row))
        if other.request.command_type is CommandType.BULK_UNDO:
            step = await other.undo()
        else:
            step = await other.operation()
        step.done = False  # this request is still waiting
        return step

    async def _start(self) -> Step:
        req = self.request
        model = BulkPauseData if req.command_type is CommandType.BULK_PAUSE else BulkResumeData
        data = model.model_validate(req.data)
        force = isinstance(data, BulkResumeData) and bool(data.force)
        refused = refused_up_front(data, self.batch.now, force and await self._key_admin())
        if refused is not None:  # nothing matched, no operation, no event
            return await self._answer(Outcome.REJECTED, error=refused)
        limit = self.settings.max_bulk_syncs
        ids = await match(self.conn, data.selector, req.internal_id, req.namespace_id, limit + 1)
        if len(ids) > limit:
            return await self._answer(
                Outcome.REJECTED,
                error=_error(
                    ErrorCode.VALIDATION_ERROR,
                    f"the selector matches more than {limit} syncs (SYNCLIFE_MAX_BULK_SYNCS): "
                    "narrow it",
                    "selector",
                    max_bulk_syncs=limit,
                ),
            )
        selector = data.selector.model_dump(mode="json", exclude_none=True)
        counts = BulkCounts(matched=len(ids))
        now = self.batch.now
        await self.conn.execute(
            """WITH o AS (
                   INSERT INTO bulk_operations (operation_id, internal_id, namespace_id, key_id,
                       command_id, kind, selector, data, status, counts, created_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, 'running', $9::jsonb,
                           $10))
               INSERT INTO bulk_items (operation_id, phase, sync_config_id)
               SELECT $1, 'apply', id FROM unnest($11::text[]) AS id""",
            req.operation_id,
            req.internal_id,
            req.namespace_id,
            req.key_id,
            req.command_id,
            "pause" if model is BulkPauseData else "resume",
            json.dumps(selector),
            json.dumps(req.data),
            counts.model_dump_json(),
            now,
            ids,
        )
        self._event("sync.bulk_started", _KINDS[req.command_type], selector, counts)
        await write(self.conn, self.batch.writes)
        return Step()

    async def _chunk(self, op: asyncpg.Record, phase: str, req: Request) -> Step:
        """Apply up to ``CHUNK`` pending items of ``phase``; finish when none is left."""
        rows = await self.conn.fetch(
            """SELECT i.sync_config_id, s.data::text AS data
               FROM bulk_items AS i JOIN syncs AS s USING (sync_config_id)
               WHERE i.operation_id = $1 AND i.phase = $2 AND i.outcome IS NULL
               ORDER BY i.sync_config_id LIMIT $3
               FOR UPDATE OF s SKIP LOCKED""",
            op["operation_id"],
            phase,
            CHUNK,
        )
        if not rows:
            pending = await self.conn.fetchval(
                """SELECT count(*) FROM bulk_items
                   WHERE operation_id = $1 AND phase = $2 AND outcome IS NULL""",
                op["operation_id"],
                phase,
            )
            if pending:
                return Step(busy=True)
            return await self._finish(op, phase)
        self.admin = await self._key_admin()
        outcomes: list[tuple[str, str, int | None]] = []
        for r in rows:
            outcomes.append(self._decide(op, phase, req, r["sync_config_id"], r["data"]))
        await write(self.conn, self.batch.writes)
        await self.conn.execute(
            """UPDATE bulk_items AS i SET outcome = u.outcome, version = u.version
               FROM unnest($2::text[], $3::text[], $4::int[]) AS u(id, outcome, version)
               WHERE i.operation_id = $1 AND i.phase = $5 AND i.sync_config_id = u.id""",
            op["operation_id"],
            [o[0] for o in outcomes],
            [o[1] for o in outcomes],
            [o[2] for o in outcomes],
            phase,
        )
        crash_point("bulk.before_commit")  # a chunk written, its transaction not committed
        return Step(events=self.batch.stats.events)

    def _decide(
        self, op: asyncpg.Record, phase: str, req: Request, sid: str, doc: str
    ) -> tuple[str, str, int | None]:
        """One item: the sync's change as the operation's (or its undo's) own command."""
        batch = self.batch
        try:
            sync = SyncConfiguration.model_validate_json(doc)
        except ValueError:
            return sid, Outcome.REJECTED.value, None
        batch.syncs[sid] = sync
        batch.loaded_versions[sid] = sync.version
        batch.loaded_timers[sid] = timer_of(sync)
        command = per_sync_command(
            operation_id=op["operation_id"],
            kind=op["kind"],
            phase=phase,
            op_data=op["data"],
            request_data=req.data,
            command_id=req.command_id,
            sync_config_id=sid,
            internal_id=op["internal_id"],
            namespace_id=op["namespace_id"],
            key_id=req.key_id,
            caller=req.caller,
            admin=self.admin,
        )
        decision = decide(sync, command, max(batch.now, sync.updated_at), batch.policy)
        actor = f"bulk:{op['operation_id']}"
        for change in decision.changes:
            batch._persist(command, replace(change, actor=actor))
        final = decision.final
        return sid, decision.outcome.value, final.version if final is not None else None

    async def _finish(self, op: asyncpg.Record, phase: str) -> Step:
        rows = await self.conn.fetch(
            """SELECT outcome, count(*) AS n FROM bulk_items
               WHERE operation_id = $1 AND phase = $2 GROUP BY outcome""",
            op["operation_id"],
            phase,
        )
        by = {r["outcome"]: r["n"] for r in rows}
        counts = BulkCounts(
            matched=sum(by.values()),
            applied=by.get("applied", 0),
            noop=by.get("noop", 0),
            rejected=by.get("rejected", 0),
        )
        undo = phase == UNDO
        await self.conn.execute(
            """UPDATE bulk_operations
               SET status = $2,
                   counts = CASE WHEN $4 THEN counts ELSE $3::jsonb END,
                   undo_counts = CASE WHEN $4 THEN $3::jsonb ELSE undo_counts END,
                   finished_at = CASE WHEN $4 THEN finished_at ELSE $5 END,
                   undone_at = CASE WHEN $4 THEN $5 ELSE undone_at END
               WHERE operation_id = $1""",
            op["operation_id"],
            "undone" if undo else "completed",
            counts.model_dump_json(),
            undo,
            self.batch.now,
        )
        self._event(
            "sync.bulk_undone" if undo else "sync.bulk_completed",
            op["kind"],
            json.loads(op["selector"]),
            counts,
        )
        outcome = Outcome.APPLIED if counts.applied else Outcome.NOOP
        return await self._answer(outcome, counts=counts)

    # --- pieces ------------------------------------------------------------------------

    async def _key_admin(self) -> bool:
        """Does the request's key hold ``syncs:admin`` now?"""
        key = self.request.key_id
        scopes = await self.conn.fetchval("SELECT scopes FROM api_keys WHERE key_id = $1", key)
        return grants(scopes or (), SCOPE_ADMIN)

    async def _operation(self, operation_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self.conn.fetchrow(
            """SELECT operation_id, internal_id, namespace_id, key_id, command_id, kind,
                      selector::text AS selector, data::text AS data, status, undo_command_id,
                      undo_counts::text AS undo_counts
               FROM bulk_operations WHERE operation_id = $1 FOR UPDATE""",
            operation_id,
        )
        return row

    def _event(
        self, event_type: str, kind: str, selector: dict[str, Any], counts: BulkCounts
    ) -> None:
        """The operation's event (keyed by its id): the command of this step made it."""
        req, now = self.request, self.batch.now
        version = BULK_EVENT_TYPES[event_type]
        event = BulkEvent(
            operation_id=req.operation_id,
            kind=kind,
            namespace_id=req.namespace_id,
            internal_id=req.internal_id,
            version=version,
            occurred_at=now,
            command_id=req.command_id,
            selector=selector,
            counts=counts,
        )
        headers = packed_ce_headers(
            event_id(req.operation_id, version), event_type, req.operation_id, now
        )
        self.batch.writes.outbox.append(
            outbox_row(
                self.settings.lifecycle_topic,
                req.operation_id,
                event.model_dump_json().encode(),
                headers,
            )
        )

    async def _answer(
        self,
        outcome: Outcome,
        *,
        counts: BulkCounts | None = None,
        error: CommandError | None = None,
    ) -> Step:
        """The request's one result (recorded as processed, published), and it is done."""
        req, batch = self.request, self.batch
        result = CommandResult(
            command_id=req.command_id,
            command_type=req.command_type.value,
            sync_config_id=req.operation_id,
            outcome=outcome,
            error=error,
            operation_id=req.operation_id,
            counts=counts,
        )
        payload = result.model_dump_json()
        batch.writes.processed.append(
            (
                req.command_id,
                req.command_type.value,
                req.operation_id,
                req.key_id,
                outcome.value,
                payload,
                batch.now,
            )
        )
        batch.writes.outbox.append(
            result_row(self.settings, payload.encode(), req.command_id, req.operation_id, batch.now)
        )
        await write(self.conn, batch.writes)
        await _done(self.conn, req, batch.now)
        return Step(done=True, events=batch.stats.events)


_KINDS: Final = {
    CommandType.BULK_PAUSE: "pause",
    CommandType.BULK_RESUME: "resume",
    CommandType.BULK_UNDO: "undo",
}
