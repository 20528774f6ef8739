"""The benchmark's arithmetic and its table (the runs themselves need the real stack)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

from events.devtools.bench import BenchOptions, format_table
from events.devtools.bench.observers import percentile
from events.devtools.bench.report import RepeatResult, summarise
from events.devtools.loadgen import pacing_delay
from events.devtools.procfs import CpuMeter


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def test_pacing_sleeps_until_the_next_command_is_due_and_at_least_a_millisecond() -> None:
    # 100/s from t=10: the 6th command (5 sent) is due at 10.05.
    assert math.isclose(pacing_delay(10.0, 5, 100, 10.041), 0.009)
    # Due already (behind), or sooner than 1 ms: 1 ms, then the ones due go out together.
    assert pacing_delay(10.0, 5, 100, 10.2) == 0.001
    assert pacing_delay(10.0, 5, 2000, 10.0024) == 0.001


def test_quick_keeps_what_is_given() -> None:
    quick = BenchOptions.quick(scales=None, commands=500)
    assert quick.repeats == 1 and quick.scales == (200,) and quick.commands == 500


def _repeat(throughput: float, tps: float, serve_us: float = 100.0) -> RepeatResult:
    latency = {
        "offered_rate": 1000.0,
        "p50_ms": 5.0,
        "p95_ms": 9.0,
        "p99_ms": 12.0,
        "max_ms": 20.0,
        "relay_lag_p50_ms": 1.0,
        "relay_lag_p99_ms": 3.0,
        "to_decision_p50_ms": 2.0,
        "to_observed_p50_ms": 1.5,
    }
    return RepeatResult(
        throughput=throughput,
        publish_rate=50_000.0,
        fixed_rate=1000.0,
        fixed=latency,
        half_rate=throughput / 2,
        half=latency,
        pgbench_tps=tps,
        ratio=throughput / tps,
        not_applied=0,
        cpu_max={"serve": serve_us, "bench": 50.0},
        cpu_fixed={"serve": serve_us * 2, "bench": 60.0},
    )


def test_medians_and_table() -> None:
    scale = summarise(
        1000, [_repeat(3000, 2000, 90), _repeat(5000, 2500, 300), _repeat(4000, 2000, 110)], 0, 80
    )
    scale["loadavg_1m"] = [0.5, 1.5]
    assert scale["median"]["throughput"] == 4000
    assert scale["median"]["ratio"] == 2.0
    assert scale["range"]["throughput"] == [3000, 5000]
    assert scale["median"]["cpu_max_serve_us"] == 110
    assert scale["median"]["cpu_fixed_serve_us"] == 220
    assert math.isnan(scale["median"]["cpu_max_kafka_us"])  # not measured: shown as "-"
    report = {
        "date": "2026-01-01T00:00:00+00:00",
        "machine": {"cpus": 2, "cpu": "test", "memory_gib": 4.0},
        "versions": {"kafka": "4.1.1 (setting)", "postgres": "15"},
        "options": {"repeats": 3, "rate": 1000.0, "pgbench_clients": 4},
        "scales": [scale],
        "notes": ["a note"],
    }
    table = format_table(report)
    assert "4,000 [3,000-5,000]" in table
    assert "2.00 [1.50-2.00]" in table
    assert "5.0 / 9.0 / 12.0" in table
    assert "note: a note" in table
    assert "110 / - / - / 50" in table  # CPU per command: serve / kafka / postgres / bench
    widths = {len(line) for line in table.splitlines()[2:-2]}
    assert len(widths) == 1, "the table's rows are aligned"


def _trips(kafka_p50: float, http_p50: float) -> dict[str, Any]:
    return {
        "rate": 200.0,
        "kafka": {"p50_ms": kafka_p50, "p99_ms": kafka_p50 * 3},
        "http": {"p50_ms": http_p50, "p99_ms": http_p50 * 3, "gateway_cpu_us": 400.0},
        "overhead_p50_ms": http_p50 - kafka_p50,
        "overhead_p99_ms": (http_p50 - kafka_p50) * 3,
    }


def test_round_trips_over_http_are_summarised_next_to_kafka() -> None:
    repeats = [_repeat(3000, 2000, 90), _repeat(4000, 2000, 90), _repeat(5000, 2000, 90)]
    for repeat, (k, h) in zip(repeats, [(10.0, 14.0), (12.0, 20.0), (11.0, 13.0)], strict=True):
        repeat.round_trips = _trips(k, h)
    scale = summarise(1000, repeats, 0, 80)
    scale["loadavg_1m"] = [0.5, 1.5]
    median = scale["median"]
    assert (median["rt_kafka_p50_ms"], median["rt_http_p50_ms"]) == (11.0, 14.0)
    assert median["rt_overhead_p50_ms"] == 4.0  # the median of the overheads (4, 8, 2), not 14 - 11
    table = format_table(
        {
            "date": "2026-01-01T00:00:00+00:00",
            "machine": {"cpus": 2},
            "versions": {"kafka": "4.1.1"},
            "options": {"repeats": 3, "rate": 1000.0, "pgbench_clients": 4},
            "scales": [scale],
        }
    )
    assert "round trip at 200/s over HTTP, ms p50 / p99" in table
    assert "14.0 / 42.0" in table
    without = summarise(1000, [_repeat(3000, 2000, 90)], 0, 80)
    assert "rt_http_p50_ms" not in without["median"]  # no --http: no such rows


def test_cpu_meter_reads_the_cpu_time_of_a_process_and_of_children() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    short = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter = CpuMeter(busy.pid, {"postgres": os.getpid()})  # its children: busy and short
        before = meter.read()
        deadline = before["serve"][busy.pid] + 0.3
        while meter.read()["serve"][busy.pid] < deadline:  # until busy has burnt 0.3 s of CPU
            pass
        short.kill()  # a child that exits between the readings: its time goes with it
        short.wait()
        after = meter.read()
        per = CpuMeter.per_command(before, after, 1000)
        assert per["serve"] >= 300  # 0.3 s over 1,000 commands
        # "postgres" here: this process and its children, the busy one included, the exited
        # one left out rather than subtracted.
        assert per["postgres"] >= per["serve"]
        assert short.pid in before["postgres"] and short.pid not in after["postgres"]
        assert per["bench"] > 0  # this process polled meanwhile
        assert "kafka" not in per
    finally:
        busy.kill()
        busy.wait()
