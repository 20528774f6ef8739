"""``synclife gateway``: the vendor's REST API over synclife's commands (aiohttp.web).

Writes are commands published on the commands topic with the caller's own key and namespace,
answered with their results, which the process waits for on Postgres (``events.gateway.waiter``,
one waiter per process, never the results topic). Reads come from Postgres. One producer, one
pool and one waiter per process; N processes serve the same clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from datetime import timedelta
from typing import Any, Final

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from events.contract.filters import is_clean_id
from events.gateway.errors import ApiError, Handler, error_middleware
from events.gateway.live import Hub
from events.gateway.protocol import GatewayRunner
from events.gateway.waiter import Waiter
from events.kafka import started_producer, stop_producer
from events.service.db import acquire, create_pool
from events.service.runtime import tune_gc
from events.service.settings import Settings

__all__ = ["GATEWAY", "Gateway", "create_app", "run_gateway"]

log = logging.getLogger("synclife.gateway")

REQUESTS: Final = Counter(
    "synclife_gateway_requests_total",
    "HTTP requests answered, by route and status.",
    ["method", "route", "status"],
)
REQUEST_SECONDS: Final = Histogram(
    "synclife_gateway_request_seconds",
    "Time to answer an HTTP request, by route.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ASYNC_ANSWERS: Final = Counter(
    "synclife_gateway_unfinished_total",
    "Writes whose result did not come within the wait, by answer (202, 504).",
    ["status"],
)
SHUTDOWN_SECONDS: Final = 10.0
_PURGE: Final = """
    DELETE FROM gateway_requests
    WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM gateway_requests
        WHERE created_at < now() + $1::interval
        ORDER BY created_at LIMIT $2
        FOR UPDATE SKIP LOCKED))"""


class Gateway:
    """The process's shared parts: settings, pool, producer, waiter; and the HTTP server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.waiter: Waiter | None = None
        self.port = settings.gateway_port
        self.stop = asyncio.Event()
        self.openapi: bytes | None = None  # the document, built on first request
        self.hub = Hub(settings)  # lifecycle events for the live streams (console and API)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.settings.gateway_host}:{self.port}"

    @property
    def body_limit(self) -> int:
        """The largest request body: the command size limit unless set lower or higher."""
        return self.settings.gateway_max_body_bytes or self.settings.max_message_bytes

    @property
    def clock_offset(self) -> timedelta:
        return timedelta(seconds=self.settings.clock_offset_seconds)

    async def start(self) -> None:
        """Connect to Postgres and Kafka, then listen. Anything half-started is stopped."""
        try:
            self.pool = await create_pool(self.settings)
            self.waiter = Waiter(self.settings, self.pool)
            await self.waiter.start()
            # No linger: a request waits for its own send's acknowledgement, so a batch held
            # for more records only delays it (requests arriving meanwhile still share one).
            self.producer = await started_producer(
                self.settings, client_id=f"{self.settings.client_id}-gateway", linger_ms=0
            )
            # A connection gets this long for each request's headers (aiohttp's keep-alive
            # timeout also runs while a request's headers arrive, and closes the connection
            # then); ``json_object`` bounds its body the same.
            self._runner = GatewayRunner(
                create_app(self),
                access_log=None,
                keepalive_timeout=self.settings.gateway_read_timeout_seconds,
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.settings.gateway_host, self.port)
            await site.start()
            server = site._server
            if server is not None and self.port == 0:  # an ephemeral port: learn which one
                self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        except BaseException:
            await self.close()
            raise
        self._tasks.append(asyncio.create_task(self._purge_loop(), name="gateway-retention"))
        log.info("gateway listening on %s", self.url)

    async def close(self) -> None:
        """Stop listening (requests in flight finish first, within bounds), then the rest."""
        self.stop.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._runner.cleanup(), SHUTDOWN_SECONDS)
            self._runner = None
        if self.waiter is not None:
            await self.waiter.stop()
            self.waiter = None
        if self.producer is not None:
            await stop_producer(self.producer, SHUTDOWN_SECONDS)
            self.producer = None
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), SHUTDOWN_SECONDS)
            except Exception:  # noqa: BLE001 - a connection that does not close is cut
                self.pool.terminate()
            self.pool = None

    async def _purge_loop(self) -> None:
        """Forget recorded requests past the dedupe window (as retention forgets command
        ids): every process does it, a batch at a time, skipping rows another one deletes."""
        window = timedelta(days=self.settings.dedupe_window_days)
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                assert self.pool is not None  # noqa: S101 - started
                while True:
                    async with acquire(self.pool) as conn:
                        done = await conn.execute(
                            _PURGE,
                            self.clock_offset - window,
                            self.settings.retention_batch_size,
                        )
                    if int(done.split()[-1]) < self.settings.retention_batch_size:
                        break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.retention_interval_seconds)

    async def ready(self) -> dict[str, Any]:
        """Postgres answers and the producer is started."""
        checks: dict[str, Any] = {}
        try:
            assert self.pool is not None  # noqa: S101 - else the except below says so
            async with acquire(self.pool) as conn:
                await asyncio.wait_for(conn.fetchval("SELECT 1"), 2)
            checks["postgres"] = {"ok": True, "detail": "ok"}
        except Exception as exc:  # noqa: BLE001 - any failure is "not ready"
            checks["postgres"] = {"ok": False, "detail": type(exc).__name__}
        started = self.producer is not None  # set once started, cleared when stopped
        checks["kafka"] = {"ok": started, "detail": "producer started" if started else "stopped"}
        waiter = self.waiter
        checks["listen"] = {
            "ok": True,  # polling covers a lost LISTEN: degraded, not unready
            "detail": "listening" if waiter is not None and waiter.listening else "polling",
        }
        return checks


