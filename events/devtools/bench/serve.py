"""The service under test: one ``synclife serve`` child process on the bench's topics and
consumer group, and making sure it, not another ``serve`` on the same database, leads the
relay and the scheduler (whose events the bench measures)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
from pathlib import Path

from events.devtools.bench.errors import BenchError, Echo
from events.devtools.loadgen import lock_holders, serve_env, session_pid, spawn_serve
from events.devtools.procfs import peak_rss_kib
from events.service.db import connect
from events.service.relay import RELAY_LOCK
from events.service.scheduler import SCHEDULER_LOCK
from events.service.settings import Settings

__all__ = ["ServeProcess", "wait_for_leadership", "wait_for_no_leader"]

LEADER_LOCKS = (RELAY_LOCK, SCHEDULER_LOCK)


class ServeProcess:
    """``synclife serve`` as a child process, with the bench's topics and consumer group."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @classmethod
    async def start(
        cls, settings: Settings, log_path: Path, profile: str | None, serve_path: str | None
    ) -> ServeProcess:
        """Start it (under cProfile to ``profile`` if given; ``serve_path``: the code of
        another checkout, e.g. a git worktree, to compare versions)."""
        env = dict(os.environ)
        if serve_path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (serve_path, env.get("PYTHONPATH")) if p)
        env.update(serve_env(settings, settings.client_id))
        proc = await spawn_serve(env, log_path, cwd=serve_path, profile=profile)
        return cls(proc, log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None

    def says_it_leads(self) -> bool:
        """Its log says it leads the relay and the scheduler."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return "relay is the leader" in text and "scheduler is the leader" in text

    def peak_rss_mb(self) -> float:
        kib = peak_rss_kib(self.pid)
        return kib / 1024 if kib is not None else math.nan

    def check(self) -> None:
        """Raise ``BenchError`` if it has exited."""
        if not self.alive():
            raise BenchError(
                f"synclife serve exited with code {self.proc.returncode}; see {self.log_path}"
            )

    async def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited 30 s later."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def wait_for_no_leader(settings: Settings, echo: Echo) -> None:
    """Another serve on this database would lead the relay and scheduler: wait (1 min)."""
    conn = await connect(settings)
    try:
        for attempt in range(30):
            if not await lock_holders(conn, LEADER_LOCKS):
                return
            if attempt == 0:
                echo("another synclife serve leads on this database; waiting for it")
            await asyncio.sleep(2)
    finally:
        await conn.close()


async def wait_for_leadership(settings: Settings, serve: ServeProcess) -> str | None:
    """Wait (1 min) until ``serve`` leads the relay and the scheduler; if it does not, the
    note to print and report (another serve published this bench's events)."""
    conn = await connect(settings)
    try:
        for _ in range(120):
            serve.check()
            names = list((await lock_holders(conn, LEADER_LOCKS)).values())
            if len(names) == 2 and all(session_pid(n) == serve.pid for n in names):
                return None
            if len(names) == 2 and not any(names) and serve.says_it_leads():
                return None  # a serve that does not name its sessions (an older version)
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    return (
        f"another synclife serve leads the relay or scheduler on this database ({names}): "
        "it published this bench's events, so the figures are not the measured process's"
    )
