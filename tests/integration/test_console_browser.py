"""The web console in a real headless Chromium (Debian's chromium and chromedriver, through
selenium): sign in, filter, pause with a reason, a badge changed live by the lifecycle stream,
resume, a ``<script>`` in metadata shown as text, a read-only key's action refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from selenium.webdriver.common.by import By

from events.gateway import Gateway
from events.service.app import Service
from events.service.settings import Settings
from tests.helpers.browser import Browser, chromium
from tests.helpers.gateway import Api, create_sync, key_with, running_gateway
from tests.helpers.live import Tenant

pytestmark = [pytest.mark.stack, pytest.mark.browser]


@pytest.fixture(scope="module")
async def gateway(settings: Settings, service: Service) -> AsyncIterator[Gateway]:
    secret = SecretStr("browser-test-secret-0123456789abcdef")
    async with running_gateway(settings, console_secret=secret) as gw:
        yield gw


@pytest.fixture(scope="module")
async def window(gateway: Gateway) -> AsyncIterator[Browser]:
    async with chromium(gateway.url) as b:
        yield b


@pytest.fixture
async def browser(window: Browser) -> Browser:
    await window.open("/console/signin")
    await window._do(window.driver.delete_all_cookies)  # a new operator each test
    return window


def row(sync: dict[str, object]) -> str:
    return f'tr[data-sync="{sync["sync_config_id"]}"]'


async def test_sign_in_filter_pause_live_and_resume(
    browser: Browser, api: Api, tenant: Tenant
) -> None:
    ours = [await create_sync(api, "bkt_browser_a") for _ in range(3)]
    other = await create_sync(api, "bkt_browser_b")
    await browser.sign_in(tenant.write_key, tenant.namespace)
    assert tenant.write_key not in await browser.source()
    assert tenant.write_key not in await browser.url()

    await browser.fill("f_bucket", "bkt_browser_a")
    await browser.click("apply")
    await browser.until("the filtered list", lambda d: "bucket=bkt_browser_a" in d.current_url)
    shown = {str(e.get_attribute("data-sync")) for e in await browser.find("tr[data-sync]")}
    assert shown == {str(s["sync_config_id"]) for s in ours}
    assert str(other["sync_config_id"]) not in shown

    # Another operator pauses one: its badge changes on this page, without a reload.
    await browser.live()
    target = ours[0]
    paused = await api.call(
        "POST",
        f"/v1/buckets/bkt_browser_a/syncs/{target['sync_config_id']}/pause",
        {"reason": "nightly maintenance"},
    )
    assert paused.status == 200, paused.body
    await browser.until(
        "the badge changed live",
        lambda d: d.find_element(By.CSS_SELECTOR, f"{row(target)} .badge").text == "SUSPENDED",
    )
    assert "changed" in str(await browser.attribute(row(target), "class"))  # by the script
    assert "nightly maintenance" in await browser.text(f"{row(target)} .holds")

    # Pause another with a reason from its page, then resume it.
    second = ours[1]
    await browser.open(f"/console/b/bkt_browser_a/s/{second['sync_config_id']}")
    await browser.fill("pause_reason", "disk <full>")
    await browser.click("pause")
    await browser.until("the pause's answer", lambda d: d.find_elements(By.ID, "flash"))
    assert (await browser.text("#flash")).startswith("pause: done; status SUSPENDED")
    assert await browser.text("#sync .badge") == "SUSPENDED"
    assert "disk <full>" in await browser.text("#sync .holds")

    await browser.choose("resume_mode", "full")
    await browser.click("resume")
    await browser.until(
        "the resume's answer", lambda d: "resume" in d.find_element(By.ID, "flash").text
    )
    assert "status ACTIVE" in await browser.text("#flash")
    assert await browser.text("#sync .badge") == "ACTIVE"
    timeline = await browser.text("#timeline")
    assert "disk <full>" in timeline and "SUSPENDED → ACTIVE" in timeline


async def test_a_script_in_metadata_is_shown_as_text(
    browser: Browser, api: Api, tenant: Tenant
) -> None:
    payload = "<script>window.alert('owned')</script>"
    sync = await create_sync(api, "bkt_browser_x", metadata={"note": payload}, description=payload)
    await browser.sign_in(tenant.write_key, tenant.namespace)
    await browser.open(f"/console/b/bkt_browser_x/s/{sync['sync_config_id']}")
    assert payload in await browser.text("#metadata")  # the text itself, on the page
    assert not await browser.alert_open()
    scripts = [e.get_attribute("src") for e in await browser.find("script")]
    assert len(scripts) == 1 and "/console/static/console.js" in str(scripts[0])


async def test_an_action_with_a_read_only_key_is_refused(
    browser: Browser, api: Api, tenant: Tenant, settings: Settings
) -> None:
    sync = await create_sync(api, "bkt_browser_r")
    reader = await key_with(settings, tenant, ["syncs:read"])
    await browser.sign_in(reader, tenant.namespace)
    await browser.open(f"/console/b/bkt_browser_r/s/{sync['sync_config_id']}")
    assert await browser.find("#readonly")
    await browser.fill("pause_reason", "not allowed")
    await browser.click("pause")
    await browser.until("the refusal", lambda d: d.find_elements(By.ID, "flash"))
    flash = await browser.text("#flash")
    assert flash.startswith("pause refused (403)") and "syncs:write" in flash
    assert await browser.text("#sync .badge") == "PENDING"


async def test_bulk_pause_of_a_filtered_set_and_its_undo(
    browser: Browser, api: Api, tenant: Tenant
) -> None:
    made = [await create_sync(api, "bkt_browser_bulk") for _ in range(2)]
    outside = await create_sync(api, "bkt_browser_bulk_other")
    await browser.sign_in(tenant.write_key, tenant.namespace)
    await browser.open("/console/?bucket=bkt_browser_bulk")
    await browser.click("bulk_preview")
    await browser.until("the preview", lambda d: d.find_elements(By.ID, "matched"))
    assert await browser.text("#matched") == "2"
    await browser.fill("bulk_reason", "quarter close")
    await browser.click("bulk_pause")
    await browser.until("the confirmation", lambda d: d.switch_to.alert)
    await browser._do(lambda: browser.driver.switch_to.alert.accept())
    await browser.until("the bulk answer", lambda d: d.find_elements(By.ID, "flash"))
    assert "matched 2, applied 2" in await browser.text("#flash")
    for sync in made:
        assert await browser.text(f"{row(sync)} .badge") == "SUSPENDED"
    assert str(outside["sync_config_id"]) not in await browser.source()

    await browser.click("bulk_undo")
    await browser.until(
        "the undo's answer", lambda d: "undo of" in d.find_element(By.ID, "flash").text
    )
    await browser.open("/console/?bucket=bkt_browser_bulk")
    for sync in made:
        assert await browser.text(f"{row(sync)} .badge") == "ACTIVE"
