"""The gateway's pure rules: the staleness and health figures of a sync, the keyset cursor,
the If-Match header, the default page size, how a refused body names its fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from pydantic import ValidationError

from events.contract.http import (
    DEFAULT_LIMIT,
    ListSyncJobsRequest,
    SyncCreateRequest,
    SyncUpdateRequest,
)
from events.contract.openapi import openapi_document
from events.gateway import metrics
from events.gateway.common import expected_version, weak_if_match
from events.gateway.errors import ApiError, invalid_body
from events.gateway.reads import _decode_cursor, encode_cursor, page_of

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def sync(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sync_config_id": "sync_1",
        "status": "ACTIVE",
        "is_active": True,
        "paused": False,
        "sync_mode": "continuous",
        "polling_interval_seconds": 300,
        "created_at": (NOW - timedelta(hours=1)).isoformat(),
        "last_sync_at": None,
        "consecutive_failures": 0,
    }
    return {**base, **fields}


def test_stale_after_two_intervals_or_two_minutes() -> None:
    assert metrics.stale_after(300) == 600
    assert metrics.stale_after(30) == 120


def test_a_continuous_active_sync_without_progress_is_stale_and_unhealthy() -> None:
    recent = metrics.of(sync(last_sync_at=(NOW - timedelta(seconds=599)).isoformat()), NOW, None)
    assert recent.is_stale is False and recent.healthy is True
    assert recent.seconds_since_last_sync == 599
    old = metrics.of(sync(last_sync_at=(NOW - timedelta(seconds=601)).isoformat()), NOW, None)
    assert old.is_stale is True and old.healthy is False
    assert old.intervals_since_last_sync == pytest.approx(601 / 300, abs=0.001)


def test_a_sync_that_never_synced_is_not_stale() -> None:
    """The vendor: seconds_since_last_sync is None if never synced; a first run has no last
    sync to be stale against (created an hour ago, well past two intervals)."""
    never = metrics.of(sync(), NOW, None)
    assert never.seconds_since_last_sync is None and never.intervals_since_last_sync is None
    assert never.is_stale is False and never.healthy is True
    assert never.stale_after_seconds == 600


def test_only_a_continuous_active_sync_can_be_stale() -> None:
    assert metrics.of(sync(sync_mode="initial_only"), NOW, None).is_stale is False
    paused = metrics.of(sync(is_active=False, paused=True, status="SUSPENDED"), NOW, None)
    assert paused.is_stale is False and paused.healthy is False


def test_failure_rate_and_health() -> None:
    m = metrics.of(
        sync(
            total_files_discovered=10,
            total_files_failed=3,
            consecutive_failures=1,
            last_sync_at=NOW.isoformat(),
        ),
        NOW,
        None,
    )
    assert m.failure_rate == pytest.approx(0.3)
    assert m.dlq_total == 3 and m.healthy is False
    assert metrics.of(sync(last_sync_at=NOW.isoformat()), NOW, None).failure_rate == 0.0


def test_a_cursor_round_trips_and_garbage_is_refused() -> None:
    moment = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert _decode_cursor("cursor", encode_cursor(moment, "sync_9")) == (moment, "sync_9")
    hostile = [encode_cursor(moment, i) for i in ("a\x00b", "\ud800", "\x1b", "s" * 257)]
    for bad in ("", "!!", encode_cursor(moment, "x")[:-3], "W10", *hostile):
        with pytest.raises(ApiError) as caught:
            _decode_cursor("cursor", bad)
        assert caught.value.status == 422


@pytest.mark.parametrize(
    ("header", "version"), [('"5"', 5), ('W/"7"', 7), ("*", None), (None, None)]
)
def test_if_match_gives_the_expected_version(header: str | None, version: int | None) -> None:
    headers = {"If-Match": header} if header is not None else {}
    request = make_mocked_request("PATCH", "/", headers=headers)
    assert expected_version(request) == version
    # If-Match compares strongly (RFC 9110): a weak tag parses but never matches.
    assert weak_if_match(request) is (header is not None and header.startswith("W/"))


@pytest.mark.parametrize("header", ["5", '"five"', '"-1"', '"1', '""', '"1", "2"'])
def test_a_malformed_if_match_is_400(header: str) -> None:
    with pytest.raises(ApiError) as caught:
        expected_version(make_mocked_request("PATCH", "/", headers={"If-Match": header}))
    assert caught.value.status == 400


def test_one_default_page_size_in_the_code_and_the_document() -> None:
    assert page_of(make_mocked_request("POST", "/v1/syncs/list")).limit == DEFAULT_LIMIT == 10
    params = openapi_document()["paths"]["/v1/syncs/list"]["post"]["parameters"]
    (limit,) = [p for p in params if p["name"] == "limit"]
    assert f"default {DEFAULT_LIMIT})" in limit["description"]
    counted = page_of(make_mocked_request("POST", "/v1/syncs/list"), include_total=True)
    assert counted.include_total is True


def _refused(model: type, data: dict[str, object], where: str = "body") -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)  # type: ignore[attr-defined]
    return list(invalid_body(caught.value, where).details["errors"])


def test_a_refused_body_names_its_fields_as_the_processor_does() -> None:
    """A body's field bare (``status``, as the processor names ``source_path``), a query's
    ``query.<name>``; enum values as the wire carries them, not Python's reprs."""
    (status,) = _refused(SyncUpdateRequest, {"status": "FAILED"})
    assert status["field"] == "status"
    assert status["problem"] == "Input should be 'SUSPENDED' or 'ACTIVE'"
    assert status["limit"] == {"expected": "'SUSPENDED' or 'ACTIVE'"}
    fields = [e["field"] for e in _refused(SyncCreateRequest, {"polling_interval_seconds": 5})]
    assert set(fields) == {"connection_id", "source_path", "polling_interval_seconds"}
    (job,) = _refused(ListSyncJobsRequest, {"status": "x"}, "query")
    assert job["field"] == "query.status" and "<" not in job["problem"]
