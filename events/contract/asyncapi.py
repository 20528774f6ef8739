"""The wire contract as documents: the AsyncAPI 3.0 document, and the standalone JSON Schemas
cut out of it.

Both are generated from the code that reads and writes the messages: the command data models
(``statemachine.commands``), ``LifecycleEvent`` and ``CommandResult`` (``events.messages``) and
the CloudEvents envelope (``events.envelope``). This module assembles the document (servers,
channels, operations); its parts are built by ``schemas`` (payloads), ``headers`` and
``messages``. Payload schemas live once, in ``components.schemas``, and every ``$ref`` points
inside the document. ``json_schemas`` cuts one self-contained JSON Schema (Draft 2020-12) per
command type, event type and the result out of the same document, so the two never disagree.

Regenerate the checked-in copies with::

    synclife asyncapi --output docs/asyncapi.json
    synclife schemas --output-dir docs/schemas
"""

from __future__ import annotations

import json
from typing import Any, Final

from events.contract.headers import header_schemas
from events.contract.messages import (
    DEAD_LETTER_MESSAGE,
    KAFKA_BINDING_VERSION,
    RESULT_MESSAGE,
    bulk_event_messages,
    command_messages,
    dead_letter_message,
    event_messages,
    result_message,
)
from events.contract.schemas import component_schemas, standalone
from events.envelope import CONTENT_TYPE
from events.settings import KafkaSettings
from statemachine.commands import CommandType

__all__ = [
    "ASYNCAPI_VERSION",
    "CONTRACT_VERSION",
    "asyncapi_document",
    "json_schemas",
    "to_json",
]

ASYNCAPI_VERSION: Final = "3.0.0"
#: The version of the wire contract (``docs/contract.md``) the document describes.
CONTRACT_VERSION: Final = "1.0.0"


def _default_settings() -> KafkaSettings:
    """The contract's defaults, whatever the environment says (the docs must not vary)."""
    return KafkaSettings.model_construct()


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


def asyncapi_document(settings: KafkaSettings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the wire contract (topic names from ``settings``).

    Without settings, the contract's default topic names are used, whatever the environment.
    """
    s = settings if settings is not None else _default_settings()
    by_model, schemas = component_schemas()
    command_types = [t.value for t in CommandType]
    schemas.update(header_schemas(command_types))
    commands = command_messages(by_model)
    events = {**event_messages(by_model, schemas), **bulk_event_messages(by_model)}
    messages = {
        **commands,
        **events,
        RESULT_MESSAGE: result_message(by_model),
        DEAD_LETTER_MESSAGE: dead_letter_message(),
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


def json_schemas() -> dict[str, dict[str, Any]]:
    """One standalone JSON Schema (Draft 2020-12) per command type, event type and the result.

    Keys are file names: ``command.sync.pause.json``, ``event.sync.status_changed.json``,
    ``command_result.json``. They are cut out of ``asyncapi_document()``, so they agree with it.
    """
    components = asyncapi_document()["components"]
    schemas = components["schemas"]
    return {
        f"{mid}.json": standalone(message["payload"], schemas)
        for mid, message in components["messages"].items()
        if mid != DEAD_LETTER_MESSAGE
    }


def to_json(document: Any) -> str:
    """The checked-in form of a document: JSON, indent 2, keys sorted, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
