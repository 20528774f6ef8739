"""A bench run from start to end: its topics, tenant and producers, then per sync count a
``serve``, the syncs, and per repeat the phases and the baseline, then the report; everything
it created removed at the end unless ``--keep``."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import secrets
import subprocess
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from events.devtools import stack
from events.devtools.bench.baseline import create_scratch_topic, kafka_baseline, warm_up
from events.devtools.bench.database import (
    not_applied,
    postgres_version,
    quiesce,
    remove_run,
    vacuum,
)
from events.devtools.bench.errors import BenchError, Echo, retry
from events.devtools.bench.http import GatewayProcess, http_round_trips, kafka_round_trips
from events.devtools.bench.markdown import command_line
from events.devtools.bench.observers import SyncWrites
from events.devtools.bench.options import BenchOptions
from events.devtools.bench.pgbench import Pgbench
from events.devtools.bench.phases import Phases
from events.devtools.bench.reference import reference_ms
from events.devtools.bench.report import (
    RepeatResult,
    baseline_line,
    cpu_line,
    latency_line,
    round_trip_line,
    summarise,
)
from events.devtools.bench.serve import ServeProcess, wait_for_leadership, wait_for_no_leader
from events.devtools.bench.workload import Workload
from events.devtools.loadgen import (
    LoadError,
    Sender,
    create_tenant,
    delete_topics,
    log_tail,
    own_topics,
)
from events.devtools.procfs import CpuMeter, machine_info
from events.devtools.stack.databases import create_database, drop_database
from events.kafka import idempotent_producer, kafka_options
from events.service.db import connect, migrate
from events.service.settings import Settings

__all__ = ["run_bench"]


class Bench:
    """One run: topics ``bench.<run>.*``, consumer group ``bench-<run>``, an organization
    ``bench-<run>``, a scratch schema ``synclife_bench_<run>`` for pgbench, all in a database
    ``synclife_bench_<run>`` of the run's own (unless ``--shared-database``, or the role may
    not create one)."""

    def __init__(self, settings: Settings, options: BenchOptions, echo: Echo, workdir: Path):
        self.options = options
        self.echo = echo
        self.workdir = workdir
        self.run_id = secrets.token_hex(4)
        run = self.run_id
        self.settings = settings.model_copy(
            update={
                **own_topics(f"bench.{run}"),
                "consumer_group": f"bench-{run}",
                "client_id": f"synclife-bench-{run}",
            }
        )
        self.schema = f"synclife_bench_{run}"
        self.shared = settings  # the configured database: where the run's own is made
        self.database: str | None = None  # the run's own, once created
        self.baseline_topic = f"bench.{run}.baseline"
        self.org_id = ""
        self.pgbench = Pgbench(self.settings, options, self.schema, workdir)
        self.notes: list[str] = []
        self._fast: AIOKafkaProducer | None = None
        self._paced: AIOKafkaProducer | None = None

    workload: Workload  # from setup on

    async def setup(self) -> None:
        """The topics, the tenant (whose key the commands carry) and the producers."""
        if not self.options.shared_database:
            await self._own_database()
        s = self.settings
        where = self.database or "the configured database"
        self.echo(
            f"bench run {self.run_id}: topics bench.{self.run_id}.*, schema {self.schema}, "
            f"in {where}"
        )
        await retry(
            "creating topics",
            lambda: stack.ensure_topics(s, s.kafka_bootstrap_servers, lambda _: None),
            self.echo,
        )
        conn = await retry("connecting to Postgres", lambda: connect(s), self.echo)
        try:
            await migrate(conn)
            self.org_id, api_key = await create_tenant(
                conn, f"bench-{self.run_id}", "bench", key_name="synclife bench"
            )
        finally:
            await conn.close()
        self.workload = Workload(self.run_id, Sender(api_key, "bench", "synclife-bench"))
        self._fast = idempotent_producer(s, client_id=f"{s.client_id}-fast", linger_ms=20)
        self._paced = paced = idempotent_producer(s, client_id=f"{s.client_id}-paced", linger_ms=0)
        for producer in (self._fast, paced):
            await retry("starting a producer", producer.start, self.echo)
        await retry(
            "creating the baseline's topic",
            lambda: create_scratch_topic(s, self.baseline_topic),
            self.echo,
        )
        probe = self.workload.sender.command(f"bench-{self.run_id}-warm-up", "probe", "probe", {})
        await retry(
            "warming up the baseline",
            lambda: warm_up(paced, self.baseline_topic, probe),
            self.echo,
        )

    async def _own_database(self) -> None:
        name = f"synclife_bench_{self.run_id}"
        own = await create_database(self.settings, name)
        if own is None:
            note = "the role may not create a database: the run used the configured one"
            self.notes.append(note)
            self.echo(f"WARNING: {note}")
            return
        self.database = name
        self.settings = own
        self.pgbench = Pgbench(own, self.options, self.schema, self.workdir)

    async def teardown(self) -> None:
        for producer in (self._fast, self._paced):
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()
        if self.options.keep:
            where = f"database {self.database}" if self.database else self.schema
            self.echo(f"kept: org {self.org_id}, topics bench.{self.run_id}.*, {where}")
            return
        what = f"database {self.database}" if self.database else "tenant, syncs, scratch schema"
        self.echo(f"cleaning up (topics, {what}; --keep keeps them)")
        with contextlib.suppress(Exception):
            if self.database is not None:
                await drop_database(self.shared, self.database)
            else:
                await remove_run(self.settings, self.run_id, self.org_id, self.schema)
        with contextlib.suppress(Exception):
            await delete_topics(kafka_options(self.settings), f"bench.{self.run_id}.")

    async def scale(self, scale: int) -> dict[str, Any]:
        """Every repeat at ``scale`` syncs (created first, as many as are missing), against a
        ``serve`` of its own; that sync count's part of the report."""
        opts = self.options
        log_path = self.workdir / f"serve-{scale}.log"
        profile = None
        if opts.profile:
            profile = opts.profile if len(opts.scales) == 1 else f"{opts.profile}.{scale}"
        assert self._fast is not None and self._paced is not None  # noqa: S101 - set up
        await wait_for_no_leader(self.settings, self.echo)
        load_before = os.getloadavg()[0]
        serve = await ServeProcess.start(self.settings, log_path, profile, opts.serve_path)
        self.echo(f"[{scale:,} syncs] serve pid {serve.pid} (log {log_path})")
        meter = CpuMeter(serve.pid, stack.service_pids(self.settings))
        phases = Phases(self.settings, serve, self._fast, self._paced, self.echo)
        workload = self.workload
        gateway: GatewayProcess | None = None
        try:
            if opts.http:
                log = self.workdir / f"gateway-{scale}.log"
                gateway = await GatewayProcess.start(self.settings, log, self.echo)
            note = await wait_for_leadership(self.settings, serve)
            if note is not None:
                self.notes.append(note)
                self.echo(f"WARNING: {note}")
            missing = scale - len(workload.syncs)
            create_rate = math.nan
            if missing > 0:
                self.echo(f"[{scale:,} syncs] creating {missing:,} syncs")
                creates = workload.creates(missing)
                create_rate, _ = await phases.flood(creates, "creating")
                workload.created(creates)
                self.echo(f"[{scale:,} syncs] created ({create_rate:,.0f}/s); settling")
            await quiesce(self.settings, self.org_id, serve.check, self.echo)
            await vacuum(self.settings)
            repeats: list[RepeatResult] = []
            for r in range(1, opts.repeats + 1):
                tag = f"[{scale:,} syncs, run {r}/{opts.repeats}]"
                first_phase = workload.phase + 1
                self.echo(f"{tag} max throughput: {opts.commands:,} pause/resume commands")
                commands = workload.pause_resume(opts.commands, scale)
                reference = reference_ms()
                self.echo(f"{tag}   reference workload {reference:.1f} ms of CPU")
                writes = SyncWrites(self.settings)
                await retry("reading lifecycle events", writes.mark, self.echo)
                cpu_before = meter.read()
                tput, pub = await phases.flood(commands, "throughput")
                cpu_max = meter.per_command(cpu_before, meter.read(), len(commands))
                self.echo(f"{tag}   {tput:,.0f} commands/s (published at {pub:,.0f}/s)")
                self.echo(f"{tag}   {cpu_line(cpu_max)}")
                await quiesce(self.settings, self.org_id, serve.check, self.echo)
                per_write = await retry("reading the phase's events", writes.count, self.echo)
                self.echo(f"{tag}   {per_write:.2f} commands per sync row written")
                base_fixed = await self._baseline(serve, opts.rate, scale, tag)
                self.echo(f"{tag} latency at {opts.rate:,.0f}/s for {opts.latency_seconds:g}s")
                cpu_before = meter.read()
                fixed = await self._latency(phases, opts.rate, scale)
                cpu_fixed = meter.per_command(cpu_before, meter.read(), int(fixed["commands"]))
                self.echo(f"{tag}   {latency_line(fixed)}")
                self.echo(f"{tag}   {baseline_line(base_fixed, fixed)}")
                self.echo(f"{tag}   {cpu_line(cpu_fixed)}")
                await quiesce(self.settings, self.org_id, serve.check, self.echo)
                half_rate = tput / 2
                self.echo(f"{tag} latency at {half_rate:,.0f}/s (50% of max)")
                half = await self._latency(phases, half_rate, scale)
                self.echo(f"{tag}   {latency_line(half)}")
                await quiesce(self.settings, self.org_id, serve.check, self.echo)
                base_low = await self._baseline(serve, opts.low_rate, scale, tag)
                self.echo(f"{tag} latency at {opts.low_rate:,.0f}/s")
                low = await self._latency(phases, opts.low_rate, scale)
                self.echo(f"{tag}   {latency_line(low)}")
                self.echo(f"{tag}   {baseline_line(base_low, low)}")
                await quiesce(self.settings, self.org_id, serve.check, self.echo)
                round_trips = None
                if gateway is not None:
                    round_trips = await self._round_trips(serve, gateway, scale, tag)
                failed = await not_applied(
                    self.settings, workload.id_patterns(range(first_phase, workload.phase + 1))
                )
                self.echo(f"{tag} pgbench baseline, {opts.pgbench_clients} clients")
                tps = await self.pgbench.tps(scale, workload.syncs[0])
                self.echo(f"{tag}   {tps:,.0f} tps; ratio {tput / tps:.2f}")
                repeats.append(
                    RepeatResult(
                        throughput=tput,
                        publish_rate=pub,
                        fixed_rate=opts.rate,
                        fixed=fixed,
                        half_rate=half_rate,
                        half=half,
                        pgbench_tps=tps,
                        ratio=tput / tps,
                        not_applied=failed,
                        cpu_max=cpu_max,
                        cpu_fixed=cpu_fixed,
                        round_trips=round_trips,
                        low_rate=opts.low_rate,
                        low=low,
                        baseline_low=base_low,
                        baseline_fixed=base_fixed,
                        reference_ms=reference,
                        commands_per_write=per_write,
                    )
                )
            peak = serve.peak_rss_mb()
        finally:
            if gateway is not None:
                await gateway.stop()
            await serve.stop()
        summary = summarise(scale, repeats, create_rate, peak)
        # Other work on the machine skews every figure: keep the load next to them.
        summary["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        return summary

    async def _round_trips(
        self, serve: ServeProcess, gateway: GatewayProcess, scale: int, tag: str
    ) -> dict[str, Any]:
        """Pause/resume round trips at ``--http-rate``: over Kafka (publish -> result on the
        results topic), then over HTTP (request -> answer), the same number of each."""
        rate = self.options.http_rate
        count = max(1, round(rate * self.options.latency_seconds))
        assert self._paced is not None  # noqa: S101 - set up
        self.echo(f"{tag} round trips at {rate:,.0f}/s: Kafka, then HTTP")
        commands = self.workload.pause_resume(count, scale)
        kafka = await kafka_round_trips(self.settings, self._paced, commands, rate, serve.check)
        await quiesce(self.settings, self.org_id, serve.check, self.echo)
        paths = [self.workload.http_path(c) for c in self.workload.pause_resume(count, scale)]
        sender = self.workload.sender
        http = await http_round_trips(gateway, sender.api_key, sender.namespace, paths, rate)
        await quiesce(self.settings, self.org_id, serve.check, self.echo)
        out = {
            "rate": rate,
            "kafka": kafka,
            "http": http,
            "overhead_p50_ms": http["p50_ms"] - kafka["p50_ms"],
            "overhead_p99_ms": http["p99_ms"] - kafka["p99_ms"],
        }
        self.echo(f"{tag}   {round_trip_line(out)}")
        return out

    async def _baseline(
        self, serve: ServeProcess, rate: float, scale: int, tag: str
    ) -> dict[str, float]:
        """The bare Kafka round trip at ``rate`` for ``--seconds``, serve idle meanwhile."""
        assert self._paced is not None  # noqa: S101 - set up
        self.echo(f"{tag} baseline: bare Kafka round trip at {rate:,.0f}/s")
        count = max(1, round(rate * self.options.latency_seconds))
        records = self.workload.baseline(count, scale)
        base = await kafka_baseline(
            self.settings, self._paced, self.baseline_topic, records, rate, serve.check
        )
        self.echo(f"{tag}   {baseline_line(base)}")
        return base

    async def _latency(self, phases: Phases, rate: float, scale: int) -> dict[str, float]:
        """A latency phase at ``rate`` for ``--seconds``: pause/resume over ``scale`` syncs."""
        count = max(1, round(rate * self.options.latency_seconds))
        return await phases.latency(self.workload.pause_resume(count, scale), rate)


def _git_commit(path: Path) -> str | None:
    """The checkout's commit (short), with ``+changes`` if its files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+changes" if dirty else head


async def _versions(settings: Settings, options: BenchOptions) -> dict[str, str]:
    out = {"kafka": f"{settings.kafka_version} (SYNCLIFE_KAFKA_VERSION of the local stack)"}
    with contextlib.suppress(Exception):
        out["postgres"] = await postgres_version(settings)
    for package in ("synclife", "aiokafka", "asyncpg", "pydantic"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[package] = metadata.version(package)
    checkout = Path(options.serve_path) if options.serve_path else Path(__file__).parents[3]
    commit = _git_commit(checkout)
    if commit is not None:
        out["commit"] = commit
    return out


async def run_bench(settings: Settings, options: BenchOptions, echo: Echo) -> dict[str, Any]:
    """Run every scale of ``options``; the report ``format_table`` prints."""
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="synclife-bench-") as tmp:
        workdir = Path(tmp)
        if options.keep or options.profile:
            workdir = Path(tempfile.mkdtemp(prefix="synclife-bench-"))
        bench = Bench(settings, options, echo, workdir)
        scales: list[dict[str, Any]] = []
        try:
            await bench.setup()
            for scale in sorted(options.scales):
                scales.append(await bench.scale(scale))
        except (BenchError, LoadError):
            for log in sorted(workdir.glob("serve-*.log")):
                echo(f"--- last lines of {log.name} ---")
                for line in log_tail(log, 20):
                    echo(line)
            raise
        finally:
            await bench.teardown()
        return {
            "date": started.isoformat(timespec="seconds"),
            "command": command_line(asdict(options)),
            "machine": {**machine_info(), "kernel": platform.release()},
            "versions": await _versions(settings, options),
            "options": {**asdict(options), "scales": list(options.scales)},
            "settings": {
                "max_batch_records": settings.max_batch_records,
                "relay_batch_size": settings.relay_batch_size,
                "topic_partitions": settings.topic_partitions,
                "db_pool_max_size": settings.db_pool_max_size,
            },
            "scales": scales,
            "notes": bench.notes,
        }
