"""The wire contract as documents: an AsyncAPI 3.0 document and standalone JSON Schemas.

Both are generated from the code that reads and writes the messages: the command data models
(``statemachine.commands``), ``LifecycleEvent`` and ``CommandResult`` (``events.messages``) and
the CloudEvents envelope (``events.envelope``). Payload schemas live once, in
``components.schemas``, and every ``$ref`` points inside the document. ``json_schemas`` cuts
one self-contained JSON Schema (Draft 2020-12) per command type, event type and the result out
of the same document, so the two never disagree.

Regenerate the checked-in copies with::

    synclife asyncapi --output docs/asyncapi.json
    synclife schemas --output-dir docs/schemas
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from events.auth import KEY_PREFIX, MIN_SECRET_CHARS, SCOPE_RUN, SCOPE_WRITE
from events.envelope import CONTENT_TYPE, MAX_ID_CHARS, REDACTED, SOURCE, SPECVERSION
from events.messages import RESULT_TYPE, CommandResult, LifecycleEvent
from events.settings import KafkaSettings
from statemachine.commands import CommandType, CreateData, UpdateData, data_model
from statemachine.decision import EventType
from statemachine.model import SyncSettings, source_path_rules

__all__ = [
    "ASYNCAPI_VERSION",
    "CONTRACT_VERSION",
    "JSON_SCHEMA_DIALECT",
    "asyncapi_document",
    "json_schemas",
    "to_json",
]

ASYNCAPI_VERSION: Final = "3.0.0"
#: The version of the wire contract (``docs/contract.md``) the document describes.
CONTRACT_VERSION: Final = "1.0.0"
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
KAFKA_BINDING_VERSION: Final = "0.5.0"

_REF_PREFIX: Final = "#/components/schemas/"
_REF_TEMPLATE: Final = _REF_PREFIX + "{model}"
_NULL: Final[dict[str, Any]] = {"type": "null"}

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
    "run is due at once), DRAFT or SUSPENDED.",
    CommandType.UPDATE: "Change a partial set of the mutable configuration fields (at least one). "
    "Identity fields (`bucket_id`, `provider`, `source_path`, ...) cannot be changed.",
    CommandType.ACTIVATE: "Make a DRAFT sync PENDING (its first run is due at once). A noop from "
    "PENDING or ACTIVE.",
    CommandType.PAUSE: "From PENDING or ACTIVE: status SUSPENDED, `paused` true, `is_active` "
    "false, `pause_reason`, `paused_at` and `paused_by_user_id` set. A run in progress may "
    "finish; no new run is requested while paused. A noop from SUSPENDED; `invalid_transition` "
    "from a terminal status.",
    CommandType.RESUME: "From SUSPENDED: status ACTIVE, `paused` false, `is_active` true, pause "
    "fields cleared; the next run is incremental (`modified_since` = `last_sync_at`). A noop "
    "from PENDING or ACTIVE; `invalid_transition` from a terminal status.",
    CommandType.TRIGGER: "Request a run now (a `sync.run_requested` event); a noop while a run "
    "holds the lock.",
    CommandType.CANCEL: "Cancel the sync (terminal status CANCELED).",
    CommandType.ARCHIVE: "Archive the sync (terminal, final status ARCHIVED).",
    CommandType.RUN_START: "A worker takes the run lock for `lease_seconds`; rejected with "
    "`lock_conflict` while another worker holds it. The result's `run` carries the `run_id` "
    "and `lock_token` every later report must present.",
    CommandType.RUN_HEARTBEAT: "Extend the lease of the running worker by `lease_seconds` from "
    "now. A stale `run_id` or `lock_token` is rejected with `lock_lost`.",
    CommandType.RUN_CHECKPOINT: "Report where the run is (resume cursor, last primary key, "
    "objects processed) and the metric deltas since the last report.",
    CommandType.RUN_COMPLETE: "The run finished: its totals, and the batches and tasks it "
    "created. Releases the lock; an `initial_only` sync becomes COMPLETED.",
    CommandType.RUN_FAIL: "The run stopped on `error`. Releases the lock and retries with "
    "backoff; after too many consecutive failures the sync is auto-suspended.",
}

_EVENT_DOCS: Final[dict[EventType, str]] = {
    EventType.CREATED: "The sync was created (`from_status` null, `to_status` its initial status).",
    EventType.UPDATED: "The configuration changed without a status change.",
    EventType.STATUS_CHANGED: "The status changed (`from_status`, `to_status`, `trigger`: the "
    "command type, `schedule`, `auto_suspend`, ...). A change that would otherwise be one of "
    "the other types but moves the status is published as this type, and then also carries "
    "that type's fields (for example `run_id`, `worker_id`, `lock_token`, `modified_since` and "
    "`checkpoint` when `sync.run.start` moves a PENDING sync to ACTIVE).",
    EventType.RUN_REQUESTED: "A run is due (schedule, trigger or resume). Adds `modified_since` "
    "(the last successful sync; null for a full sync) and `checkpoint` (where the run resumes).",
    EventType.RUN_STARTED: "A worker took the run lock. Adds `run_id`, `worker_id`, "
    "`lock_token`, `modified_since` and `checkpoint`.",
    EventType.LEASE_EXTENDED: "The running worker extended its lease (heartbeat). Adds "
    "`run_id`. (An extension of the contract.)",
    EventType.RUN_CHECKPOINTED: "The running worker reported progress. Adds `run_id`.",
    EventType.RUN_COMPLETED: "The run completed. Adds `run_id` and `run_totals` (the run's "
    "file and byte counts).",
    EventType.RUN_FAILED: "The run failed. Adds `run_id` and `error`.",
    EventType.LOCK_EXPIRED: "A worker's lease ran out and the service took the lock back (the "
    "run counts as failed). Adds `run_id`, `error` and `worker_id`.",
}

# Fields beyond the common ones that an event of each type always carries, and whether each
# may be null there. ``from_status``/``to_status`` are on every event; only ``sync.created``
# has a null ``from_status``.
_ALWAYS_STATUSES: Final = (("from_status", False), ("to_status", False))
_EVENT_FIELDS: Final[dict[EventType, tuple[tuple[str, bool], ...]]] = {
    EventType.CREATED: (("from_status", True), ("to_status", False)),
    EventType.RUN_REQUESTED: (("modified_since", True), ("checkpoint", False)),
    EventType.RUN_STARTED: (
        ("run_id", False),
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
}

_DLQ_REASONS: Final = (
    "`too_large`, `bad_envelope` (missing or bad CloudEvents headers), `unsupported_type`, "
    "`invalid_json`, `command_id_reused` (another key reused a command id), "
    "`processing_failed: <error>`"
)


def _default_settings() -> KafkaSettings:
    """The contract's defaults, whatever the environment says (the docs must not vary)."""
    return KafkaSettings.model_construct()


