"""The web console's edges over real HTTP on the real stack: a browser behind a proxy that
ends TLS, a long timeline, a revoked key on the live stream, ids that need encoding in a URL,
a bulk pause from a list it cannot express, forms without their CSRF token, and the live
stream of one tenant beside another's."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from pydantic import SecretStr
from yarl import URL

from events.gateway import Gateway
from events.gateway.console import pages
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key, revoke_key
from tests.helpers.console import Console, console_for, signed_in
from tests.helpers.gateway import KEYS, Api, api_for, create_sync, running_gateway, status_of
from tests.helpers.live import Tenant, new_tenant

pytestmark = pytest.mark.stack

SECRET = "console-edges-secret-0123456789abcdef"
BUCKET = "bkt_console_edges"


@pytest.fixture(scope="module")
async def gateway(settings: Settings, service: Service) -> AsyncIterator[Gateway]:
    async with running_gateway(settings, console_secret=SecretStr(SECRET)) as gw:
        yield gw


@pytest.fixture
async def console(gateway: Gateway, tenant: Tenant) -> AsyncIterator[Console]:
    async with signed_in(gateway, tenant.write_key, tenant.namespace) as c:
        yield c


def sync_path(sync: dict[str, object]) -> str:
    bucket, sync_id = str(sync["bucket_id"]), str(sync["sync_config_id"])
    return f"/console/b/{quote(bucket, safe='')}/s/{quote(sync_id, safe='')}"


async def sse(stream: aiohttp.ClientResponse) -> tuple[str, dict[str, object]] | None:
    """The stream's next event (its name and data), None at its end; comments skipped."""
    name, data = "message", ""
    while True:
        raw = await stream.content.readline()
        if not raw:
            return None
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            return name, json.loads(data)


async def test_a_form_from_https_through_a_proxy_that_ends_tls_is_accepted(
    gateway: Gateway, tenant: Tenant, api: Api
) -> None:
    # The gateway sees http; the browser, on https at the same host, says so in Origin.
    host = urlsplit(gateway.url).netloc
    async with console_for(gateway) as c:
        form = await c.get("/console/signin")
        page = await c.post(
            "/console/signin",
            {"csrf": form.csrf, "api_key": tenant.write_key, "namespace": tenant.namespace},
            headers={"Origin": f"https://{host}"},
        )
        assert page.status == 200 and page.url.endswith("/console/"), page.text[:2000]
        sync = await create_sync(api, BUCKET)
        shown = await c.get(sync_path(sync))
        paused = await c.post(
            sync_path(sync) + "/pause",
            {"csrf": shown.csrf, "reason": "via the proxy"},
            headers={"Origin": f"https://{host.upper()}"},
        )
        assert paused.flash is not None and paused.flash.startswith("pause: done"), paused.text
        for foreign in ("https://evil.example", f"https://{host}.evil.example", "null"):
            refused = await c.post(
                sync_path(sync) + "/resume", {"csrf": shown.csrf}, headers={"Origin": foreign}
            )
            assert refused.status == 403, foreign
        assert await status_of(api, sync) == "SUSPENDED"


def timeline_versions(text: str) -> list[int]:
    table = text.split('<table id="timeline">', 1)[1].split("</table>", 1)[0]
    return [int(v) for v in re.findall(r"<tr><td>(\d+)</td>", table)]


async def test_a_long_timeline_shows_the_newest_changes_with_a_link_to_older_ones(
    console: Console, api: Api
) -> None:
    sync = await create_sync(api, BUCKET)
    base = f"/v1/buckets/{BUCKET}/syncs/{sync['sync_config_id']}"
    for n in range(55):  # 1 create + 110 changes
        assert (await api.call("POST", base + "/pause", {"reason": f"p{n}"})).status == 200
        assert (await api.call("POST", base + "/resume", {})).status == 200
    newest = int(str((await api.call("GET", base)).body["version"]))
    assert newest > pages.TIMELINE_SHOWN
    page = await console.get(sync_path(sync))
    shown = timeline_versions(page.text)
    assert shown == list(range(newest, newest - pages.TIMELINE_SHOWN, -1))
    assert 'id="timeline_older"' in page.text and 'id="timeline_newest"' not in page.text
    href = page.text.split('id="timeline_older"')[0].rsplit('href="', 1)[1].split('"')[0]
    older = await console.get(href.replace("&amp;", "&").split("#")[0])
    rest = timeline_versions(older.text)
    assert rest == list(range(newest - pages.TIMELINE_SHOWN, 0, -1))  # down to the creation
    assert 'id="timeline_older"' not in older.text and 'id="timeline_newest"' in older.text


async def test_a_revoked_key_ends_its_live_stream(
    gateway: Gateway, settings: Settings, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "RECHECK_SECONDS", 0.2)
    conn = await connect(settings)
    try:
        made = await create_key(conn, tenant.org_id, ["syncs:read"])
        KEYS.add(str(made["key"]))
        async with signed_in(gateway, str(made["key"]), tenant.namespace) as c:
            async with c.session.get(c.base + "/console/events") as stream:
                assert await sse(stream) == ("ready", {})
                await revoke_key(conn, str(made["id"]))
                async with asyncio.timeout(30):  # a hang, not a timing: the check is bounded
                    seen = [event async for event in _events(stream)]
            assert seen and seen[-1] == ("signout", {}), seen
            after = await c.get("/console/")
            assert after.url.endswith("/console/signin")
    finally:
        await conn.close()