#: The running gateway, as each route finds it on its application.
GATEWAY: Final = web.AppKey("gateway", Gateway)


def _route_name(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def _measure(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        route = _route_name(request)
        REQUESTS.labels(request.method, route, str(status)).inc()
        REQUEST_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)


@web.middleware
async def _path_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An id in the path that no sync, job or operation can have (``is_clean_id``: too long,
    U+0000, a control character, an unpaired surrogate): 404, before any statement is built
    with it. The list filters and the cursor's id follow the same rule (422)."""
    for value in request.match_info.values():
        if not is_clean_id(value):
            raise ApiError(404, "not_found", "not found", code="not_found")
    return await handler(request)


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    checks = await request.app[GATEWAY].ready()
    ready = all(c["ok"] for c in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def _openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of these routes (the one in docs/openapi.json)."""
    gateway = request.app[GATEWAY]
    if gateway.openapi is None:
        from events.contract.openapi import openapi_document

        gateway.openapi = json.dumps(openapi_document(), indent=2).encode()
    return web.Response(body=gateway.openapi, content_type="application/json")


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(gateway: Gateway) -> web.Application:
    """The application: the error middleware outermost (every failure in one body), request
    metrics inside it, bodies limited to ``gateway.body_limit`` before they are read."""
    from events.gateway import bulk, console, reads, stream, writes

    app = web.Application(
        client_max_size=gateway.body_limit, middlewares=[_measure, error_middleware, _path_ids]
    )
    app[GATEWAY] = gateway

    async def end_streams(_: web.Application) -> None:
        gateway.hub.wake_all()  # the live streams end, so that shutting down does not wait

    async def stop_hub(_: web.Application) -> None:
        await gateway.hub.close()

    app.on_shutdown.append(end_streams)
    app.on_cleanup.append(stop_hub)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    writes.add_routes(app)
    reads.add_routes(app)
    bulk.add_routes(app)  # /v1/sync-bulk/...
    stream.add_routes(app)  # /v1/events
    console.setup(app, gateway)  # the web console at /console
    return app


async def run_gateway(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    tune_gc()
    gateway = Gateway(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.stop.set)
    await gateway.start()
    try:
        await gateway.stop.wait()
    finally:
        log.info("gateway stopping")
        await gateway.close()
