"""``synclife gateway``: the HTTP API, on uvloop."""

from __future__ import annotations

import logging

import click

from events.cli.common import load_settings, run_on_uvloop


@click.command()
@run_on_uvloop
async def gateway() -> None:
    """Serve the REST API of sync configurations (until SIGTERM or SIGINT).

    Listens on SYNCLIFE_GATEWAY_HOST:SYNCLIFE_GATEWAY_PORT (default 127.0.0.1:8080), with
    /healthz, /readyz and /metrics of its own; writes are published as commands and answered
    with their results, reads come from Postgres. Logs JSON lines (SYNCLIFE_LOG_FORMAT=text
    for people).
    """
    from events.gateway import run_gateway
    from events.service.observability import configure_logging

    settings = load_settings()
    configure_logging(getattr(logging, settings.log_level), settings.log_format == "json")
    await run_gateway(settings)
