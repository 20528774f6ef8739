"""``synclife serve``: the service, on uvloop."""

from __future__ import annotations

import logging

import click

from events.cli.common import load_settings, run_on_uvloop


@click.command()
@run_on_uvloop
async def serve() -> None:
    """Consume commands, apply them, relay lifecycle events and results (until SIGTERM).

    Serves /metrics, /healthz and /readyz on SYNCLIFE_HTTP_HOST:SYNCLIFE_HTTP_PORT and logs
    JSON lines (SYNCLIFE_LOG_FORMAT=text for people).
    """
    from events.service.app import serve as run_service
    from events.service.observability import configure_logging

    settings = load_settings()
    configure_logging(getattr(logging, settings.log_level), settings.log_format == "json")
    await run_service(settings)
