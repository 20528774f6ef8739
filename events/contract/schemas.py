"""Payload schemas: the message models' JSON Schemas as AsyncAPI components, and cutting one
payload out of them as a standalone JSON Schema.

The command models leave some rules to the configuration and to ``parse_data``; they are
stated here, on the command schemas, where a producer looks. Every ``$ref`` points at
``#/components/schemas/...``; ``standalone`` rewrites them to ``#/$defs/...``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from events.messages import BulkEvent, CommandResult, LifecycleEvent
from statemachine.commands import CommandType, CreateData, UpdateData, data_model
from statemachine.model import SyncSettings, source_path_rules

__all__ = [
    "JSON_SCHEMA_DIALECT",
    "command_models",
    "component_schemas",
    "non_null",
    "ref",
    "ref_name",
    "standalone",
]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

_REF_PREFIX: Final = "#/components/schemas/"
_REF_TEMPLATE: Final = _REF_PREFIX + "{model}"
_NULL: Final[dict[str, Any]] = {"type": "null"}


def ref_name(ref: str) -> str:
    """The component name a ``#/components/schemas/...`` reference points at."""
    if not ref.startswith(_REF_PREFIX):
        raise ValueError(f"not a component schema reference: {ref}")
    return ref[len(_REF_PREFIX) :]


def ref(name: str) -> dict[str, str]:
    return {"$ref": _REF_PREFIX + name}


def _nullable(schema: dict[str, Any]) -> bool:
    return _NULL in schema.get("anyOf", ())


def non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its ``null`` alternative (``X | None`` -> ``X``)."""
    if not _nullable(schema):
        return dict(schema)
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    options = [s for s in schema["anyOf"] if s != _NULL]
    if len(options) == 1:
        return {**rest, **options[0]}
    return {**rest, "anyOf": options}


def command_models() -> list[type[BaseModel]]:
    """Each command data model once, in the order of ``CommandType``."""
    models = (data_model(t) for t in CommandType)
    return list(dict.fromkeys(m for m in models if m is not None))


def component_schemas() -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    """The payload models' JSON Schemas: ``$ref`` of each model, and every definition."""
    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation") for model in command_models()
    ]
    outputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (LifecycleEvent, "serialization"),
        (CommandResult, "serialization"),
        (BulkEvent, "serialization"),
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


def _add_command_rules(
    schemas: dict[str, Any], by_model: dict[type[BaseModel], dict[str, Any]]
) -> None:
    """State the rules ``parse_data`` and the configuration apply beyond the data models.

    The command models leave the configuration limits to the configuration built from them
    (so errors name the stored model's field); the documents state them where a producer looks:
    on the command. Every command may repeat its ``sync_config_id``; an update must change
    something; a create's ``source_path`` has its provider's format.
    """
    for model in command_models():
        schema = schemas[ref_name(by_model[model]["$ref"])]
        schema.setdefault("properties", {})["sync_config_id"] = {
            "type": "string",
            "description": "Optional: when present it must equal the message key and "
            "`ce_subject`. Tenancy fields (`internal_id`, `namespace_id`) are never accepted.",
        }
    limits = SyncSettings.model_json_schema(ref_template=_REF_TEMPLATE)["properties"]
    for model in (CreateData, UpdateData):
        schema = schemas[ref_name(by_model[model]["$ref"])]
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
    create = schemas[ref_name(by_model[CreateData]["$ref"])]
    create["allOf"] = [
        {
            "if": {"properties": {"provider": {"const": provider.value}}, "required": ["provider"]},
            "then": {"properties": {"source_path": {"pattern": pattern, "description": shape}}},
        }
        for provider, (pattern, shape) in source_path_rules().items()
    ]
    update = schemas[ref_name(by_model[UpdateData]["$ref"])]
    update["anyOf"] = [
        {"required": [name]}
        for name in update["properties"]
        if name not in ("updated_by_user_id", "sync_config_id")
    ]


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
                "#/$defs/" + ref_name(value)
                if key == "$ref" and isinstance(value, str)
                else _to_defs(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_to_defs(item) for item in node]
    return node


def standalone(payload: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """A self-contained JSON Schema of ``payload``: the definitions it needs in ``$defs``."""
    root = copy.deepcopy(payload)
    if set(root) == {"$ref"}:
        root = copy.deepcopy(schemas[ref_name(root["$ref"])])
    defs: dict[str, Any] = {}
    pending = [ref_name(r) for r in _walk_refs(root)]
    while pending:
        name = pending.pop()
        if name not in defs:
            defs[name] = schemas[name]
            pending.extend(ref_name(r) for r in _walk_refs(defs[name]))
    out: dict[str, Any] = {"$schema": JSON_SCHEMA_DIALECT, **_to_defs(root)}
    if defs:
        out["$defs"] = _to_defs(dict(sorted(defs.items())))
    return out
