"""``synclife bench --http``: the round trip of a pause or resume through the HTTP gateway
and through Kafka, at the same fixed rate, in the same run, against the same ``serve``.

Both are measured from when a request was due (its slot at the offered rate), not from when
the load generator got to it, so a stalled pacer shows as latency (coordinated omission):

- Kafka: the command is published; its result is read back from the results topic.
- HTTP: ``POST .../pause`` or ``.../resume`` to one ``synclife gateway`` child process, which
  publishes the same command and answers once the result is in Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from events.devtools.bench.errors import BenchError, Echo
from events.devtools.bench.observers import latency_figures, wait_done
from events.devtools.loadgen import (
    Command,
    TopicReader,
    due_count,
    due_time,
    pacing_delay,
    send_paced,
    serve_env,
)
from events.devtools.procfs import cpu_seconds
from events.kafka import kafka_options
from events.service.settings import Settings

__all__ = ["GatewayProcess", "ResultTimes", "http_round_trips", "kafka_round_trips"]

#: Requests in flight at most: far above what the fixed rate needs, so that a slow answer
#: never holds back the next request (the pacer must not wait on the system it measures).
MAX_IN_FLIGHT = 1024
#: Environment variables: where to write the gateway's cProfile stats, and the checkout whose
#: gateway to run (another commit's, to compare).
PROFILE_ENV = "SYNCLIFE_BENCH_GATEWAY_PROFILE"
PATH_ENV = "SYNCLIFE_BENCH_GATEWAY_PATH"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``synclife gateway`` as a child process on the bench's topics, on a free port."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.log_path = log_path

    @classmethod
    async def start(cls, settings: Settings, log_path: Path, echo: Echo) -> GatewayProcess:
        """Start it and wait until ``/readyz`` answers 200 (at most 60 s). Under cProfile
        when ``SYNCLIFE_BENCH_GATEWAY_PROFILE`` names a file (written when it stops); the
        code of the checkout ``SYNCLIFE_BENCH_GATEWAY_PATH`` names, if set (to compare)."""
        port = _free_port()
        env = dict(os.environ)
        env.update(serve_env(settings, f"{settings.client_id}-gateway"))
        env.update({"SYNCLIFE_GATEWAY_HOST": "127.0.0.1", "SYNCLIFE_GATEWAY_PORT": str(port)})
        argv = [sys.executable]
        profile = os.environ.get(PROFILE_ENV)
        if profile:
            argv += ["-m", "cProfile", "-o", profile]
        argv += ["-m", "events.cli", "gateway"]
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=os.environ.get(PATH_ENV) or None,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        gateway = cls(proc, f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while True:
                gateway.check()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        f"{gateway.url}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                    ) as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    await gateway.stop()
                    raise BenchError(f"synclife gateway not ready after 60 s; see {log_path}")
                await asyncio.sleep(0.2)
        echo(f"gateway pid {proc.pid} at {gateway.url} (log {log_path})")
        return gateway

    def check(self) -> None:
        if self.proc.returncode is not None:
            raise BenchError(
                f"synclife gateway exited with code {self.proc.returncode}; see {self.log_path}"
            )

    def cpu(self) -> float:
        """CPU seconds the gateway has used so far (NaN once it is gone)."""
        used = cpu_seconds(self.proc.pid)
        return used if used is not None else float("nan")

    async def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited 30 s later."""
        if self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class ResultTimes:
    """Each paced command's round trip over Kafka: from its scheduled send time (its slot at
    the offered rate, as for HTTP) to its result, read from the results topic's end on the
    wall clock. ``done`` is set once ``count`` have been seen."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.count = count
        self.due_at: dict[str, float] = {}
        self.late: list[float] = []
        self.latency: list[float] = []
        self.done = asyncio.Event()
        self.reader = TopicReader(
            settings.results_topic,
            self._handle,
            {
                **kafka_options(settings, client_id=f"{settings.client_id}-results"),
                "fetch_max_wait_ms": 100,
            },
            at_end=True,
            clock=time.time,
        )

    def sent(self, command: Command, due: float) -> None:
        self.due_at[command.command_id] = due
        self.late.append((time.time() - due) * 1000)

    def _handle(self, records: list[Any], now: float) -> None:
        for r in records:
            if r.value is None:
                continue
            due = self.due_at.pop(json.loads(r.value).get("command_id"), None)
            if due is not None:
                self.latency.append((now - due) * 1000)
        if len(self.latency) >= self.count:
            self.done.set()


async def kafka_round_trips(
    settings: Settings,
    producer: AIOKafkaProducer,
    commands: list[Command],
    rate: float,
    check: Any,
) -> dict[str, float]:
    """Publish ``commands`` at ``rate``; each one's time from its scheduled send to its result
    on the results topic."""
    times = ResultTimes(settings, len(commands))
    await times.reader.start()
    try:
        await send_paced(producer, settings.commands_topic, commands, rate, times.sent)
        await wait_done(times.done, len(commands), lambda: f"{len(times.latency)} results", check)
    finally:
        await times.reader.stop()
    return {"commands": len(commands), **latency_figures(times.latency, times.late)}


async def http_round_trips(
    gateway: GatewayProcess,
    api_key: str,
    namespace: str,
    paths: list[str],
    rate: float,
) -> dict[str, float]:
    """``POST`` each of ``paths`` at ``rate``: each one's time from its due slot to its
    answer; every answer must be 200 (else ``BenchError`` names the first other one). Also
    the gateway's CPU per request."""
    headers = {"Authorization": f"Bearer {api_key}", "X-Namespace": namespace}
    latency: list[float] = []
    failures: list[str] = []
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        gateway.url, headers=headers, connector=connector, timeout=timeout
    ) as session:

        async def one(path: str, due: float) -> None:
            try:
                async with session.post(path) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures.append(f"{path}: HTTP {resp.status}")
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"{path}: {type(exc).__name__}")
                return
            latency.append((time.perf_counter() - due) * 1000)

        tasks: list[asyncio.Task[None]] = []
        cpu_before = gateway.cpu()
        start = time.perf_counter()
        count = len(paths)
        i = 0
        while i < count:
            due_now = due_count(start, rate, count, time.perf_counter())
            while i < due_now:
                tasks.append(asyncio.create_task(one(paths[i], due_time(start, i, rate))))
                i += 1
            gateway.check()
            await asyncio.sleep(pacing_delay(start, i, rate, time.perf_counter()))
        offered = count / (time.perf_counter() - start)
        await asyncio.gather(*tasks)
        cpu_used = gateway.cpu() - cpu_before
    if failures:
        raise BenchError(
            f"{len(failures)} of {count} HTTP requests failed, first: {failures[0]}; "
            f"see {gateway.log_path}"
        )
    return {
        "commands": count,
        "offered_rate": offered,
        **latency_figures(latency),
        "gateway_cpu_us": cpu_used / count * 1e6,
    }
