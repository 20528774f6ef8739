"""The list routes' filters: what a filter's text may be (the rule of path ids: an id no sync
can have matches nothing, and is refused before a statement is built with it), and the status
values a filter takes (every value of the vendor's enums, even those no sync or job takes).

Pure: imported by the HTTP models, the gateway and tests, never a server library.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field

from events.envelope import MAX_ID_CHARS

__all__ = ["MAX_ID_CHARS", "FilterText", "JobStatusFilter", "TaskStatusFilter", "is_clean_id"]


def is_clean_id(text: str) -> bool:
    """Could ``text`` be an id (a path's, a filter's, a cursor's)? Printable text that UTF-8
    can encode (no U+0000, no unpaired surrogate, no control character) of at most
    ``MAX_ID_CHARS`` characters. Anything else matches nothing, and is refused before a
    statement is built with it (Postgres stores no U+0000, and no driver encodes a surrogate)."""
    if len(text) > MAX_ID_CHARS or not text.isprintable():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean(text: str) -> str:
    if not is_clean_id(text):
        raise ValueError(
            f"must be printable UTF-8 text of at most {MAX_ID_CHARS} characters "
            "(no U+0000, control character or unpaired surrogate)"
        )
    return text


#: A list filter's text (an id or a name): what ``is_clean_id`` accepts, else 422.
FilterText = Annotated[str, Field(max_length=MAX_ID_CHARS), AfterValidator(_clean)]


class TaskStatusFilter(StrEnum):
    """A sync status filter: every value of the vendor's ``TaskStatusEnum``. Those no sync
    takes (``QUEUED``, ``INTERRUPTED``, ``DEACTIVATED``, ...) match nothing."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_ERRORS = "COMPLETED_WITH_ERRORS"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    INTERRUPTED = "INTERRUPTED"
    UNKNOWN = "UNKNOWN"
    SKIPPED = "SKIPPED"
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    ARCHIVED = "ARCHIVED"
    SUSPENDED = "SUSPENDED"
    DEACTIVATED = "DEACTIVATED"


class JobStatusFilter(StrEnum):
    """A job status filter: every value of the vendor's ``SyncJobStatus`` (``skipped``, which
    no job of synclife's takes, matches nothing)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"
