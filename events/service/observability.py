"""What an operator sees: Prometheus metrics, health and readiness, structured JSON logs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "APPLY_SECONDS",
    "BATCH_CONFLICTS",
    "COMMANDS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "OUTBOX_BACKLOG",
    "OUTBOX_OLDEST_SECONDS",
    "OUTBOX_PARKED",
    "RELAY_PARKED",
    "RELAY_PUBLISHED",
    "RELAY_PUBLISH_SECONDS",
    "SYSTEM_CHANGES",
    "HealthServer",
    "configure_logging",
    "log_context",
]

COMMANDS: Final = Counter(
    "synclife_commands_total", "Commands processed, by type and outcome.", ["type", "outcome"]
)
APPLY_SECONDS: Final = Histogram(
    "synclife_batch_apply_seconds",
    "Time to decide and commit one consumed batch (one Postgres transaction).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_CONFLICTS: Final = Counter(
    "synclife_batch_conflicts_total",
    "Batches read again and retried because a concurrent writer changed what they read.",
)
CONSUMER_LAG: Final = Gauge(
    "synclife_consumer_lag", "Records behind the end of each commands partition.", ["partition"]
)
DEAD_LETTERS: Final = Counter("synclife_dead_letters_total", "Messages dead-lettered.")
OUTBOX_BACKLOG: Final = Gauge("synclife_outbox_backlog", "Outbox rows not yet published.")
OUTBOX_OLDEST_SECONDS: Final = Gauge(
    "synclife_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row."
)
OUTBOX_PARKED: Final = Gauge(
    "synclife_outbox_parked", "Outbox rows parked: refused by Kafka for good, or held behind one."
)
RELAY_PARKED: Final = Counter(
    "synclife_relay_parked_total", "Outbox rows the relay parked, by reason.", ["reason"]
)
RELAY_PUBLISHED: Final = Counter("synclife_relay_published_total", "Outbox rows published.")
RELAY_PUBLISH_SECONDS: Final = Histogram(
    "synclife_relay_publish_seconds",
    "Time to publish one page of the outbox and have Kafka acknowledge it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SYSTEM_CHANGES: Final = Counter(
    "synclife_scheduler_changes_total",
    "Changes the scheduler made, by event type (run requested, lock expired, ...).",
    ["event_type"],
)

# Bound to every log line emitted while a command is processed, in this order.
_NAMES: Final = ("command_id", "sync_config_id", "partition", "offset")
_KNOWN: Final = frozenset(_NAMES)
# What is bound now, by name: one variable, set once per block (a command's four values).
_BOUND: Final[ContextVar[dict[str, Any]]] = ContextVar("synclife_log_context", default={})  # noqa: B039 - never changed in place


class _Bound:
    """``log_context``'s block: entering it binds its values over the ones bound around it,
    leaving it binds those again."""

    __slots__ = ("_token", "_values")

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __enter__(self) -> None:
        values = self._values
        if not values.keys() <= _KNOWN:
            raise KeyError(min(values.keys() - _KNOWN))
        self._token = _BOUND.set({**_BOUND.get(), **values})

    def __exit__(self, *_: object) -> None:
        _BOUND.reset(self._token)


def log_context(**values: Any) -> AbstractContextManager[None]:
    """Attach ``command_id``, ``sync_config_id``, ``partition``, ``offset`` to the log lines
    emitted inside the block; on leaving it, each is what it was before (per command, per
    batch: a batch's own lines never carry its last command's ids). A value None binds
    nothing (and hides the one bound around the block)."""
    return _Bound(values)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        bound = _BOUND.get()
        if bound:
            for name in _NAMES:
                value = bound.get(name)
                if value is not None and not hasattr(record, name):
                    setattr(record, name, value)
        return True


def configure_logging(level: int, json_logs: bool) -> None:
    """Log to stderr, as JSON lines (one object per line) or as text for people."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if json_logs:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "transitions", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


Check = Callable[[], Awaitable[tuple[bool, str]]]


class HealthServer:
    """``/metrics`` (Prometheus text), ``/healthz`` (the process runs), ``/readyz`` (its checks)."""

    def __init__(self, host: str, port: int, checks: dict[str, Check]) -> None:
        self.host = host
        self.port = port
        self.checks = checks
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:  # an ephemeral port (tests): learn which one
            server = site._server
            assert server is not None  # noqa: S101 - started above
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        results: dict[str, Any] = {}
        ready = True
        for name, check in self.checks.items():
            try:
                ok, detail = await check()
            except Exception as exc:  # noqa: BLE001 - any failure of a check is "not ready"
                ok, detail = False, type(exc).__name__
            results[name] = {"ok": ok, "detail": detail}
            ready = ready and ok
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": results},
            status=200 if ready else 503,
        )