async def _events(stream: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, object]]]:
    while (event := await sse(stream)) is not None:
        yield event


async def test_ids_that_need_encoding_make_working_links_and_redirects(
    console: Console, api: Api
) -> None:
    bucket = "bkt&tag=1#part?x/y"
    sync = await create_sync(api, bucket)
    other = await create_sync(api, "bkt")  # what a cut-off query would name
    listed = await console.get("/console/", bucket=bucket)
    assert "1 matching" in listed.text
    assert f'href="{sync_path(sync)}"' in listed.text
    page = await console.get(sync_path(sync))
    assert page.status == 200 and str(sync["sync_config_id"]) in page.text
    paused = await console.post(sync_path(sync) + "/pause", {"csrf": page.csrf, "reason": "x"})
    assert paused.status == 200 and paused.flash is not None, paused.text[:2000]
    assert paused.flash.startswith("pause: done"), paused.flash
    assert URL(paused.url).raw_path == URL(console.base + sync_path(sync)).raw_path
    assert await status_of(api, sync) == "SUSPENDED"

    preview = await console.get("/console/bulk/preview", bucket=bucket)
    assert '<b id="matched">1</b>' in preview.text
    operation_id = preview.text.split('name="operation_id" value="')[1].split('"')[0]
    done = await console.post(
        "/console/bulk/pause",
        {"csrf": preview.csrf, "operation_id": operation_id, "bucket": bucket},
    )
    assert done.flash is not None and "matched 1" in done.flash, done.text[:2000]
    assert "1 matching" in done.text and str(sync["sync_config_id"]) in done.text
    assert str(other["sync_config_id"]) not in done.text
    assert await status_of(api, other) == "PENDING"


async def test_a_list_with_filters_a_selector_cannot_carry_is_not_bulk_paused(
    console: Console, api: Api
) -> None:
    bucket = "bkt_console_edges_bulk"
    made = [await create_sync(api, bucket) for _ in range(2)]
    plain = await console.get("/console/", bucket=bucket)
    assert 'id="bulk_preview">' in plain.text and 'id="bulk_note"' not in plain.text
    filtered = await console.get("/console/", bucket=bucket, paused="false")
    assert 'id="bulk_preview" disabled' in filtered.text
    assert 'id="bulk_note"' in filtered.text and "paused" in filtered.text
    preview = await console.get("/console/bulk/preview", bucket=bucket, stale="false")
    assert preview.status == 200
    assert "<code>bucket=" + bucket + "</code>" in preview.text  # the selector, exactly
    assert 'id="bulk_unsupported"' in preview.text
    assert 'id="bulk_pause" disabled' in preview.text
    clean = await console.get("/console/bulk/preview", bucket=bucket)
    assert 'id="bulk_unsupported"' not in clean.text and 'id="bulk_pause">' in clean.text
    operation_id = preview.text.split('name="operation_id" value="')[1].split('"')[0]
    form = {"csrf": preview.csrf, "operation_id": operation_id, "bucket": bucket}
    refused = await console.post("/console/bulk/pause", {**form, "paused": "false"})
    assert refused.flash is not None and refused.flash.startswith("bulk pause refused"), (
        refused.text[:2000]
    )
    no_token = await console.post("/console/bulk/pause", {**form, "csrf": ""})
    assert no_token.status == 403 and "CSRF" in no_token.text
    without = dict(form)
    del without["csrf"]
    assert (await console.post("/console/bulk/pause", without)).status == 403
    assert [await status_of(api, s) for s in made] == ["PENDING"] * 2


async def test_sign_out_without_the_csrf_token_is_refused(console: Console) -> None:
    refused = await console.post("/console/signout", {})
    assert refused.status == 403 and "CSRF" in refused.text
    forged = await console.post("/console/signout", {"csrf": "forged"})
    assert forged.status == 403
    still = await console.get("/console/")
    assert still.status == 200 and still.url.endswith("/console/")  # still signed in


async def test_the_live_stream_excludes_another_tenants_events(
    gateway: Gateway, settings: Settings, console: Console, api: Api
) -> None:
    other = await new_tenant(settings)
    mine = await create_sync(api, BUCKET)
    async with (
        api_for(gateway, other) as other_api,
        signed_in(gateway, other.write_key, other.namespace) as other_console,
    ):
        theirs = await create_sync(other_api, BUCKET)
        async with (
            console.session.get(console.base + "/console/events") as stream,
            other_console.session.get(other_console.base + "/console/events") as their_stream,
        ):
            assert await sse(stream) == ("ready", {})
            assert await sse(their_stream) == ("ready", {})
            path = f"/v1/buckets/{BUCKET}/syncs/{theirs['sync_config_id']}/pause"
            assert (await other_api.call("POST", path, {})).status == 200
            async with asyncio.timeout(20):  # theirs delivered (to their stream) first
                while (event := await sse(their_stream)) is not None:
                    if event[1].get("sync_config_id") == theirs["sync_config_id"]:
                        break
            path = f"/v1/buckets/{BUCKET}/syncs/{mine['sync_config_id']}/pause"
            assert (await api.call("POST", path, {})).status == 200
            seen: list[object] = []
            async with asyncio.timeout(20):
                while (event := await sse(stream)) is not None:
                    seen.append(event[1].get("sync_config_id"))
                    if event[1].get("sync_config_id") == mine["sync_config_id"]:
                        break
    assert seen and seen[-1] == mine["sync_config_id"]
    assert theirs["sync_config_id"] not in seen
