"""The web console over real HTTP on the real stack (no browser): sign-in and its cookie,
CSRF, the security headers, escaping, scopes, the actions as commands, filters and paging,
the live stream, a session served by another gateway; no key in a page, a URL or a log."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import aiohttp
import pytest
from pydantic import SecretStr

from events.gateway import Gateway
from events.gateway.console import CSP
from events.service.app import Service
from events.service.settings import Settings
from tests.helpers.console import Console, console_for, signed_in
from tests.helpers.gateway import Api, create_sync, key_with, running_gateway, status_of
from tests.helpers.live import Tenant

pytestmark = pytest.mark.stack

SECRET = "console-test-secret-0123456789abcdef"
BUCKET = "bkt_console"


@pytest.fixture(scope="module")
async def gateway(settings: Settings, service: Service) -> AsyncIterator[Gateway]:
    async with running_gateway(settings, console_secret=SecretStr(SECRET)) as gw:
        yield gw


@pytest.fixture
async def console(gateway: Gateway, tenant: Tenant) -> AsyncIterator[Console]:
    async with signed_in(gateway, tenant.write_key, tenant.namespace) as c:
        yield c


async def test_sign_in_keeps_the_key_in_an_encrypted_httponly_strict_cookie_only(
    gateway: Gateway, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with console_for(gateway) as c:
        first = await c.get("/console/")
        assert first.url.endswith("/console/signin")  # not signed in: to the sign-in page
        page = await c.sign_in(tenant.write_key, tenant.namespace)
        assert page.status == 200 and page.url.endswith("/console/")
        assert tenant.namespace in page.text
        set_cookies = [v for _, h in page.history for k, v in h.items() if k == "Set-Cookie"]
        assert set_cookies, "sign-in set no cookie"
        cookie = SimpleCookie(set_cookies[-1])["synclife_console"]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/console"
        assert int(cookie["max-age"]) == gateway.settings.console_session_seconds
        assert tenant.write_key not in cookie.value
        assert tenant.write_key[3:20] not in cookie.value  # not base64 of it either
        signed_out = await c.post("/console/signout", {"csrf": page.csrf})
        assert signed_out.url.endswith("/console/signin")
        again = await c.get("/console/")
        assert again.url.endswith("/console/signin")
        everything = c.everything()
    assert tenant.write_key not in everything
    assert all(tenant.write_key not in r.getMessage() for r in caplog.records)


async def test_a_wrong_key_or_namespace_is_refused_at_sign_in(
    gateway: Gateway, tenant: Tenant
) -> None:
    async with console_for(gateway) as c:
        wrong = await c.sign_in("sk_" + "x" * 40, tenant.namespace)
        assert wrong.status == 401 and "unknown API key" in wrong.text
        other = await c.sign_in(tenant.write_key, "no-such-namespace")
        assert other.status == 403
        assert (await c.get("/console/")).url.endswith("/console/signin")


async def test_every_page_has_a_strict_csp_and_no_inline_script(console: Console, api: Api) -> None:
    sync = await create_sync(api, BUCKET)
    for path in ("/console/", f"/console/b/{BUCKET}/s/{sync['sync_config_id']}"):
        page = await console.get(path)
        assert page.status == 200, page.text[:2000]
        assert page.headers["Content-Security-Policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Cache-Control"] == "no-store"
        assert "<script>" not in page.text and "onclick" not in page.text
        assert '<script src="/console/static/console.js?v=' in page.text
    script = await console.get("/console/static/console.js")
    assert script.status == 200 and "EventSource" in script.text


async def test_a_post_without_the_csrf_token_or_from_another_origin_is_refused(
    console: Console, api: Api
) -> None:
    sync = await create_sync(api, BUCKET)
    path = f"/console/b/{BUCKET}/s/{sync['sync_config_id']}/pause"
    missing = await console.post(path, {"reason": "no token"})
    assert missing.status == 403 and "CSRF" in missing.text
    wrong = await console.post(path, {"csrf": "forged", "reason": "forged"})
    assert wrong.status == 403
    page = await console.get(f"/console/b/{BUCKET}/s/{sync['sync_config_id']}")
    foreign = await console.post(
        path, {"csrf": page.csrf}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status == 403
    assert await status_of(api, sync) == "PENDING"  # nothing was sent


async def test_metadata_with_a_script_is_shown_as_text(console: Console, api: Api) -> None:
    payload = "<script>alert('owned')</script>"
    sync = await create_sync(api, BUCKET, metadata={"note": payload}, description=payload)
    page = await console.get(f"/console/b/{BUCKET}/s/{sync['sync_config_id']}")
    assert page.status == 200
    assert payload not in page.text
    assert "&lt;script&gt;alert(" in page.text
    listed = await console.get("/console/", bucket=BUCKET)
    assert payload not in listed.text


async def test_pause_resume_trigger_unlock_through_the_console(
    console: Console, api: Api, tenant: Tenant
) -> None:
    sync = await create_sync(api, BUCKET, sync_mode="continuous")
    paused = await console.act(sync, "pause", reason="disk <full>")
    assert paused.status == 200 and paused.flash is not None
    assert paused.flash.startswith("pause: done; status SUSPENDED"), paused.flash
    assert "disk &lt;full&gt;" in paused.text  # the hold's reason, escaped
    assert await status_of(api, sync) == "SUSPENDED"
    history = await api.call("GET", f"/v1/buckets/{BUCKET}/syncs/{sync['sync_config_id']}/history")
    pause = history.body["results"][-1]
    assert pause["reason"] == "disk <full>"
    assert pause["command_id"] in paused.text  # the timeline names the command

    again = await console.act(sync, "resume", mode="full")
    assert again.flash is not None and "status ACTIVE" in again.flash, again.flash
    triggered = await console.act(sync, "trigger", mode="full")
    assert triggered.flash is not None and triggered.flash.startswith("trigger: run requested")
    unlocked = await console.act(sync, "unlock")
    assert unlocked.flash is not None and unlocked.flash.startswith("unlock: done")
    runs = await console.get(f"/console/b/{BUCKET}/s/{sync['sync_config_id']}")
    assert 'id="files_chart"' in runs.text  # the requested run, charted
    assert tenant.write_key not in console.everything()


async def test_an_error_of_the_command_is_shown(console: Console, api: Api) -> None:
    sync = await create_sync(api, BUCKET)
    refused = await console.act(sync, "pause", until="not a time")
    assert refused.flash is not None and refused.flash.startswith("pause refused (422)")
    assert await status_of(api, sync) == "PENDING"


async def test_a_read_key_signs_in_and_reads_but_its_actions_are_refused(
    gateway: Gateway, settings: Settings, tenant: Tenant, api: Api
) -> None:
    sync = await create_sync(api, BUCKET)
    reader = await key_with(settings, tenant, ["syncs:read"])
    async with console_for(gateway) as c:
        page = await c.sign_in(reader, tenant.namespace)
        assert page.status == 200 and str(sync["sync_config_id"]) in page.text
        refused = await c.act(sync, "pause", reason="not mine to pause")
        assert refused.flash is not None
        assert refused.flash.startswith("pause refused (403)"), refused.flash
        assert "syncs:write" in refused.flash
        assert 'id="readonly"' in refused.text
        assert reader not in c.everything()
    assert await status_of(api, sync) == "PENDING"


async def test_filters_and_cursor_paging(console: Console, api: Api) -> None:
    bucket = "bkt_console_paging"
    made = [await create_sync(api, bucket) for _ in range(5)]
    other = await create_sync(api, "bkt_console_other")
    await console.act(made[0], "pause", reason="filtered")
    seen: list[str] = []
    page = await console.get("/console/", bucket=bucket, limit="2")
    assert "5 matching" in page.text
    while True:
        assert str(other["sync_config_id"]) not in page.text
        seen += [str(s["sync_config_id"]) for s in made if str(s["sync_config_id"]) in page.text]
        if 'id="next"' not in page.text:
            break
        href = page.text.split('id="next"')[0].rsplit('href="', 1)[1].split('"')[0]
        page = await console.get("/console/" + href.replace("&amp;", "&"))
    assert sorted(seen) == sorted(str(s["sync_config_id"]) for s in made)
    paused = await console.get("/console/", bucket=bucket, paused="true")
    assert "1 matching" in paused.text and str(made[0]["sync_config_id"]) in paused.text
    suspended = await console.get("/console/", bucket=bucket, status="SUSPENDED")
    assert "1 matching" in suspended.text
    bad = await console.get("/console/", status="NOPE")
    assert "filters not applied: invalid status" in bad.text


async def test_the_live_stream_carries_the_namespaces_changes_only(
    gateway: Gateway, console: Console, api: Api, settings: Settings
) -> None:
    sync = await create_sync(api, BUCKET)
    async with console.session.get(console.base + "/console/events") as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert (await stream.content.readline()) == b"event: ready\n"
        await stream.content.readline()  # data
        await stream.content.readline()  # blank
        paused = await api.call(
            "POST", f"/v1/buckets/{BUCKET}/syncs/{sync['sync_config_id']}/pause", {}
        )
        assert paused.status == 200
        # The pause's event: the creation's may reach the stream after it opened (the relay
        # publishes them a little later), so earlier versions are passed over.
        event = None
        async with asyncio.timeout(20):
            while event is None:
                line = (await stream.content.readline()).decode()
                if line.startswith("data: "):
                    data = json.loads(line[6:])
                    if (
                        data.get("sync_config_id") == sync["sync_config_id"]
                        and data.get("version") == paused.body["version"]
                    ):
                        event = data
        assert event["status"] == "SUSPENDED" and event["paused"] is True
        assert "lock_token" not in json.dumps(event)


async def test_the_events_stream_needs_a_session(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/console/events", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/signin"


async def test_another_gateway_with_the_same_secret_serves_the_session(
    settings: Settings, service: Service, console: Console, api: Api
) -> None:
    sync = await create_sync(api, BUCKET)
    async with running_gateway(settings, console_secret=SecretStr(SECRET)) as second:
        console.base = second.url  # the same cookie jar: the same session
        page = await console.get(f"/console/b/{BUCKET}/s/{sync['sync_config_id']}")
        assert page.status == 200 and str(sync["sync_config_id"]) in page.text
    other_secret = SecretStr("another-secret-" + "z" * 32)
    async with running_gateway(settings, console_secret=other_secret) as third:
        console.base = third.url
        page = await console.get("/console/")
        assert page.url.endswith("/console/signin")  # its cookie cannot be read there


async def test_bulk_pause_with_a_preview_and_its_undo(console: Console, api: Api) -> None:
    bucket = "bkt_console_bulk"
    made = [await create_sync(api, bucket) for _ in range(3)]
    outside = await create_sync(api, "bkt_console_bulk_other")
    listed = await console.get("/console/", bucket=bucket)
    assert 'id="bulk_preview"' in listed.text
    shown = await console.get("/console/bulk/preview", bucket=bucket)
    assert shown.status == 200
    assert '<b id="matched">3</b>' in shown.text
    operation_id = shown.text.split('name="operation_id" value="')[1].split('"')[0]
    form = {"csrf": shown.csrf, "operation_id": operation_id, "bucket": bucket}
    done = await console.post("/console/bulk/pause", {**form, "reason": "quarter close"})
    assert done.flash is not None, done.text[:2000]
    assert done.flash.startswith(f"bulk pause {operation_id}: matched 3, applied 3"), done.flash
    assert [await status_of(api, s) for s in made] == ["SUSPENDED"] * 3
    assert await status_of(api, outside) == "PENDING"
    assert "quarter close" in done.text  # the holds' reason, on the list
    again = await console.post("/console/bulk/pause", {**form, "reason": "quarter close"})
    assert again.flash is not None and "applied 3" in again.flash  # the same operation
    assert f'action="/console/bulk/{operation_id}/undo"' in again.text
    missing = await console.post(f"/console/bulk/{operation_id}/undo", {"csrf": "forged"})
    assert missing.status == 403
    undone = await console.post(f"/console/bulk/{operation_id}/undo", {"csrf": again.csrf})
    assert undone.flash is not None and undone.flash.startswith(f"undo of {operation_id}")
    assert [await status_of(api, s) for s in made] == ["ACTIVE"] * 3
    empty = await console.get("/console/bulk/preview")
    assert empty.status == 422 and "needs a bucket" in empty.text
