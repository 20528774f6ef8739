"""The gateway's reads on the real stack: lists (filters, paging, cursors, totals), jobs,
metrics, history, the namespace-wide list; all from Postgres, scoped to the caller."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from events.client import SynclifeClient
from events.gateway import Gateway
from events.service.app import Service
from events.service.settings import Settings
from statemachine import CommandType, Outcome
from tests.helpers.gateway import Api, api_for, create_sync, running_gateway, sync_path
from tests.helpers.live import Clock, Tenant, new_tenant

pytestmark = pytest.mark.stack


def bucket() -> str:
    return f"bkt_{secrets.token_hex(4)}"


async def test_list_newest_first_filtered_and_paged(api: Api) -> None:
    here = bucket()
    made = [await create_sync(api, here, connection_id=f"conn_{i % 2}") for i in range(5)]
    await create_sync(api, bucket())  # another bucket: never listed here
    await api.call("POST", sync_path(made[0], "/pause"))
    newest_first = [s["sync_config_id"] for s in reversed(made)]

    listed = await api.call("POST", f"/v1/buckets/{here}/syncs/list")  # no body, as the SDK
    assert listed.status == 200, listed.body
    assert [s["sync_config_id"] for s in listed.body["results"]] == newest_first
    assert listed.body["total"] == 5
    assert listed.body["pagination"]["total"] is None
    assert all(s["locked"] is False and "lock_token" not in s for s in listed.body["results"])

    counted = await api.call(
        "POST",
        f"/v1/buckets/{here}/syncs/list",
        {},
        params={"page_size": "2", "include_total": "true"},
    )
    assert counted.body["pagination"]["total"] == 5
    assert counted.body["pagination"]["total_pages"] == 3
    assert counted.body["total"] == 5
    assert len(counted.body["results"]) == 2

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(4):
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await api.call("POST", f"/v1/buckets/{here}/syncs/list", {}, params=params)
        assert page.status == 200, page.body
        seen += [s["sync_config_id"] for s in page.body["results"]]
        numbers = {k: page.body["pagination"][k] for k in ("page", "next_page", "previous_page")}
        if cursor is None:
            assert numbers == {"page": 1, "next_page": "2", "previous_page": None}
        else:  # a page after a cursor has no number: next_page would not follow from it
            assert numbers == {"page": None, "next_page": None, "previous_page": None}
        cursor = page.body["pagination"]["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first

    # Pages by number: each next_page follows on from the last, without a row twice.
    by_number: list[str] = []
    number: str | None = "1"
    while number is not None:
        params = {"limit": "2", "page": number}
        page = await api.call("POST", f"/v1/buckets/{here}/syncs/list", {}, params=params)
        assert page.body["pagination"]["page"] == int(number)
        assert page.body["pagination"]["previous_page"] == (
            str(int(number) - 1) if number != "1" else None
        )
        by_number += [s["sync_config_id"] for s in page.body["results"]]
        number = page.body["pagination"]["next_page"]
    assert by_number == newest_first

    second = await api.call(
        "POST", f"/v1/buckets/{here}/syncs/list", {}, params={"limit": "2", "page": "2"}
    )
    assert [s["sync_config_id"] for s in second.body["results"]] == newest_first[2:4]
    agreeing = await api.call(
        "POST",
        f"/v1/buckets/{here}/syncs/list",
        {},
        params={"limit": "2", "page": "2", "offset": "2"},
    )
    assert agreeing.body["results"] == second.body["results"]
    disagreeing = await api.call(
        "POST",
        f"/v1/buckets/{here}/syncs/list",
        {},
        params={"limit": "2", "page": "3", "offset": "0"},
    )
    assert disagreeing.status == 422, disagreeing.body
    assert disagreeing.body["error"]["details"]["errors"][0]["field"] == "query.page"
    between = await api.call(
        "POST", f"/v1/buckets/{here}/syncs/list", {}, params={"limit": "2", "offset": "1"}
    )
    assert [s["sync_config_id"] for s in between.body["results"]] == newest_first[1:3]
    assert between.body["pagination"]["page"] is None
    assert between.body["pagination"]["next_page"] is None
    assert between.body["pagination"]["next_cursor"] is not None
    offset = await api.call("POST", f"/v1/buckets/{here}/syncs/list", {}, params={"offset": "4"})
    assert [s["sync_config_id"] for s in offset.body["results"]] == newest_first[4:]

    by_connection = await api.call(
        "POST", f"/v1/buckets/{here}/syncs/list", {"connection_id": "conn_1"}
    )
    assert {s["sync_config_id"] for s in by_connection.body["results"]} == {
        made[1]["sync_config_id"],
        made[3]["sync_config_id"],
    }
    suspended = await api.call("POST", f"/v1/buckets/{here}/syncs/list", {"status": "SUSPENDED"})
    assert [s["sync_config_id"] for s in suspended.body["results"]] == [made[0]["sync_config_id"]]
    inactive = await api.call("POST", f"/v1/buckets/{here}/syncs/list", {"is_active": False})
    assert made[0]["sync_config_id"] in [s["sync_config_id"] for s in inactive.body["results"]]
    # The flags filter as the documents say (read from the status column): one sync of each
    # kind (made[1] paused and resumed: ACTIVE; made[0] SUSPENDED; the others PENDING).
    for action in ("/pause", "/resume"):
        assert (await api.call("POST", sync_path(made[1], action))).status == 200
    everyone = (await api.call("POST", "/v1/syncs/list", {"bucket_id": here})).body["results"]
    assert len(everyone) == 5
    assert {s["status"] for s in everyone} == {"ACTIVE", "SUSPENDED", "PENDING"}
    for flag in ("is_active", "paused"):
        for wanted in (True, False):
            got = await api.call("POST", "/v1/syncs/list", {"bucket_id": here, flag: wanted})
            assert got.status == 200, (flag, wanted, got.body)
            expected = [s["sync_config_id"] for s in everyone if s[flag] is wanted]
            assert [s["sync_config_id"] for s in got.body["results"]] == expected, (flag, wanted)
    paused = await api.call("POST", "/v1/syncs/list", {"bucket_id": here, "paused": True})
    assert [s["sync_config_id"] for s in paused.body["results"]] == [made[0]["sync_config_id"]]

    await api.call("DELETE", sync_path(made[4]))  # archived: left out of lists
    after = await api.call(
        "POST", f"/v1/buckets/{here}/syncs/list", {}, params={"include_total": "1"}
    )
    assert after.body["pagination"]["total"] == 4
    assert made[4]["sync_config_id"] not in [s["sync_config_id"] for s in after.body["results"]]

    for bad in ({"limit": "0"}, {"limit": "1001"}, {"cursor": "garbage!"}, {"offset": "-1"}):
        refused = await api.call("POST", f"/v1/buckets/{here}/syncs/list", {}, params=bad)
        assert refused.status == 422, (bad, refused.body)
    unknown = await api.call("POST", f"/v1/buckets/{here}/syncs/list", {"colour": "red"})
    assert unknown.status == 422 and "colour" in unknown.text


async def test_lists_are_the_callers_own(api: Api, gateway: Gateway, settings: Settings) -> None:
    here = bucket()
    await create_sync(api, here)
    other = await new_tenant(settings)
    async with api_for(gateway, other) as stranger:
        theirs = await stranger.call("POST", f"/v1/buckets/{here}/syncs/list")
        assert theirs.status == 200 and theirs.body["results"] == [] and theirs.body["total"] == 0
        wide = await stranger.call("POST", "/v1/syncs/list", {"bucket_id": here})
        assert wide.body["results"] == []


async def test_namespace_wide_list(api: Api) -> None:
    one, two = bucket(), bucket()
    a = await create_sync(api, one, provider="s3", source_path="my-bucket/prefix")
    b = await create_sync(api, two)
    await api.call("POST", sync_path(b, "/pause"))
    everything = await api.call("POST", "/v1/syncs/list", params={"include_total": "true"})
    ids = [s["sync_config_id"] for s in everything.body["results"]]
    assert ids[:2] == [b["sync_config_id"], a["sync_config_id"]]
    only = await api.call("POST", "/v1/syncs/list", {"bucket_id": one})
    assert [s["sync_config_id"] for s in only.body["results"]] == [a["sync_config_id"]]
    s3 = await api.call("POST", "/v1/syncs/list", {"provider": "s3"})
    assert [s["sync_config_id"] for s in s3.body["results"]] == [a["sync_config_id"]]
    paused = await api.call("POST", "/v1/syncs/list", {"paused": True})
    assert [s["sync_config_id"] for s in paused.body["results"]] == [b["sync_config_id"]]
    stale = await api.call("POST", "/v1/syncs/list", {"is_stale": True})
    assert stale.status == 200 and stale.body["results"] == []  # all were just created
    fresh = await api.call("POST", "/v1/syncs/list", {"is_stale": False})
    assert len(fresh.body["results"]) == 2


async def test_jobs_metrics_and_history(api: Api, client: SynclifeClient) -> None:
    sync = await create_sync(api, bucket())
    triggered = await api.call("POST", sync_path(sync, "/trigger"))
    assert triggered.status == 200, triggered.body
    job_id = triggered.body["sync_job_id"]
    assert str(job_id).startswith("job_"), triggered.body
    jobs = await api.call("POST", sync_path(sync, "/jobs"), params={"include_total": "true"})
    assert jobs.status == 200, jobs.body
    listed = [j["sync_job_id"] for j in jobs.body["results"]]
    assert job_id in listed
    one = await api.call("GET", sync_path(sync, f"/jobs/{job_id}"))
    assert one.status == 200, one.body
    assert one.body["sync_config_id"] == sync["sync_config_id"]
    assert one.body["internal_id"] == sync["internal_id"]
    # The trigger's job is labelled by it, whether the scheduler had queued it first (the
    # same job, re-labelled) or not; its timeline row says the same.
    assert one.body["trigger"] == "manual"
    assert jobs.body["total"] == jobs.body["pagination"]["total"] == len(listed) >= 1
    running = await api.call("POST", sync_path(sync, "/jobs"), {"status": "running"})
    assert running.status == 200
    missing = await api.call("GET", sync_path(sync, "/jobs/job_nothing"))
    assert missing.status == 404

    metrics = await api.call("GET", sync_path(sync, "/metrics"))
    assert metrics.status == 200, metrics.body
    m = metrics.body
    assert m["sync_config_id"] == sync["sync_config_id"]
    assert m["stale_after_seconds"] == 600  # 2 x the default 300 s
    assert m["is_stale"] is False and m["failure_rate"] == 0.0
    assert m["last_sync_at"] is None  # never synced: no age, not stale
    assert m["seconds_since_last_sync"] is None and m["intervals_since_last_sync"] is None
    assert m["last_job"] is not None and m["last_job"]["sync_config_id"] == sync["sync_config_id"]

    history = await api.call("GET", sync_path(sync, "/history"))
    assert history.status == 200, history.body
    versions = [h["version"] for h in history.body["results"]]
    assert versions == sorted(versions) and versions[0] == 1
    assert history.body["results"][0]["event_type"] == "sync.created"
    requested = [h for h in history.body["results"] if h["event_type"] == "sync.run_requested"]
    assert requested[-1]["trigger"] == "manual"
    wrong = await api.call("GET", f"/v1/buckets/bkt_else/syncs/{sync['sync_config_id']}/history")
    assert wrong.status == 404


async def queued_job(api: Api, sync: dict[str, Any]) -> dict[str, Any]:
    """The job the scheduler queued for a new sync (due at once), once it is there."""
    async with asyncio.timeout(30):
        while True:
            jobs = await api.call("POST", sync_path(sync, "/jobs"))
            assert jobs.status == 200, jobs.body
            if jobs.body["results"]:
                (job,) = jobs.body["results"]
                return dict(job)
            await asyncio.sleep(0.05)


async def test_a_manual_trigger_relabels_the_queued_scheduled_job(api: Api) -> None:
    """A new sync is due at once, so the scheduler queues a ``scheduled`` job; a trigger
    before a worker starts it names the same job, which then says ``manual``, as the event
    and the timeline do."""
    sync = await create_sync(api, bucket())
    job = await queued_job(api, sync)
    assert (job["trigger"], job["phase"]) == ("scheduled", "queued")
    triggered = await api.call("POST", sync_path(sync, "/trigger"))
    assert triggered.status == 200, triggered.body
    assert triggered.body["sync_job_id"] == job["sync_job_id"]
    one = await api.call("GET", sync_path(sync, f"/jobs/{job['sync_job_id']}"))
    assert one.status == 200, one.body
    assert (one.body["trigger"], one.body["phase"]) == ("manual", "queued")
    assert one.body["full_sync"] is True  # the first run lists every file, still
    jobs = await api.call("POST", sync_path(sync, "/jobs"), {"include_total": True})
    assert jobs.body["pagination"]["total"] == 1
    history = await api.call("GET", sync_path(sync, "/history"))
    requested = [h for h in history.body["results"] if h["event_type"] == "sync.run_requested"]
    assert [h["trigger"] for h in requested] == ["scheduled", "manual"]


async def test_status_filters_of_the_sdk_match_nothing_rather_than_refuse(api: Api) -> None:
    here = bucket()
    sync = await create_sync(api, here)
    for status in ("QUEUED", "INTERRUPTED", "DEACTIVATED"):
        for route in (f"/v1/buckets/{here}/syncs/list", "/v1/syncs/list"):
            listed = await api.call("POST", route, {"status": status, "include_total": True})
            assert listed.status == 200, listed.body
            assert listed.body["results"] == [] and listed.body["pagination"]["total"] == 0
    skipped = await api.call("POST", sync_path(sync, "/jobs"), {"status": "skipped"})
    assert skipped.status == 200 and skipped.body["results"] == [], skipped.body


async def test_include_total_in_the_body_as_well_as_the_query(api: Api) -> None:
    here = bucket()
    for _ in range(3):
        await create_sync(api, here)
    route = f"/v1/buckets/{here}/syncs/list"
    for body, params in (({"include_total": True}, None), ({}, {"include_total": "true"})):
        listed = await api.call("POST", route, body, params={"limit": "1", **(params or {})})
        assert listed.status == 200, listed.body
        assert listed.body["pagination"]["total"] == 3 == listed.body["total"]
        assert listed.body["pagination"]["total_pages"] == 3
    uncounted = await api.call("POST", route, {"include_total": False}, params={"limit": "1"})
    assert uncounted.body["pagination"]["total"] is None and uncounted.body["total"] == 1
    wide = await api.call("POST", "/v1/syncs/list", {"bucket_id": here, "include_total": True})
    assert wide.body["pagination"]["total"] == 3


async def test_a_sync_never_synced_is_not_stale_however_late(
    settings: Settings, service: Service, tenant: Tenant, worker: SynclifeClient, clock: Clock
) -> None:
    """Seen by a gateway whose clock is two hours ahead of the service's: an active sync whose
    first run has not finished has no age and is not stale (metrics and the is_stale filter
    agree); once a run completed, the same two hours make it stale. (The service's clock may
    have been moved forward by earlier tests of the session.)"""
    ahead = 7200 + clock.offset.total_seconds()
    async with running_gateway(settings, clock_offset_seconds=ahead) as late:
        async with api_for(late, tenant) as api:
            here = bucket()
            sync = await create_sync(api, here)
            triggered = await api.call("POST", sync_path(sync, "/trigger"))
            assert triggered.status == 200, triggered.body
            job = triggered.body["sync_job_id"]
            started = await worker.send(
                CommandType.RUN_START,
                sync["sync_config_id"],
                {"worker_id": "w1", "sync_job_id": job},
            )
            assert started is not None and started.outcome is Outcome.APPLIED, started
            assert started.run is not None
            got = await api.call("GET", sync_path(sync))
            assert got.body["is_active"] is True and got.body["last_sync_at"] is None, got.body

            async def stale_listed() -> tuple[bool, bool]:
                listed = []
                for wanted in (True, False):
                    answer = await api.call(
                        "POST", "/v1/syncs/list", {"bucket_id": here, "is_stale": wanted}
                    )
                    assert answer.status == 200, answer.body
                    listed.append(len(answer.body["results"]) == 1)
                return listed[0], listed[1]

            m = (await api.call("GET", sync_path(sync, "/metrics"))).body
            assert m["seconds_since_last_sync"] is None and m["intervals_since_last_sync"] is None
            assert m["is_stale"] is False and m["healthy"] is True and m["running_job"] is True
            assert await stale_listed() == (False, True)

            done = await worker.run_complete(
                sync["sync_config_id"], run_id=job, lock_token=started.run["lock_token"]
            )
            assert done.outcome is Outcome.APPLIED, done
            m = (await api.call("GET", sync_path(sync, "/metrics"))).body
            assert m["last_sync_at"] is not None and m["seconds_since_last_sync"] >= 7200
            assert m["intervals_since_last_sync"] >= 7200 / 300
            assert m["is_stale"] is True and m["healthy"] is False
            assert await stale_listed() == (True, False)
