"""The AsyncAPI message objects: one per command type, per lifecycle event type, the command
result and the dead letter, each with its documentation, headers, payload and Kafka key.

(Not the client's message models, which are ``events.messages``: these describe them.)
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from events.auth import SCOPE_RUN, SCOPE_WRITE
from events.contract.headers import message_headers
from events.contract.schemas import non_null, ref, ref_name
from events.envelope import CONTENT_TYPE
from events.messages import (
    BULK_EVENT_TYPES,
    RESULT_TYPE,
    BulkEvent,
    CommandResult,
    LifecycleEvent,
)
from statemachine.commands import CommandType, data_model
from statemachine.decision import EventType

__all__ = [
    "DEAD_LETTER_MESSAGE",
    "KAFKA_BINDING_VERSION",
    "RESULT_MESSAGE",
    "bulk_event_messages",
    "command_message_id",
    "command_messages",
    "dead_letter_message",
    "event_message_id",
    "event_messages",
    "result_message",
]

KAFKA_BINDING_VERSION: Final = "0.5.0"

# Message ids (keys of components.messages and of the channels' messages; also the names of
# the standalone schema files, with ``.json``).
RESULT_MESSAGE: Final = "command_result"
DEAD_LETTER_MESSAGE: Final = "dead_letter"


def command_message_id(command_type: CommandType) -> str:
    return f"command.{command_type.value}"


def event_message_id(event_type: EventType) -> str:
    return f"event.{event_type.value}"


_COMMAND_DOCS: Final[dict[CommandType, str]] = {
    CommandType.CREATE: "Create a sync. The creator chooses `sync_config_id` (the key and "
    "`ce_subject`); a create for an id that exists is rejected with `already_exists`, unless it "
    "is the same command id (idempotent replay). `initial_status` is PENDING (default: the first "
    "run is due at once), DRAFT or SUSPENDED. `provider` is optional (without it `source_path` "
    "is only checked as non-empty text); `created_by_user_id` defaults to the caller (the "
    "key's owner user id, else `key:<key id>`).",
    CommandType.UPDATE: "Change a partial set of the mutable configuration fields (at least one). "
    "Identity fields (`bucket_id`, `source_path`, ...) cannot be changed; `provider` may be set "
    "while it is null (then `source_path` is checked against it), never changed. `is_active` "
    "(false: pause, true: resume) or `status` (`SUSPENDED` or `ACTIVE`; they must agree) make "
    "the update also a plain pause or resume, applied after the configuration change as the "
    "next version (`sync.updated` then `sync.status_changed`). Nothing changed: a noop.",
    CommandType.ACTIVATE: "Make a DRAFT sync PENDING (its first run is due at once). A noop from "
    "PENDING or ACTIVE.",
    CommandType.PAUSE: "Place a pause hold (v1.1). Without `hold`: the caller's plain hold "
    "`user:<caller>`; with `hold`: a named hold (labels starting `system:` or `bulk:` are the "
    "service's own: `validation_error` naming `hold`). `until` (an RFC 3339 time, or an ISO "
    "8601 duration such as `PT2H` counted from the decision; future, at most 90 days; stored "
    "as an absolute UTC time): the service releases the hold itself then. From PENDING or "
    "ACTIVE: status SUSPENDED, `paused` true, `is_active` false. From SUSPENDED: the hold "
    "joins the others (`sync.holds_changed`); a hold already held gets the fields given, keeps "
    "those omitted; nothing changed: a noop. `pause_reason`, `paused_at` and "
    "`paused_by_user_id` (default: the caller) describe the earliest hold. A run in progress "
    "may finish; no new run is requested while paused. The result's `holds` lists the labels "
    "held. `invalid_transition` from DRAFT, FAILED or a terminal status.",
    CommandType.RESUME: "Release pause holds (v1.1). Without `hold`: every plain hold and "
    "`system:failures` (named holds stay); with `hold`: that hold (another owner's named hold "
    "needs `syncs:admin`: else `forbidden`); `force` (`syncs:admin`) releases all. No hold "
    "left: status ACTIVE, `paused` false, `is_active` true, pause fields cleared, and the "
    "change carries `runs_skipped_while_paused`; `mode` `incremental` (default, "
    "`modified_since` = `last_sync_at`) or `full` (`modified_since` null); `run` `due` "
    "(default: a run at once if one fell due while paused, else at the next interval) or "
    "`next_interval`. Holds left: still SUSPENDED (`sync.holds_changed`). Nothing released: a "
    "noop. The result's `holds` lists the labels left. A noop from PENDING or ACTIVE; "
    "`invalid_transition` from a terminal status. From FAILED: as `sync.trigger`.",
    CommandType.TRIGGER: "Request a run now (a `sync.run_requested` event naming its job; the "
    "result's `sync_job_id`); a noop while a run holds the lock. `mode`: `incremental` "
    "(default) or `full` (`modified_since` null); a full trigger while a run holds the lock "
    "sets `pending_full_sync` (until that full run completes) and the full run is requested "
    "when the lock is released. From "
    "FAILED: status PENDING, due at once, `consecutive_failures` reset to "
    "0, and the run requested.",
    CommandType.CANCEL: "Cancel the sync (terminal status CANCELED).",
    CommandType.ARCHIVE: "Archive the sync (terminal, final status ARCHIVED).",
    CommandType.UNLOCK: "Release a stuck run lock (scope `syncs:write`): one versioned change, "
    "event `sync.lock_released`; the run is interrupted (not counted as a failure) and its "
    "`lock_token` is `lock_lost` from then on; a PENDING or ACTIVE sync is due again at once. "
    "A noop when no run holds the lock; `invalid_transition` from ARCHIVED.",
    CommandType.RUN_START: "A worker takes the run lock for `lease_seconds`; rejected with "
    "`lock_conflict` while another worker holds it. It runs the queued job (`sync_job_id`, if "
    "given, must name it: else `validation_error`), or a new `manual` job when none is queued; "
    "the job's id is the run's `run_id`. The result's `run` carries the `run_id` and "
    "`lock_token` every later report must present.",
    CommandType.RUN_HEARTBEAT: "Extend the lease of the running worker by `lease_seconds` from "
    "now. A stale `run_id` or `lock_token` is rejected with `lock_lost`.",
    CommandType.RUN_CHECKPOINT: "Report where the run is (resume cursor, last primary key, "
    "objects processed) and the metric deltas since the last report.",
    CommandType.RUN_COMPLETE: "The run finished: its totals, and the batches and tasks it "
    "created. Releases the lock; an `initial_only` sync becomes COMPLETED.",
    CommandType.BULK_PAUSE: "Pause every sync of the caller's namespace that `selector` "
    "matches (`bucket_id`, `connection_id`, `provider`, `status`, `metadata` pairs; empty: "
    "`validation_error`) with the hold `bulk:<operation id>`, each as its own versioned change "
    "(actor `bulk:<operation id>`), exactly once even across crashes; the other fields are the "
    "pause's. The key and `ce_subject` are the operation id (`bulk_` + ULID, chosen by the "
    "caller). More than `SYNCLIFE_MAX_BULK_SYNCS` matched (10,000): `validation_error`, "
    "nothing changed. The result (once every sync is done) carries `operation_id` and "
    "`counts` {matched, applied, noop, rejected}; events `sync.bulk_started` and "
    "`sync.bulk_completed` are keyed by the operation id.",
    CommandType.BULK_RESUME: "Resume every matched sync (the selector as `sync.bulk.pause`'s; "
    "the other fields are the resume's), each as its own versioned change; result and events "
    "as `sync.bulk.pause`'s.",
    CommandType.BULK_UNDO: "Release exactly the holds the bulk pause named by the key placed "
    "(each as its own versioned change; a sync held otherwise stays SUSPENDED). Once: a later "
    "undo is a noop with the same counts. Unknown operation: `not_found`. Event "
    "`sync.bulk_undone` (version 3).",
    CommandType.RUN_FAIL: "The run stopped on `error`. Releases the lock and retries with "
    "backoff; after too many consecutive failures a continuous sync is auto-suspended and an "
    "`initial_only` sync becomes FAILED.",
}

_EVENT_DOCS: Final[dict[EventType, str]] = {
    EventType.CREATED: "The sync was created (`from_status` null, `to_status` its initial status).",
    EventType.UPDATED: "The configuration changed without a status change.",
    EventType.STATUS_CHANGED: "The status changed (`from_status`, `to_status`, `trigger`: the "
    "command type, `schedule`, `auto_suspend`, ...). A change that would otherwise be one of "
    "the other types but moves the status is published as this type, and then also carries "
    "that type's fields (for example `run_id`, `worker_id`, `lock_token`, `modified_since` and "
    "`checkpoint` when `sync.run.start` moves a PENDING sync to ACTIVE). The change that "
    "resumes a paused sync (its last hold released by `sync.resume`, or by the service when a "
    "timed pause ends: `trigger` `pause_expired`) adds `runs_skipped_while_paused`: how many "
    "times it fell due while paused (0 if never; else 1 + whole intervals between its first "
    "due time and the resume).",
    EventType.RUN_REQUESTED: "A run is due (schedule, trigger or resume): a job. Adds "
    "`sync_job_id` (`job_` + ULID; a run requested again before a worker started it names the "
    "same job), `full_sync`, `modified_since` (the last successful sync; null for a full sync) "
    "and `checkpoint` (where the run resumes); `trigger` is the job's: `scheduled`, `manual` "
    "or `resume`.",
    EventType.RUN_STARTED: "A worker took the run lock. Adds `run_id` (the job's id), "
    "`sync_job_id`, `full_sync`, `worker_id`, `lock_token`, `modified_since` and `checkpoint`.",
    EventType.LEASE_EXTENDED: "The running worker extended its lease (heartbeat). Adds "
    "`run_id`. (An extension of the contract.)",
    EventType.RUN_CHECKPOINTED: "The running worker reported progress. Adds `run_id`.",
    EventType.RUN_COMPLETED: "The run completed. Adds `run_id` and `run_totals` (the run's "
    "file and byte counts).",
    EventType.RUN_FAILED: "The run failed. Adds `run_id` and `error`.",
    EventType.LOCK_EXPIRED: "A worker's lease ran out and the service took the lock back (the "
    "run counts as failed). Adds `run_id`, `error` and `worker_id`.",
    EventType.LOCK_RELEASED: "`sync.unlock` released the run lock (the run is interrupted, "
    "not counted as failed). Adds `run_id` and `worker_id` (the worker that held it).",
    EventType.HOLDS_CHANGED: "A pause hold was placed, changed or released and the status "
    "did not change (the sync stays SUSPENDED); the sync's `pause_holds` lists the holds. "
    "`trigger` `pause_expired` (actor `system`): a timed pause ended.",
}

# Fields beyond the common ones that an event of each type always carries, and whether each
# may be null there. ``from_status``/``to_status`` are on every event; only ``sync.created``
# has a null ``from_status``.
_ALWAYS_STATUSES: Final = (("from_status", False), ("to_status", False))
_EVENT_FIELDS: Final[dict[EventType, tuple[tuple[str, bool], ...]]] = {
    EventType.CREATED: (("from_status", True), ("to_status", False)),
    EventType.RUN_REQUESTED: (
        ("sync_job_id", False),
        ("full_sync", False),
        ("modified_since", True),
        ("checkpoint", False),
    ),
    EventType.RUN_STARTED: (
        ("run_id", False),
        ("sync_job_id", False),
        ("full_sync", False),
        ("worker_id", False),
        ("lock_token", False),
        ("modified_since", True),
        ("checkpoint", False),
    ),
    EventType.LEASE_EXTENDED: (("run_id", False),),
    EventType.RUN_CHECKPOINTED: (("run_id", False),),
    EventType.RUN_COMPLETED: (("run_id", False), ("run_totals", False)),
    EventType.RUN_FAILED: (("run_id", False), ("error", False)),
    EventType.LOCK_EXPIRED: (("run_id", False), ("error", False), ("worker_id", True)),
    EventType.LOCK_RELEASED: (("run_id", False), ("worker_id", True)),
}


def _kafka_key(description: str) -> dict[str, Any]:
    return {
        "kafka": {
            "key": {"type": "string", "description": description},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }


def command_messages(by_model: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for command_type in CommandType:
        model = data_model(command_type)
        scope = SCOPE_RUN if command_type.is_run else SCOPE_WRITE
        doc = _COMMAND_DOCS.get(command_type, "")
        if model is None:
            doc = "Not supported by this version: rejected with `unsupported_type`."
        out[command_message_id(command_type)] = {
            "name": command_type.value,
            "title": f"{command_type.value} command",
            "summary": doc.split(". ")[0].rstrip(".") + ".",
            "description": f"{doc}\n\nNeeds the `{scope}` scope. Exactly one result with "
            f"`command_id` = `ce_id` is published on the command results topic.",
            "contentType": CONTENT_TYPE,
            "headers": message_headers("CommandHeaders", command_type.value),
            "payload": by_model[model] if model is not None else {"type": "object"},
            "correlationId": {
                "description": "The command id; its result carries it as `command_id`.",
                "location": "$message.header#/ce_id",
            },
            "bindings": _kafka_key(
                "The operation id (equal to `ce_subject`)."
                if command_type.is_bulk
                else "The `sync_config_id` (equal to `ce_subject`)."
            ),
        }
    return out


def _event_payload(event_type: EventType, schemas: dict[str, Any], base: str) -> dict[str, Any]:
    props = schemas[base]["properties"]
    fields = dict(_ALWAYS_STATUSES)
    fields.update(_EVENT_FIELDS.get(event_type, ()))
    refinement = {
        "type": "object",
        "required": list(fields),
        "properties": {
            name: dict(props[name]) if nullable else non_null(props[name])
            for name, nullable in fields.items()
        },
    }
    return {
        "title": f"{event_type.value} event data",
        "description": _EVENT_DOCS.get(event_type, ""),
        "allOf": [ref(base), refinement],
    }


def event_messages(by_model: dict[type[BaseModel], Any], schemas: dict[str, Any]) -> dict[str, Any]:
    base = ref_name(by_model[LifecycleEvent]["$ref"])
    out: dict[str, Any] = {}
    for event_type in EventType:
        doc = _EVENT_DOCS.get(event_type, "")
        out[event_message_id(event_type)] = {
            "name": event_type.value,
            "title": f"{event_type.value} event",
            "summary": doc.split(". ")[0].rstrip(".") + ".",
            "description": f"{doc}\n\nEach persisted change of a sync raises its `version` by "
            "exactly 1 and emits exactly one event with that version: the versions of one sync "
            "are gap-free and in order on the topic. `sync` is the whole configuration after "
            "the change; `command_id` is null for changes the service made itself.",
            "contentType": CONTENT_TYPE,
            "headers": message_headers("SynclifeHeaders", event_type.value),
            "payload": _event_payload(event_type, schemas, base),
            "bindings": _kafka_key("The `sync_config_id`."),
        }
    return out


_BULK_EVENT_DOCS: Final[dict[str, str]] = {
    "sync.bulk_started": "A bulk operation matched its syncs (`counts.matched`); each one's "
    "change follows as that sync's own event (actor `bulk:<operation id>`).",
    "sync.bulk_completed": "Every matched sync of the bulk operation is done: the final `counts`.",
    "sync.bulk_undone": "The bulk pause's undo is done: `counts` of the undo (syncs whose "
    "hold it released).",
}


def bulk_event_messages(by_model: dict[type[BaseModel], Any]) -> dict[str, Any]:
    """A bulk operation's own events, keyed by its id, versions 1, 2 and 3."""
    out: dict[str, Any] = {}
    for event_type, version in BULK_EVENT_TYPES.items():
        doc = _BULK_EVENT_DOCS[event_type]
        out[f"event.{event_type}"] = {
            "name": event_type,
            "title": f"{event_type} event",
            "summary": doc.split(". ")[0].split(": ")[0].rstrip(".") + ".",
            "description": f"{doc}\n\nVersion {version} of the operation, keyed by its "
            "`operation_id` (also `ce_subject`); the event id is `<operation id>:v"
            f"{version}`. Not a sync's event: its data is a `BulkEvent`.",
            "contentType": CONTENT_TYPE,
            "headers": message_headers("SynclifeHeaders", event_type),
            "payload": by_model[BulkEvent],
            "bindings": _kafka_key("The bulk operation's id."),
        }
    return out