def _component_schemas() -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """The payload models' JSON Schemas: ``$ref`` of each model, and every definition."""
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation") for model in _command_models()
    ]
    outputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (LifecycleEvent, "serialization"),
        (CommandResult, "serialization"),
    ]
    refs, top = models_json_schema([*inputs, *outputs], ref_template=_REF_TEMPLATE)
    schemas: dict[str, Any] = top.get("$defs", {})
    by_model = {model: refs[(model, mode)] for model, mode in [*inputs, *outputs]}
    _add_command_rules(schemas, by_model)
    return by_model, _asyncapi_discriminators(schemas)


def _asyncapi_discriminators(node: Any) -> Any:
    """pydantic writes OpenAPI's ``discriminator: {propertyName, mapping}``; AsyncAPI's schema
    wants the property name alone (JSON Schema validators ignore the keyword either way)."""
    if isinstance(node, dict):
        return {
            key: (
                value["propertyName"]
                if key == "discriminator" and isinstance(value, dict) and "propertyName" in value
                else _asyncapi_discriminators(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_asyncapi_discriminators(item) for item in node]
    return node


def _nullable(schema: dict[str, Any]) -> bool:
    return _NULL in schema.get("anyOf", ())


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its ``null`` alternative (``X | None`` -> ``X``)."""
    if not _nullable(schema):
        return dict(schema)
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    options = [s for s in schema["anyOf"] if s != _NULL]
    if len(options) == 1:
        return {**rest, **options[0]}
    return {**rest, "anyOf": options}


def _add_command_rules(
    schemas: dict[str, Any], by_model: dict[type[BaseModel], dict[str, Any]]
) -> None:
    """State the rules ``parse_data`` and the configuration apply beyond the data models.

    The command models leave the configuration limits to the configuration built from them
    (so errors name the stored model's field); the documents state them where a producer looks:
    on the command. Every command may repeat its ``sync_config_id``; an update must change
    something; a create's ``source_path`` has its provider's format.
    """
    for model in _command_models():
        schema = schemas[_ref_name(by_model[model]["$ref"])]
        schema.setdefault("properties", {})["sync_config_id"] = {
            "type": "string",
            "description": "Optional: when present it must equal the message key and "
            "`ce_subject`. Tenancy fields (`internal_id`, `namespace_id`) are never accepted.",
        }
    limits = SyncSettings.model_json_schema(ref_template=_REF_TEMPLATE)["properties"]
    for model in (CreateData, UpdateData):
        schema = schemas[_ref_name(by_model[model]["$ref"])]
        for name, prop in schema["properties"].items():
            if name not in limits:
                continue
            keep = {k: v for k, v in prop.items() if k in ("title", "description", "default")}
            base = {k: v for k, v in limits[name].items() if k not in ("title", "default")}
            if _nullable(prop) and not _nullable(base):
                base = {"anyOf": [base, _NULL]}
            schema["properties"][name] = {**base, **keep}
        schema["description"] = (
            schema.get("description", "")
            + "\n\nThe limits shown are those of the sync configuration;"
            " `batch_chunk_size` must also be <= `max_batch_chunk_size`."
        ).strip()
    create = schemas[_ref_name(by_model[CreateData]["$ref"])]
    create["allOf"] = [
        {
            "if": {"properties": {"provider": {"const": provider.value}}, "required": ["provider"]},
            "then": {"properties": {"source_path": {"pattern": pattern, "description": shape}}},
        }
        for provider, (pattern, shape) in source_path_rules().items()
    ]
    update = schemas[_ref_name(by_model[UpdateData]["$ref"])]
    update["anyOf"] = [
        {"required": [name]}
        for name in update["properties"]
        if name not in ("updated_by_user_id", "sync_config_id")
    ]


def _ref_name(ref: str) -> str:
    if not ref.startswith(_REF_PREFIX):
        raise ValueError(f"not a component schema reference: {ref}")
    return ref[len(_REF_PREFIX) :]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF_PREFIX + name}


def _header_schemas(command_types: list[str]) -> dict[str, Any]:
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


def _headers(base: str, ce_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "allOf": [
            _ref(base),
            {
                "type": "object",
                "required": ["ce_type"],
                "properties": {"ce_type": {"type": "string", "const": ce_type}},
            },
        ],
    }


def _kafka_key(description: str) -> dict[str, Any]:
    return {
        "kafka": {
            "key": {"type": "string", "description": description},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }


def _command_messages(by_model: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
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
            "headers": _headers("CommandHeaders", command_type.value),
            "payload": by_model[model] if model is not None else {"type": "object"},
            "correlationId": {
                "description": "The command id; its result carries it as `command_id`.",
                "location": "$message.header#/ce_id",
            },
            "bindings": _kafka_key("The `sync_config_id` (equal to `ce_subject`)."),
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
            name: dict(props[name]) if nullable else _non_null(props[name])
            for name, nullable in fields.items()
        },
    }
    return {
        "title": f"{event_type.value} event data",
        "description": _EVENT_DOCS.get(event_type, ""),
        "allOf": [_ref(base), refinement],
    }


def _event_messages(
    by_model: dict[type[BaseModel], Any], schemas: dict[str, Any]
) -> dict[str, Any]:
    base = _ref_name(by_model[LifecycleEvent]["$ref"])
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
            "headers": _headers("SynclifeHeaders", event_type.value),
            "payload": _event_payload(event_type, schemas, base),
            "bindings": _kafka_key("The `sync_config_id`."),
        }
    return out


def _result_message(by_model: dict[type[BaseModel], Any]) -> dict[str, Any]:
    return {
        "name": RESULT_TYPE,
        "title": "command result",
        "summary": "Exactly one result per command id.",
        "description": "`outcome` is `applied`, `noop` or `rejected`. `version`, `status` and "
        "`sync` are the sync after the command, when the sync is visible to the caller; a "
        "`rejected` result has an `error` `{code, message, details}`. A redelivered or "
        "republished command gets the same result again (same `ce_id`).",
        "contentType": CONTENT_TYPE,
        "headers": _headers("SynclifeHeaders", RESULT_TYPE),
        "payload": by_model[CommandResult],
        "correlationId": {
            "description": "The command id (`ce_id` of the command).",
            "location": "$message.payload#/command_id",
        },
        "bindings": _kafka_key(
            "The `sync_config_id`, or the command id where no sync id could be read."
        ),
    }


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "dead_letter",
        "title": "dead letter",
        "summary": "A message of the commands topic that could not be decoded or processed.",
        "description": "The original key, value and headers, unchanged but for the "
        "`authorization` header, which is redacted; with added `dlq_*` headers. Where a command "
        "id and a sync id could be read, a `rejected` result is published too. The service "
        "keeps running and the commands after it are processed.",
        "contentType": "application/octet-stream",
        "headers": _ref("DeadLetterHeaders"),
        "payload": {
            "type": "string",
            "format": "binary",
            "description": "The original value, byte for byte (not necessarily JSON).",
        },
        "bindings": _kafka_key("The original key, unchanged (absent if it was)."),
    }


def _channel(
    address: str, title: str, description: str, message_ids: list[str], settings: KafkaSettings
) -> dict[str, Any]:
    return {
        "address": address,
        "title": title,
        "description": description,
        "messages": {mid: {"$ref": f"#/components/messages/{mid}"} for mid in message_ids},
        "bindings": {
            "kafka": {
                "topic": address,
                "partitions": settings.topic_partitions,
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _operation(
    action: str, channel: str, title: str, summary: str, message_ids: list[str]
) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "title": title,
        "summary": summary,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{mid}"} for mid in message_ids],
    }


_DESCRIPTION: Final = """\
synclife is the lifecycle service of bucket-scoped sync configurations: other services publish \
commands to it on Kafka and learn what happened from its lifecycle events and command results.

Every message is a CloudEvents 1.0 event in the Kafka protocol binding's binary content mode: \
the attributes are `ce_*` headers (UTF-8), the value is the JSON `data` object. Every message \
about one sync is keyed by its `sync_config_id`, so one partition orders all of them.

Commands authenticate with an API key (`authorization: Bearer sk_...`) and name a namespace \
(`x-namespace`). The command id (`ce_id`) is the idempotency key: exactly one result is \
published per command id.

Standalone JSON Schemas (Draft 2020-12) of every payload are generated from the same models: \
`synclife schemas --output-dir DIR`."""


def _command_models() -> list[type[BaseModel]]:
    """Each command data model once, in the order of ``CommandType``."""
    models = (data_model(t) for t in CommandType)
    return list(dict.fromkeys(m for m in models if m is not None))


def asyncapi_document(settings: KafkaSettings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the wire contract (topic names from ``settings``).

    Without settings, the contract's default topic names are used, whatever the environment.
    """
    s = settings if settings is not None else _default_settings()
    by_model, schemas = _component_schemas()
    command_types = [t.value for t in CommandType]
    schemas.update(_header_schemas(command_types))
    commands = _command_messages(by_model)
    events = _event_messages(by_model, schemas)
    messages = {
        **commands,
        **events,
        RESULT_MESSAGE: _result_message(by_model),
        DEAD_LETTER_MESSAGE: _dead_letter_message(),
    }
    channels = {
        "commands": _channel(
            s.commands_topic,
            "Commands",
            "Commands to synclife, keyed by `sync_config_id` (the `ce_subject`).",
            list(commands),
            s,
        ),
        "lifecycle": _channel(
            s.lifecycle_topic,
            "Lifecycle events",
            "One event per persisted change of a sync, keyed by `sync_config_id`: the versions "
            "of one sync are gap-free and in order.",
            list(events),
            s,
        ),
        "commandResults": _channel(
            s.results_topic,
            "Command results",
            "Exactly one result per command id, keyed by `sync_config_id` (or the command id "
            "where no sync id could be read).",
            [RESULT_MESSAGE],
            s,
        ),
        "deadLetters": _channel(
            s.dlq_topic,
            "Dead letters",
            "Messages of the commands topic that could not be decoded or processed, with their "
            "original key.",
            [DEAD_LETTER_MESSAGE],
            s,
        ),
    }
    receive = _operation(
        "receive",
        "commands",
        "Receive commands",
        "Consume, authenticate, validate and apply commands, in offset order per partition.",
        list(commands),
    )
    receive["bindings"] = {
        "kafka": {
            "groupId": {"type": "string", "enum": [s.consumer_group]},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:synclife:wire-contract",
        "info": {
            "title": "synclife wire contract",
            "version": CONTRACT_VERSION,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": s.kafka_bootstrap_servers.split(",")[0].strip(),
                "protocol": "kafka",
                "description": "The Kafka cluster (`SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS`; the "
                "default is the local stack of `synclife stack up`).",
            }
        },
        "channels": channels,
        "operations": {
            "receiveCommands": receive,
            "sendLifecycleEvents": _operation(
                "send",
                "lifecycle",
                "Send lifecycle events",
                "Publish one event per persisted change of a sync (from the outbox).",
                list(events),
            ),
            "sendCommandResults": _operation(
                "send",
                "commandResults",
                "Send command results",
                "Publish exactly one result per command id.",
                [RESULT_MESSAGE],
            ),
            "sendDeadLetters": _operation(
                "send",
                "deadLetters",
                "Send dead letters",
                "Set aside the commands that cannot be decoded or processed.",
                [DEAD_LETTER_MESSAGE],
            ),
        },
        "components": {"schemas": schemas, "messages": messages},
    }


def _walk_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _walk_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_refs(item)


def _to_defs(node: Any) -> Any:
    """A copy of ``node`` with component schema references rewritten to ``#/$defs/...``."""
    if isinstance(node, dict):
        return {
            key: (
                "#/$defs/" + _ref_name(value)
                if key == "$ref" and isinstance(value, str)
                else _to_defs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_to_defs(item) for item in node]
    return node


def _standalone(payload: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """A self-contained JSON Schema of ``payload``: the definitions it needs in ``$defs``."""
    root = copy.deepcopy(payload)
    if set(root) == {"$ref"}:
        root = copy.deepcopy(schemas[_ref_name(root["$ref"])])
    defs: dict[str, Any] = {}
    pending = [_ref_name(r) for r in _walk_refs(root)]
    while pending:
        name = pending.pop()
        if name not in defs:
            defs[name] = schemas[name]
            pending.extend(_ref_name(r) for r in _walk_refs(defs[name]))
    out: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, **_to_defs(root)}
    if defs:
        out["$defs"] = _to_defs(dict(sorted(defs.items())))
    return out


def json_schemas() -> dict[str, dict[str, Any]]:
    """One standalone JSON Schema (Draft 2020-12) per command type, event type and the result.

    Keys are file names: ``command.sync.pause.json``, ``event.sync.status_changed.json``,
    ``command_result.json``. They are cut out of ``asyncapi_document()``, so they agree with it.
    """
    components = asyncapi_document()["components"]
    schemas = components["schemas"]
    return {
        f"{mid}.json": _standalone(message["payload"], schemas)
        for mid, message in components["messages"].items()
        if mid != DEAD_LETTER_MESSAGE
    }


def to_json(document: Any) -> str:
    """The checked-in form of a document: JSON, indent 2, keys sorted, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
