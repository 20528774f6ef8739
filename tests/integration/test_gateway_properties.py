"""Property-based tests of the HTTP API (schemathesis) against the real gateway and stack.

Requests are generated from the OpenAPI document the code generates (``openapi_document``):
valid and invalid bodies, queries and headers (text with U+0000, control characters and
characters from anywhere in Unicode included), on random ids and on syncs that exist. Whatever
is sent, the gateway never answers 5xx, and every answer's status is one the document gives the
route, with the content type and the schema it gives that status. Bounded for CI: a fixed
seed, ``EXAMPLES`` cases per operation, a short result wait.

schemathesis and its HTTP client are synchronous: they run in a thread, so that the service and
the gateway keep running on the test's event loop meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from events.contract.openapi import openapi_document
from events.service.app import Service
from events.service.settings import Settings
from tests.helpers.gateway import api_for, create_body, running_gateway
from tests.helpers.live import Tenant

pytestmark = [
    pytest.mark.stack,
    # schemathesis's strategies draw from `random` (its own choice; the seed still fixes them).
    pytest.mark.filterwarnings(
        "ignore:Do not use the `random` module:hypothesis.errors.HypothesisWarning"
    ),
]

EXAMPLES: Final = 25
SEED: Final = 20261117
BUCKET: Final = "bkt_properties"
#: A write whose result has not come within this is answered 202 or 504 (both documented).
RESULT_WAIT_SECONDS: Final = 2.0
REQUEST_TIMEOUT_SECONDS: Final = 15.0
#: Routes whose answer is an endless stream, not a body to check (test_gateway_stream.py).
STREAMS: Final = frozenset({"/v1/events"})


#: What every answer must be: not a 5xx, a status the route documents, with its content type
#: and its schema.
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass
class Failure:
    operation: str
    problem: str


def _describe(exc: BaseException) -> str:
    """The exception's message and those of the failures it groups (schemathesis and
    Hypothesis nest the check failures that say what went wrong)."""
    parts = [str(exc)]
    for inner in getattr(exc, "exceptions", ()):
        parts.append(_describe(inner))
    return "\n".join(parts)[:4000]


def _strategy(operation: Any, known: list[dict[str, str]]) -> Any:
    """Valid and invalid requests, on generated ids and on the syncs that exist."""
    options = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    names = {p.name for p in operation.path_parameters}
    if {"bucket_id", "sync_config_id"} <= names:
        options += [
            operation.as_strategy(
                GenerationMode.POSITIVE,
                path_parameters={k: v for k, v in ids.items() if k in names},
            )
            for ids in known
        ]
    return st.one_of(options)


def exercise(
    document: dict[str, Any], base_url: str, headers: dict[str, str], known: list[dict[str, str]]
) -> tuple[list[Failure], int]:
    """Run every operation's cases; the failures found, and how many requests were sent."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[Failure] = []
    sent = 0
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # the document is valid
        label = operation.label
        if operation.path in STREAMS:
            continue

        @seed(SEED)
        @settings(
            max_examples=EXAMPLES,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is enough
            suppress_health_check=list(HealthCheck),
        )
        @given(case=_strategy(operation, known))
        def run(case: Case[Any]) -> None:
            nonlocal sent
            sent += 1
            response = case.call(
                base_url=base_url,
                session=session,
                headers=headers,
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        # schemathesis raises its checks' failures as a BaseExceptionGroup; any error of one
        # operation is reported with all the others'.
        except (Exception, BaseExceptionGroup) as exc:
            failures.append(Failure(label, _describe(exc)))
    session.close()
    return failures, sent


async def test_generated_requests_get_no_5xx_and_conforming_answers(
    settings: Settings, service: Service, tenant: Tenant
) -> None:
    async with running_gateway(settings, gateway_result_wait_seconds=RESULT_WAIT_SECONDS) as gw:
        known: list[dict[str, str]] = []
        async with api_for(gw, tenant) as api:
            for more, then in (({}, None), ({"description": "paused"}, "/pause"), ({}, "/resume")):
                made = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", create_body(**more))
                assert made.status == 200, made.body
                ids = {"bucket_id": BUCKET, "sync_config_id": made.body["sync_config_id"]}
                if then is not None:
                    done = await api.call(
                        "POST", f"/v1/buckets/{BUCKET}/syncs/{ids['sync_config_id']}{then}"
                    )
                    assert done.status == 200, done.body
                known.append(ids)
        headers = {"Authorization": f"Bearer {tenant.write_key}", "X-Namespace": tenant.namespace}
        failures, sent = await asyncio.to_thread(
            exercise, openapi_document(), gw.url, headers, known
        )
    operations = len(list(schemathesis.openapi.from_dict(openapi_document()).get_all_operations()))
    operations -= len(STREAMS)
    assert sent >= operations * 5, f"only {sent} requests for {operations} operations"
    assert not failures, "\n\n".join(f"{f.operation}:\n{f.problem}" for f in failures)