def result_message(by_model: dict[type[BaseModel], Any]) -> dict[str, Any]:
    return {
        "name": RESULT_TYPE,
        "title": "command result",
        "summary": "Exactly one result per command id.",
        "description": "`outcome` is `applied`, `noop` or `rejected`. `version`, `status` and "
        "`sync` are the sync after the command, when the sync is visible to the caller; a "
        "`rejected` result has an `error` `{code, message, details}`. A redelivered or "
        "republished command gets the same result again (same `ce_id`).",
        "contentType": CONTENT_TYPE,
        "headers": message_headers("SynclifeHeaders", RESULT_TYPE),
        "payload": by_model[CommandResult],
        "correlationId": {
            "description": "The command id (`ce_id` of the command).",
            "location": "$message.payload#/command_id",
        },
        "bindings": _kafka_key(
            "The `sync_config_id`, or the command id where no sync id could be read."
        ),
    }


def dead_letter_message() -> dict[str, Any]:
    return {
        "name": "dead_letter",
        "title": "dead letter",
        "summary": "A message of the commands topic that could not be decoded or processed.",
        "description": "The original key, value and headers, unchanged but for the "
        "`authorization` header, which is redacted; with added `dlq_*` headers. Where a command "
        "id and a sync id could be read, a `rejected` result is published too. The service "
        "keeps running and the commands after it are processed.",
        "contentType": "application/octet-stream",
        "headers": ref("DeadLetterHeaders"),
        "payload": {
            "type": "string",
            "format": "binary",
            "description": "The original value, byte for byte (not necessarily JSON).",
        },
        "bindings": _kafka_key("The original key, unchanged (absent if it was)."),
    }
