"""Kafka header schemas: the CloudEvents 1.0 headers (Kafka binding, binary mode) of commands,
of every message synclife writes and of dead letters, and one message's headers by type.

The constants come from the code that writes and checks the headers (``events.envelope``,
``events.auth``), so the documents cannot drift from it.
"""

from __future__ import annotations

from typing import Any, Final

from events.auth import KEY_PREFIX, MIN_SECRET_CHARS, SCOPE_RUN, SCOPE_WRITE
from events.contract.schemas import ref
from events.envelope import CONTENT_TYPE, MAX_ID_CHARS, REDACTED, SOURCE, SPECVERSION

__all__ = ["header_schemas", "message_headers"]

_DLQ_REASONS: Final = (
    "`too_large`, `bad_envelope` (missing or bad CloudEvents headers), `unsupported_type`, "
    "`invalid_json`, `command_id_reused` (another key reused a command id), "
    "`processing_failed: <error>`"
)


def header_schemas(command_types: list[str]) -> dict[str, Any]:
    secret = f"[A-Za-z0-9_-]{{{MIN_SECRET_CHARS},256}}"
    ce_specversion = {"type": "string", "const": SPECVERSION, "description": "CloudEvents 1.0."}
    return {
        "CommandHeaders": {
            "type": "object",
            "title": "CommandHeaders",
            "description": "Kafka headers of a command: CloudEvents 1.0, Kafka protocol binding, "
            "binary content mode (UTF-8 values), plus the caller's credentials. Tenancy comes "
            "from the API key and `x-namespace`, never from the data. Other headers are ignored.",
            "required": [
                "ce_specversion",
                "ce_id",
                "ce_type",
                "ce_source",
                "authorization",
                "x-namespace",
            ],
            "properties": {
                "ce_specversion": ce_specversion,
                "ce_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_ID_CHARS,
                    "description": "The command id: the idempotency key. The same command id "
                    "delivered or published any number of times has one effect, and every "
                    "delivery gets the same result.",
                },
                "ce_type": {"type": "string", "enum": command_types},
                "ce_source": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Who sent the command (a URI-reference naming the producer).",
                },
                "ce_time": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the command was issued (RFC 3339).",
                },
                "ce_subject": {
                    "type": "string",
                    "maxLength": MAX_ID_CHARS,
                    "description": "The `sync_config_id`; must equal the message key. The sync "
                    "id is read from it, or from the key when it is absent.",
                },
                "content-type": {
                    "type": "string",
                    "examples": [CONTENT_TYPE],
                    "description": f"`{CONTENT_TYPE}` (parameters such as a charset are "
                    "allowed); when absent, JSON is assumed.",
                },
                "authorization": {
                    "type": "string",
                    "pattern": f"^Bearer {KEY_PREFIX}{secret}$",
                    "description": f"`Bearer {KEY_PREFIX}...`: an API key. `{SCOPE_WRITE}` is "
                    f"needed for lifecycle commands, `{SCOPE_RUN}` for worker `sync.run.*` "
                    "commands. Never logged or echoed.",
                },
                "x-namespace": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A namespace id (`ns_...`) or name, available to the key.",
                },
                "ce_expectedversion": {
                    "type": "string",
                    "pattern": "^[0-9]+$",
                    "description": "Optional CloudEvents extension: an integer. The command is "
                    "rejected with `version_conflict` unless the sync's current version equals "
                    "it (0: the sync must not exist yet).",
                },
            },
        },
        "SynclifeHeaders": {
            "type": "object",
            "title": "SynclifeHeaders",
            "description": "Kafka headers of every message synclife writes: CloudEvents 1.0, "
            "Kafka protocol binding, binary content mode (UTF-8 values). Any CloudEvents SDK "
            "reads them.",
            "required": [
                "ce_specversion",
                "ce_id",
                "ce_type",
                "ce_source",
                "ce_time",
                "ce_subject",
                "content-type",
            ],
            "properties": {
                "ce_specversion": ce_specversion,
                "ce_id": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Fixed by what the message is: `<sync_config_id>:v<version>` "
                    "for a lifecycle event, `result:<command_id>` for a command result. "
                    "Deduplicate by it.",
                },
                "ce_type": {"type": "string"},
                "ce_source": {"type": "string", "const": SOURCE},
                "ce_time": {
                    "type": "string",
                    "format": "date-time",
                    "description": "RFC 3339, UTC.",
                },
                "ce_subject": {
                    "type": "string",
                    "description": "The `sync_config_id` (the message key).",
                },
                "content-type": {"type": "string", "const": CONTENT_TYPE},
            },
        },
        "DeadLetterHeaders": {
            "type": "object",
            "title": "DeadLetterHeaders",
            "description": "The original message's headers, unchanged but for `authorization` "
            "(redacted), plus the `dlq_*` headers (UTF-8 values).",
            "required": [
                "dlq_reason",
                "dlq_source_topic",
                "dlq_source_partition",
                "dlq_source_offset",
            ],
            "properties": {
                "dlq_reason": {
                    "type": "string",
                    "minLength": 1,
                    "description": f"Why it was dead-lettered: {_DLQ_REASONS}.",
                },
                "dlq_source_topic": {"type": "string", "minLength": 1},
                "dlq_source_partition": {"type": "string", "pattern": "^[0-9]+$"},
                "dlq_source_offset": {"type": "string", "pattern": "^[0-9]+$"},
                "authorization": {
                    "type": "string",
                    "const": REDACTED.decode(),
                    "description": "Present when the original had one; never the key.",
                },
            },
        },
    }


def message_headers(base: str, ce_type: str) -> dict[str, Any]:
    """The headers of one message: those of ``base``, with ``ce_type`` fixed."""
    return {
        "type": "object",
        "allOf": [
            ref(base),
            {
                "type": "object",
                "required": ["ce_type"],
                "properties": {"ce_type": {"type": "string", "const": ce_type}},
            },
        ],
    }
