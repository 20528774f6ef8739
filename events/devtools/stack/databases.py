"""Scratch databases on the configured Postgres server: a bench run measures on one of its
own, and tests that change a server-wide setting or need an empty schema use one too."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pydantic import SecretStr

from events.service.db import connect
from events.service.settings import Settings

__all__ = ["create_database", "drop_database", "with_database"]


def with_database(settings: Settings, name: str) -> Settings:
    """``settings`` with ``database_url`` naming database ``name`` on the same server(s)."""
    parts = urlsplit(settings.database_url.get_secret_value())
    url = urlunsplit(parts._replace(path=f"/{name}"))
    return settings.model_copy(update={"database_url": SecretStr(url)})


async def create_database(settings: Settings, name: str) -> Settings | None:
    """Create the empty database ``name`` on ``settings``' server; ``settings`` pointing at
    it, or None if the role may not create a database. A run on a database of its own is not
    slowed down by what earlier runs, tests or demos left in the shared one (syncs whose
    timers the scheduler keeps serving, tables and an outbox grown large)."""
    conn = await connect(settings)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.InsufficientPrivilegeError:
        return None
    finally:
        await conn.close()
    return with_database(settings, name)


async def drop_database(settings: Settings, name: str) -> None:
    """Drop database ``name`` (from ``settings``' own database), ending its sessions."""
    conn = await connect(settings)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
