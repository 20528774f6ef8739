"""What the ``synclife`` commands share: running an async command, the settings, printing,
and a database connection for the admin commands."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click
import uvloop
from pydantic import SecretStr

from events.errors import SynclifeError
from events.service.settings import Settings

__all__ = ["echo_err", "load_settings", "print_obj", "run", "run_on_uvloop", "with_connection"]

P = ParamSpec("P")
T = TypeVar("T")


def _runner(
    run: Callable[[Coroutine[Any, Any, T]], T],
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, T]]:
    """A decorator that runs an async click command with ``run``; our errors become a clear
    message and exit code 1."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return run(fn(*args, **kwargs))
            except SynclifeError as exc:
                raise click.ClickException(str(exc)) from exc

        return wrapper

    return decorate


run = _runner(asyncio.run)
#: ``serve`` runs on uvloop, libuv's faster event loop (made for asyncpg): its every batch is
#: event-loop work. Not the others: uvloop's subprocesses cannot switch user, which
#: ``stack up`` needs as root (Postgres refuses to run as root).
run_on_uvloop = _runner(uvloop.run)


def echo_err(line: str) -> None:
    """Progress and notes go to stderr: stdout is the command's output."""
    click.echo(line, err=True)


def load_settings() -> Settings:
    """Settings from the environment; without a database URL there, the local stack's."""
    settings = Settings()
    if "SYNCLIFE_DATABASE_URL" not in os.environ:
        from events.devtools import stack as local_stack

        try:
            env = local_stack.local_env(settings)
        except SynclifeError:
            return settings  # no local stack either: the defaults, and a clear error on use
        settings = Settings(
            kafka_bootstrap_servers=os.environ.get(
                "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS", env["SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS"]
            ),
            database_url=SecretStr(env["SYNCLIFE_DATABASE_URL"]),
        )
    return settings


def print_obj(obj: Any, as_json: bool) -> None:
    """One JSON object, or ``key: value`` lines for people."""
    if as_json:
        click.echo(json.dumps(obj, default=str))
    else:
        for k, v in obj.items():
            click.echo(f"{k}: {v}")


async def with_connection(action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action`` on a connection of its own, closed after it."""
    from events.service.db import connect

    conn = await connect(load_settings())
    try:
        return await action(conn)
    finally:
        await conn.close()
