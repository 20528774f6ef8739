"""The HTTP API's OpenAPI document: current on disk, valid OpenAPI 3.1, every route described.

(a) docs/openapi.json is what the code generates now (and what ``synclife openapi`` writes);
(b) a real validator accepts it; (c) each route has its body, answers and errors; (d) the
bodies the models build validate against the document's own schemas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from events.cli import main
from events.contract.asyncapi import to_json
from events.contract.http import ErrorBody, SyncConfigurationModel
from events.contract.openapi import openapi_document
from tests.helpers.syncs import make_sync

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "docs" / "openapi.json"
REGENERATE = ".venv/bin/synclife openapi --output docs/openapi.json"

BASE = "/v1/buckets/{bucket_id}/syncs"
ONE = BASE + "/{sync_config_id}"
#: Every route of the vendor's API the gateway serves, and its operation id.
VENDOR_ROUTES = {
    ("post", BASE): "create_sync_configuration",
    ("get", ONE): "get_sync_configuration",
    ("post", BASE + "/list"): "list_sync_configurations",
    ("patch", ONE): "update_sync_configuration",
    ("delete", ONE): "delete_sync_configuration",
    ("post", ONE + "/pause"): "pause_sync_configuration",
    ("post", ONE + "/resume"): "resume_sync_configuration",
    ("post", ONE + "/trigger"): "trigger_sync_configuration",
    ("post", ONE + "/unlock"): "force_unlock_sync_configuration",
    ("post", ONE + "/jobs"): "list_sync_jobs",
    ("get", ONE + "/jobs/{sync_job_id}"): "get_sync_job",
    ("get", ONE + "/metrics"): "get_sync_metrics",
}
OWN_ROUTES = {
    ("post", "/v1/syncs/list"): "list_namespace_syncs",
    ("get", ONE + "/history"): "get_sync_history",
    ("get", "/v1/operations/{operation_id}"): "get_operation",
    ("post", "/v1/sync-bulk/pause"): "bulk_pause",
    ("post", "/v1/sync-bulk/resume"): "bulk_resume",
    ("post", "/v1/sync-bulk/{operation_id}/undo"): "bulk_undo",
    ("get", "/v1/sync-bulk/{operation_id}"): "get_bulk_operation",
    ("post", "/v1/sync-bulk/preview"): "bulk_preview",
}
#: Bulk writes: an operation has no version, so no If-Match.
BULK_WRITES = {
    ("post", "/v1/sync-bulk/pause"),
    ("post", "/v1/sync-bulk/resume"),
    ("post", "/v1/sync-bulk/{operation_id}/undo"),
}
WRITES = {
    key
    for key, op in VENDOR_ROUTES.items()
    if key[0] in ("patch", "delete") or op.split("_")[0] in ("create", "pause", "resume")
} | {("post", ONE + "/trigger"), ("post", ONE + "/unlock")}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
    }


# --- (a) current -------------------------------------------------------------------------


def test_the_checked_in_document_is_current(document: dict[str, Any]) -> None:
    assert CHECKED_IN.exists(), f"docs/openapi.json is missing: run `{REGENERATE}`"
    assert CHECKED_IN.read_text(encoding="utf-8") == to_json(document), (
        f"docs/openapi.json is out of date with the code: run `{REGENERATE}`"
    )


def test_the_command_writes_the_document(tmp_path: Path, document: dict[str, Any]) -> None:
    out = tmp_path / "openapi.json"
    run = CliRunner().invoke(main, ["openapi", "--output", str(out)])
    assert run.exit_code == 0, run.output
    assert json.loads(out.read_text(encoding="utf-8")) == document
    printed = CliRunner().invoke(main, ["openapi"])
    assert printed.exit_code == 0 and json.loads(printed.output) == document


def test_the_document_does_not_depend_on_the_environment(
    monkeypatch: pytest.MonkeyPatch, document: dict[str, Any]
) -> None:
    monkeypatch.setenv("SYNCLIFE_GATEWAY_PORT", "9999")
    assert openapi_document() == document


# --- (b) valid ---------------------------------------------------------------------------


def test_a_real_validator_accepts_it(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_the_validator_is_not_a_rubber_stamp(document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    broken["paths"][ONE]["get"]["parameters"][0]["in"] = "body"  # no such place in 3.1
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


# --- (c) every route ---------------------------------------------------------------------


def test_every_route_is_there_with_its_operation_id(document: dict[str, Any]) -> None:
    ops = operations(document)
    for key, operation_id in {**VENDOR_ROUTES, **OWN_ROUTES}.items():
        assert key in ops, key
        assert ops[key]["operationId"] == operation_id
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_every_api_route_needs_the_key_and_the_namespace(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["BearerAuth"] == {**schemes["BearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["NamespaceHeader"]["in"] == "header"
    assert schemes["NamespaceHeader"]["name"] == "X-Namespace"
    for (_, path), op in operations(document).items():
        expected: list[dict[str, list[str]]] = (
            [{"BearerAuth": [], "NamespaceHeader": []}] if path.startswith("/v1") else []
        )
        assert op["security"] == expected, path


def test_every_error_answer_is_the_error_body(document: dict[str, Any]) -> None:
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for key, op in operations(document).items():
        if not key[1].startswith("/v1"):
            continue
        errors = {int(s): r for s, r in op["responses"].items() if int(s) >= 400}
        assert {400, 401, 403, 500} <= errors.keys(), key
        for status, answer in errors.items():
            assert answer["content"]["application/json"]["schema"] == error_ref, (key, status)
        if "{sync_config_id}" in key[1] or "{operation_id}" in key[1]:
            assert 404 in errors, key
        if "requestBody" in op:
            assert {413, 422} <= errors.keys(), key


def test_writes_take_the_write_headers_and_may_answer_202(document: dict[str, Any]) -> None:
    ops = operations(document)
    assert {key for key, op in ops.items() if "202" in op["responses"]} == WRITES | BULK_WRITES
    for key in WRITES | BULK_WRITES:
        op = ops[key]
        headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
        expected = {"Idempotency-Key", "Prefer"} | ({"If-Match"} if key in WRITES else set())
        assert headers == expected, key
        accepted = op["responses"]["202"]
        assert accepted["headers"]["Location"]["required"] is True
        assert {"422", "500", "504"} <= op["responses"].keys(), key
        if key in BULK_WRITES:
            assert {"404", "409"} <= op["responses"].keys(), key
            assert "412" not in op["responses"], key
        elif key != ("post", BASE):
            assert {"404", "409", "412"} <= op["responses"].keys(), key


def test_get_answers_an_etag(document: dict[str, Any]) -> None:
    ok = document["paths"][ONE]["get"]["responses"]["200"]
    assert "ETag" in ok["headers"]
    assert ok["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SyncConfigurationModel"
    }


def query(document: dict[str, Any], method: str, path: str) -> dict[str, dict[str, Any]]:
    op = document["paths"][path][method]
    return {p["name"]: p["schema"] for p in op["parameters"] if p["in"] == "query"}


def test_the_lists_take_the_paging_query(document: dict[str, Any]) -> None:
    for method, path in (
        ("post", BASE + "/list"),
        ("post", ONE + "/jobs"),
        ("post", "/v1/syncs/list"),
    ):
        params = query(document, method, path)
        assert set(params) == {
            "limit",
            "page_size",
            "offset",
            "page",
            "cursor",
            "next_cursor",
            "after",
            "include_total",
        }
        assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (1, 1000)
        assert (params["offset"]["minimum"], params["offset"]["maximum"]) == (0, 10_000)
        assert params["page"]["minimum"] == 1 and params["include_total"]["type"] == "boolean"
        assert document["paths"][path][method]["requestBody"]["required"] is False
    assert query(document, "post", ONE + "/trigger") == {"full_sync": {"type": "boolean"}}


def test_request_bodies_refuse_unknown_keys(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in ("SyncCreateRequest", "SyncUpdateRequest", "ListSyncConfigurationsRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["SyncCreateRequest"]["required"] == ["connection_id", "source_path"]
    interval = schemas["SyncCreateRequest"]["properties"]["polling_interval_seconds"]
    assert {"type": "integer", "minimum": 30, "maximum": 900} in interval["anyOf"]


# --- (d) the models' bodies validate against the document --------------------------------


def validator_for(document: dict[str, Any], name: str) -> Draft202012Validator:
    uri = "urn:synclife:openapi"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return Draft202012Validator({"$ref": f"{uri}#/components/schemas/{name}"}, registry=registry)


def test_a_sync_and_an_error_validate_against_the_document(document: dict[str, Any]) -> None:
    sync = make_sync(status="SUSPENDED", lock_token=5, locked_by_worker_id="w")
    body = SyncConfigurationModel.from_sync(sync).model_dump(mode="json")
    check = validator_for(document, "SyncConfigurationModel")
    check.validate(body)
    assert not check.is_valid({k: v for k, v in body.items() if k != "locked"})
    error = ErrorBody.model_validate(
        {"status": 422, "error": {"message": "bad", "type": "validation_error"}}
    ).model_dump(mode="json")
    validator_for(document, "ErrorBody").validate(error)
    assert not validator_for(document, "ErrorBody").is_valid({**error, "success": True})
