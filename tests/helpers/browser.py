"""A real headless Chromium for the console: Debian's ``chromium`` driven by selenium through
Debian's ``chromedriver`` (given as the Service's path, so selenium-manager downloads nothing).
Installed by ``synclife stack browser`` (``events.devtools.stack.install.browser``) if missing.

Selenium blocks; the gateway under test runs on the test's event loop. Every call goes to a
thread (``asyncio.to_thread``) so the loop keeps answering the browser's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from events.devtools.stack.install import browser as install_browser

T = TypeVar("T")
WAIT_SECONDS = 20.0


class Browser:
    """One Chromium window, with async calls."""

    def __init__(self, driver: webdriver.Chrome, base: str) -> None:
        self.driver = driver
        self.base = base

    async def _do(self, call: Callable[[], T]) -> T:
        return await asyncio.to_thread(call)

    async def open(self, path: str) -> None:
        await self._do(lambda: self.driver.get(self.base + path))

    async def fill(self, element_id: str, text: str) -> None:
        def fill() -> None:
            field = self.driver.find_element(By.ID, element_id)
            field.clear()
            field.send_keys(text)

        await self._do(fill)

    async def choose(self, element_id: str, value: str) -> None:
        await self._do(
            lambda: Select(self.driver.find_element(By.ID, element_id)).select_by_value(value)
        )

    async def click(self, element_id: str) -> None:
        await self._do(lambda: self.driver.find_element(By.ID, element_id).click())

    async def text(self, css: str) -> str:
        return await self._do(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text)

    async def texts(self, css: str) -> list[str]:
        return await self._do(
            lambda: [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css)]
        )

    async def find(self, css: str) -> list[WebElement]:
        return await self._do(lambda: self.driver.find_elements(By.CSS_SELECTOR, css))

    async def attribute(self, css: str, name: str) -> str | None:
        return await self._do(
            lambda: self.driver.find_element(By.CSS_SELECTOR, css).get_attribute(name)
        )

    async def until(self, what: str, check: Callable[[webdriver.Chrome], Any]) -> Any:
        """Wait (at most ``WAIT_SECONDS``) until ``check`` gives something true."""
        wait = WebDriverWait(
            self.driver,
            WAIT_SECONDS,
            poll_frequency=0.1,
            # The page may be replaced between finding an element and reading it.
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )
        return await self._do(lambda: wait.until(check, message=f"waited for {what}"))

    async def url(self) -> str:
        return await self._do(lambda: self.driver.current_url)

    async def source(self) -> str:
        return await self._do(lambda: self.driver.page_source)

    async def alert_open(self) -> bool:
        def probe() -> bool:
            try:
                self.driver.switch_to.alert  # noqa: B018 - the probe itself
            except NoAlertPresentException:
                return False
            return True

        return await self._do(probe)

    async def screenshot(self, path: str) -> None:
        await self._do(lambda: self.driver.save_screenshot(path))

    async def sign_in(self, key: str, namespace: str) -> None:
        await self.open("/console/signin")
        await self.fill("api_key", key)
        await self.fill("namespace_field", namespace)
        await self.click("signin")
        await self.until("the syncs page", lambda d: d.find_elements(By.ID, "syncs"))

    async def live(self) -> None:
        """Wait until the page's live stream is positioned (its ``ready`` event came)."""
        await self.until(
            "the live stream",
            lambda d: (
                d.find_element(By.TAG_NAME, "body").get_attribute("data-live-state") == "ready"
            ),
        )


@contextlib.asynccontextmanager
async def chromium(base: str, width: int = 1400, height: int = 1000) -> AsyncIterator[Browser]:
    """A headless Chromium on ``base`` (installed first if missing), quit after the block."""
    binary, driver_path = await install_browser(lambda line: print(line))
    options = Options()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    service = DriverService(executable_path=driver_path)
    driver = await asyncio.to_thread(lambda: webdriver.Chrome(service=service, options=options))
    try:
        yield Browser(driver, base)
    finally:
        await asyncio.to_thread(driver.quit)
