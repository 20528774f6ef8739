"""The HTTP bodies of synclife's bulk routes (``/v1/sync-bulk/...``): a bulk pause or resume
by selector, its undo, an operation's progress, and a preview of the match.

The selector is the command's own (``statemachine.commands.BulkSelector``); the pause and
resume fields are those of ``sync.pause`` and ``sync.resume`` (CONTRACT.md v1.1). Pure
pydantic, like ``events.contract.http``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from events.messages import BulkCounts
from statemachine.commands import BulkSelector

__all__ = [
    "BULK_REQUEST_MODELS",
    "BULK_RESPONSE_MODELS",
    "BulkOperationResponse",
    "BulkPauseRequest",
    "BulkPreviewRequest",
    "BulkPreviewResponse",
    "BulkResultResponse",
    "BulkResumeRequest",
    "BulkUndoRequest",
]


def _upper_ulid(operation_id: str) -> str:
    """A ULID is case-insensitive: the operation is named with it in upper case."""
    return operation_id[:5] + operation_id[5:].upper()


#: ``bulk_`` + a ULID (either case; upper case once read).
OperationId = Annotated[
    str,
    StringConstraints(pattern=r"^bulk_[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$"),
    AfterValidator(_upper_ulid),
]
_Text = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BulkPauseRequest(_Body):
    """Pause every sync of the namespace ``selector`` matches (hold ``bulk:<operation id>``).
    ``operation_id``: the caller's (else one derived from ``Idempotency-Key``, else new)."""

    selector: BulkSelector
    operation_id: OperationId | None = None
    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None
    until: _Text | None = Field(
        default=None, description="An RFC 3339 time or an ISO 8601 duration (`PT2H`)."
    )
    paused_by_user_id: _Text | None = None


class BulkResumeRequest(_Body):
    """Resume every sync ``selector`` matches, with ``sync.resume``'s fields."""

    selector: BulkSelector
    operation_id: OperationId | None = None
    hold: _Text | None = None
    force: bool | None = None
    mode: Literal["incremental", "full"] | None = None
    run: Literal["due", "next_interval"] | None = None
    resumed_by_user_id: _Text | None = None


class BulkUndoRequest(_Body):
    """Release exactly the holds the bulk pause placed."""

    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None
    undone_by_user_id: _Text | None = None


class BulkPreviewRequest(_Body):
    selector: BulkSelector


class BulkPreviewResponse(BaseModel):
    """How many syncs the selector matches now, and whether a bulk operation may take them."""

    matched: int
    max_bulk_syncs: int
    within_limit: bool


class BulkResultResponse(BaseModel):
    """A bulk command's result: ``outcome`` and ``counts`` (no per-sync list)."""

    operation_id: str
    command_id: str
    outcome: Literal["applied", "noop"]
    counts: BulkCounts


class BulkPhaseProgress(BaseModel):
    matched: int
    pending: int
    applied: int
    noop: int
    rejected: int


class BulkOperationResponse(BaseModel):
    """An operation as it stands. ``status``: ``queued``, ``running``, ``completed``,
    ``undoing``, ``undone`` or ``rejected`` (refused before anything changed: ``error``)."""

    operation_id: str
    kind: str
    status: str
    namespace_id: str
    selector: dict[str, Any] | None = None
    counts: BulkCounts | None = None
    undo_counts: BulkCounts | None = None
    progress: dict[str, BulkPhaseProgress] = Field(default_factory=dict)
    error: dict[str, Any] | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None
    undone_at: datetime | None = None


BULK_REQUEST_MODELS: Final[tuple[type[BaseModel], ...]] = (
    BulkPauseRequest,
    BulkResumeRequest,
    BulkUndoRequest,
    BulkPreviewRequest,
)
BULK_RESPONSE_MODELS: Final[tuple[type[BaseModel], ...]] = (
    BulkResultResponse,
    BulkOperationResponse,
    BulkPreviewResponse,
)
