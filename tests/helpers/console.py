"""The web console in tests: a browser-like HTTP client (a cookie jar, forms with the page's
CSRF token) that keeps every page and URL it saw, to check that no key is in any of them."""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict

from events.gateway import Gateway

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Page:
    status: int
    url: str
    text: str
    headers: CIMultiDict[str]
    history: list[tuple[int, CIMultiDict[str]]]

    @property
    def csrf(self) -> str:
        found = _CSRF.search(self.text)
        assert found is not None, self.text[:2000]
        return html.unescape(found.group(1))

    @property
    def flash(self) -> str | None:
        found = re.search(r'<p id="flash"[^>]*>(.*?)</p>', self.text, re.S)
        return html.unescape(found.group(1)) if found else None


@dataclass
class Console:
    session: aiohttp.ClientSession
    base: str
    pages: list[Page] = field(default_factory=list)

    async def get(self, path: str, **params: str) -> Page:
        async with self.session.get(self.base + path, params=params or None) as response:
            return await self._page(response)

    async def post(
        self, path: str, form: dict[str, str], *, headers: dict[str, str] | None = None
    ) -> Page:
        async with self.session.post(self.base + path, data=form, headers=headers) as response:
            return await self._page(response)

    async def _page(self, response: aiohttp.ClientResponse) -> Page:
        text = await response.text()
        page = Page(
            response.status,
            str(response.url),
            text,
            CIMultiDict(response.headers),
            [(r.status, CIMultiDict(r.headers)) for r in response.history],
        )
        self.pages.append(page)
        return page

    async def sign_in(self, key: str, namespace: str) -> Page:
        form = await self.get("/console/signin")
        return await self.post(
            "/console/signin", {"csrf": form.csrf, "api_key": key, "namespace": namespace}
        )

    async def act(self, sync: dict[str, Any], action: str, **fields: str) -> Page:
        """An action from the sync's page, with that page's CSRF token."""
        path = f"/console/b/{sync['bucket_id']}/s/{sync['sync_config_id']}"
        page = await self.get(path)
        assert page.status == 200, page.text[:2000]
        return await self.post(f"{path}/{action}", {"csrf": page.csrf, **fields})

    def everything(self) -> str:
        """Every page, URL and header the console sent this client."""
        parts: list[str] = []
        for page in self.pages:
            parts += [page.url, page.text, *(f"{k}: {v}" for k, v in page.headers.items())]
            for _, headers in page.history:
                parts += [f"{k}: {v}" for k, v in headers.items()]
        return "\n".join(parts)


@contextlib.asynccontextmanager
async def console_for(gateway: Gateway) -> AsyncIterator[Console]:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1 too
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield Console(session, gateway.url)


@contextlib.asynccontextmanager
async def signed_in(gateway: Gateway, key: str, namespace: str) -> AsyncIterator[Console]:
    """A console signed in with ``key`` to ``namespace`` (the sign-in checked)."""
    async with console_for(gateway) as console:
        page = await console.sign_in(key, namespace)
        assert page.status == 200, page.text[:2000]
        yield console
