"""The live streams' hub (events/gateway/live.py) without Kafka: what each kind of subscriber
gets of a lifecycle record, and that a record it cannot show harms no one else."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from events.errors import TransientError
from events.gateway import live
from events.gateway.live import Hub, full_event
from events.service.settings import Settings
from tests.helpers.syncs import make_sync

TENANT = ("org_a", "ns_a")
OTHER = ("org_b", "ns_b")


def record(event_type: str = "sync.status_changed", **data: Any) -> tuple[Any, bytes]:
    """A lifecycle record's headers and value, as the relay publishes them."""
    sync = make_sync(
        internal_id=TENANT[0], namespace_id=TENANT[1], lock_token=7, sync_run_counter=7
    )
    body = {
        "sync_config_id": sync.sync_config_id,
        "internal_id": TENANT[0],
        "namespace_id": TENANT[1],
        "version": sync.version,
        "lock_token": 7,
        "sync": json.loads(sync.model_dump_json()),
        **data,
    }
    headers = [("ce_id", f"{sync.sync_config_id}:v{sync.version}".encode())]
    headers.append(("ce_type", event_type.encode()))
    return headers, json.dumps(body).encode()


def hub_with(**subscribers: bool) -> tuple[Hub, dict[str, asyncio.Queue[dict[str, Any]]]]:
    """A hub with queues registered by hand (no consumer): name -> full or not."""
    hub = Hub(Settings())
    queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
    for name, full in subscribers.items():
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(8)
        tenant = OTHER if name.startswith("other") else TENANT
        hub._subscribers.setdefault(tenant, {})[queue] = full
        queues[name] = queue
    return hub, queues


def drained(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_each_subscriber_gets_its_kind_and_no_fencing_token() -> None:
    hub, queues = hub_with(api=True, console=False, other_api=True)
    hub._deliver(*record())
    (whole,) = drained(queues["api"])
    assert whole["type"] == "event" and whole["event"] == "sync.status_changed"
    assert whole["id"].endswith(":v1")
    assert "lock_token" not in json.dumps(whole)
    assert whole["data"]["sync"]["sync_config_id"] == whole["data"]["sync_config_id"]
    (shown,) = drained(queues["console"])
    assert shown["type"] == "sync.status_changed" and "sync" not in shown
    assert drained(queues["other_api"]) == []  # another tenant's subscriber


@pytest.mark.parametrize(
    ("headers", "value"),
    [
        # a sync that does not validate (a newer service's status, say)
        (record()[0], json.dumps({**json.loads(record()[1]), "sync": {"status": 5}}).encode()),
        # holds of the wrong shape, for the console's summary
        (record()[0], json.dumps({**json.loads(record()[1]), "sync": {"pause_holds": 5}}).encode()),
        # an id that would end the stream's line
        ([("ce_id", b"x\nevent: forged"), ("ce_type", b"sync.updated")], record()[1]),
        # tenant ids that are not text
        (record()[0], json.dumps({**json.loads(record()[1]), "internal_id": ["org_a"]}).encode()),
    ],
)
def test_a_record_that_cannot_be_shown_is_skipped_and_the_next_one_goes_through(
    headers: Any, value: bytes
) -> None:
    hub, queues = hub_with(api=True, console=False)
    hub._deliver(headers, value)  # raises nothing: the consumer would go on
    assert drained(queues["api"]) == [] and drained(queues["console"]) == []
    hub._deliver(*record())
    assert len(drained(queues["api"])) == 1 and len(drained(queues["console"])) == 1


def test_a_bulk_operations_event_is_passed_whole_without_a_sync() -> None:
    data = {
        "operation_id": "bulk_01J0000000000000000000000",
        "internal_id": TENANT[0],
        "namespace_id": TENANT[1],
        "version": 2,
        "counts": {"matched": 3, "applied": 3, "noop": 0, "rejected": 0},
    }
    event = full_event("bulk_01J0000000000000000000000:v2", "sync.bulk_completed", data)
    assert event["data"] == data


async def test_subscribing_past_the_limit_or_while_stopping_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(live, "MAX_STREAMS", 2)
    hub, _ = hub_with(one=True, two=False)
    with pytest.raises(TransientError, match="2 live streams"):
        await hub.subscribe(TENANT, full=True)
    hub, _ = hub_with()
    hub.wake_all()
    with pytest.raises(TransientError, match="stopping"):
        await hub.subscribe(TENANT)
