"""The benchmark's arithmetic and its table (the runs themselves need the real stack)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from events.cli.dev import bench, bench_options
from events.devtools.bench import BenchOptions, format_table
from events.devtools.bench.markdown import (
    BLOCK_END,
    BLOCK_START,
    command_line,
    format_markdown,
    parse_table,
    read_block,
    replace_block,
    to_json,
)
from events.devtools.bench.observers import (
    commands_per_write,
    latency_figures,
    percentile,
    tail_split,
)
from events.devtools.bench.reference import reference_ms
from events.devtools.bench.report import RepeatResult, goals, over_baseline, summarise, table_rows
from events.devtools.loadgen import Command, due_count, due_time, pacing_delay, send_paced
from events.devtools.procfs import CpuMeter
from events.devtools.stack.databases import with_database
from events.service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


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


def test_the_schedule_puts_command_i_at_start_plus_i_over_rate() -> None:
    assert due_time(10.0, 0, 200) == 10.0
    assert math.isclose(due_time(10.0, 7, 200), 10.035)
    # Due: the first at once, then one more each 1/rate; never more than there are.
    assert due_count(10.0, 200, 50, 10.0) == 1
    assert due_count(10.0, 200, 50, 10.0049) == 1
    assert due_count(10.0, 200, 50, 10.005) == 2
    assert due_count(10.0, 200, 50, 10.1) == 21
    assert due_count(10.0, 200, 50, 99.0) == 50
    assert due_count(10.0, 200, 50, 9.0) == 0  # before the start (a clock read early)


class _StallingProducer:
    """Takes sends like AIOKafkaProducer.send (a future of the acknowledgement), but the
    third send blocks for 50 ms, as a full buffer or a metadata refresh does."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, topic: str, **_: Any) -> asyncio.Future[None]:
        self.sent += 1
        if self.sent == 3:
            await asyncio.sleep(0.05)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_paced_sends_report_their_scheduled_time_not_when_the_pacer_got_to_them() -> None:
    commands = [Command(f"c{i}", "s", "sync.pause", b"{}", []) for i in range(8)]
    seen: list[tuple[str, float, float]] = []
    before = time.time()
    await send_paced(
        _StallingProducer(),
        "topic",
        commands,
        100.0,
        lambda c, due: seen.append((c.command_id, due, time.time())),
    )
    assert [c for c, _, _ in seen] == [f"c{i}" for i in range(8)]
    dues = [due for _, due, _ in seen]
    assert before <= dues[0] <= seen[0][2]
    # Exactly 10 ms apart, the stall notwithstanding: the stall shows as latency.
    assert all(math.isclose(b - a, 0.01, abs_tol=1e-6) for a, b in itertools.pairwise(dues))
    # What a send-time origin would have missed: the fourth went out 50 ms after the third's
    # slot at least, so at least 40 ms after its own.
    assert all(sent >= due for _, due, sent in seen)
    assert seen[3][2] - seen[3][1] >= 0.04


def test_latency_figures_with_and_without_the_pacers_lateness() -> None:
    latency = [float(v) for v in range(1, 201)]
    figures = latency_figures(latency, [0.0] * 98 + [5.0, 30.0])
    assert (figures["p50_ms"], figures["p95_ms"], figures["p99_ms"]) == (100, 190, 198)
    assert figures["max_ms"] == 200
    assert (figures["send_late_p99_ms"], figures["send_late_max_ms"]) == (5.0, 30.0)
    assert "send_late_p99_ms" not in latency_figures(latency)
    assert math.isnan(latency_figures([])["p50_ms"])


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


def _lat(p50: float, p99: float) -> dict[str, float]:
    return {"p50_ms": p50, "p95_ms": (p50 + p99) / 2, "p99_ms": p99}


def _with_baseline(
    repeat: RepeatResult, low: tuple[float, float], base: tuple[float, float]
) -> RepeatResult:
    repeat.low_rate = 200.0
    repeat.low = {**repeat.fixed, **_lat(*low)}
    repeat.baseline_low = _lat(*base)
    repeat.baseline_fixed = _lat(base[0] + 1, base[1] + 2)
    return repeat


def _report(scales: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    return {
        "date": "2026-01-01T00:00:00+00:00",
        "command": "synclife bench --scale",
        "machine": {"cpus": 2, "cpu": "test", "memory_gib": 4.0, "python": "3.11.7"},
        "versions": {"kafka": "4.1.1 (setting)", "postgres": "15.18", "commit": "abc1234"},
        "options": {**asdict(BenchOptions()), "scales": [s["syncs"] for s in scales], **options},
        "settings": {"max_batch_records": 500},
        "scales": scales,
        "notes": [],
    }


def _baseline_scale(syncs: int = 1000) -> dict[str, Any]:
    # Over the baseline per repeat: p50 3, 6, 1 (median 3); p99 8, 20, 12 (median 12).
    repeats = [
        _with_baseline(_repeat(3000, 2000), (5.0, 20.0), (2.0, 12.0)),
        _with_baseline(_repeat(4000, 2000), (9.0, 40.0), (3.0, 20.0)),
        _with_baseline(_repeat(5000, 2000), (4.0, 22.0), (3.0, 10.0)),
    ]
    scale = summarise(syncs, repeats, 0, 80)
    scale["loadavg_1m"] = [0.5, 1.5]
    return scale


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
    assert _row(table, "commands per sync row written") == "-"  # not measured by this report
    widths = {len(line) for line in table.splitlines()[2:-2]}
    assert len(widths) == 1, "the table's rows are aligned"


def _row(table: str, label: str) -> str:
    """The cell of the one-column table's row whose label holds ``label``."""
    (line,) = [line for line in table.splitlines() if label in line]
    return line.split()[-1]


def test_commands_per_write_is_events_over_distinct_sync_and_batch_time() -> None:
    changes = [(b"s1", b"t1")] * 3 + [(b"s2", b"t1"), (b"s1", b"t2")]
    assert commands_per_write(changes) == pytest.approx(5 / 3)
    assert commands_per_write([(b"s1", b"t1"), (b"s2", b"t1")]) == 1.0
    assert math.isnan(commands_per_write([]))
    repeats = [_repeat(3000, 2000), _repeat(4000, 2000), _repeat(5000, 2000)]
    for repeat, per_write in zip(repeats, (2.5, 1.0, 3.0), strict=True):
        repeat.commands_per_write = per_write
    scale = summarise(1000, repeats, 0, 80)
    assert scale["median"]["commands_per_write"] == 2.5
    scale["loadavg_1m"] = [0.5, 1.5]
    assert _row(format_table(_report([scale])), "commands per sync row written") == "2.50"


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


def test_latency_over_the_baseline_is_the_median_of_each_repeats_difference() -> None:
    assert over_baseline(_lat(5.0, 20.0), _lat(2.0, 12.0)) == {
        "p50_ms": 3.0,
        "p95_ms": 5.5,
        "p99_ms": 8.0,
    }
    median = _baseline_scale()["median"]
    assert (median["low_p50_ms"], median["baseline_low_p50_ms"]) == (5.0, 3.0)
    assert median["over_low_p50_ms"] == 3.0  # median of (3, 6, 1), not 5 - 3 = 2
    assert median["over_low_p99_ms"] == 12.0  # median of (8, 20, 12)
    assert median["over_fixed_p50_ms"] == 1.0  # fixed 5 against 3, 4, 4
    assert median["low_rate"] == 200


def test_the_goals_at_the_low_rate_are_met_or_not_or_unknown() -> None:
    scale = _baseline_scale()
    assert scale["goals"] == {
        "low_p50_over_baseline_ms": {"value": 3.0, "at_most": 4.0, "met": True},
        "low_p99_over_baseline_ms": {"value": 12.0, "at_most": 10.0, "met": False},
    }
    unknown = goals({})["low_p50_over_baseline_ms"]
    assert unknown["met"] is None and math.isnan(unknown["value"])
    without = summarise(1000, [_repeat(3000, 2000)], 0, 80)  # an older repeat: no baseline
    assert without["goals"]["low_p99_over_baseline_ms"]["met"] is None
    assert math.isnan(without["median"]["over_fixed_p50_ms"])


def test_the_json_report_carries_every_figure_and_no_nan() -> None:
    scale = _baseline_scale()
    text = to_json(_report([scale]))
    assert "NaN" not in text
    data = json.loads(text)
    median = data["scales"][0]["median"]
    for key in (
        "throughput",
        "ratio",
        "fixed_p50_ms",
        "fixed_p99_ms",
        "fixed_send_late_p99_ms",
        "half_p50_ms",
        "low_p50_ms",
        "low_p99_ms",
        "baseline_low_p50_ms",
        "baseline_low_p99_ms",
        "baseline_fixed_p50_ms",
        "baseline_fixed_p99_ms",
        "over_low_p50_ms",
        "over_low_p99_ms",
        "over_fixed_p50_ms",
        "over_fixed_p99_ms",
        "cpu_max_serve_us",
        "peak_rss_mb",
    ):
        assert key in median, key
    assert median["cpu_max_kafka_us"] is None  # not measured: null, not NaN
    assert data["scales"][0]["goals"]["low_p50_over_baseline_ms"]["met"] is True
    assert data["scales"][0]["repeats"][0]["baseline_low"]["p99_ms"] == 12.0


def test_the_table_puts_the_low_rate_next_to_its_baseline_and_the_difference() -> None:
    titles, rows = table_rows(_report([_baseline_scale(1000), _baseline_scale(100_000)]))
    assert titles == ["metric", "1,000 syncs", "100,000 syncs"]
    cells = dict(rows)
    assert cells["latency at 200/s, ms p50 / p95 / p99"][0] == "5.0 / 13.0 / 22.0"
    assert cells["bare Kafka round trip at 200/s, ms p50 / p95 / p99"][1] == "3.0 / 7.0 / 12.0"
    over = "latency over the bare round trip at 200/s, ms p50 / p99 (goal <= +4 / +10)"
    assert cells[over] == ["+3.0 / +12.0", "+3.0 / +12.0"]
    assert cells["latency over the bare round trip at 1,000/s, ms p50 / p99"][0] == "+1.0 / -2.0"
    old = table_rows(_report([summarise(1000, [_repeat(3000, 2000)], 0, 80)]))[1]
    assert dict(old)[over] == ["- / -"]  # a report without the baseline still prints


def test_markdown_has_the_table_the_machine_the_versions_and_the_command() -> None:
    report = _report([_baseline_scale(1000), _baseline_scale(100_000)], http=False)
    text = format_markdown(report)
    titles, rows = parse_table(text)
    assert titles == ["metric", "1,000 syncs", "100,000 syncs"]
    assert len(rows) == len(table_rows(report)[1])
    assert ["throughput / pgbench", "1.50 [1.50-2.50]", "1.50 [1.50-2.50]"] not in rows
    assert ["throughput / pgbench", "2.00 [1.50-2.50]", "2.00 [1.50-2.50]"] in rows
    assert "`synclife bench --scale`" in text
    assert "(commit abc1234)" in text
    assert "2 CPUs (test), 4.0 GiB RAM" in text and "PostgreSQL 15.18, Kafka 4.1.1" in text
    assert "`max_batch_records` 500" in text
    assert BLOCK_START not in text  # --update puts the markers around it


def test_parse_table_rejects_what_is_not_one_table() -> None:
    good = "| metric | 1 |\n|---|---:|\n| a \\| b | 2 |\n\nafter"
    assert parse_table(good) == (["metric", "1"], [["a | b", "2"]])
    with pytest.raises(ValueError, match="no table"):
        parse_table("no table here")
    with pytest.raises(ValueError, match="separator"):
        parse_table("| metric | 1 |\n| a | 2 |\n| b | 3 |")
    with pytest.raises(ValueError, match="row 2 has 3 cells"):
        parse_table("| metric | 1 |\n|---|---:|\n| a | 2 |\n| b | 3 | 4 |")


def test_the_marked_block_is_replaced_and_nothing_else() -> None:
    doc = f"# Title\n\nbefore\n{BLOCK_START}\nold table\n{BLOCK_END}\nafter\n"
    new = replace_block(doc, "| metric |\n|---|\n| x |\n")
    assert (
        new == f"# Title\n\nbefore\n{BLOCK_START}\n| metric |\n|---|\n| x |\n{BLOCK_END}\nafter\n"
    )
    assert replace_block(new, "old table") == doc
    for broken in (
        "no markers",
        f"{BLOCK_END} {BLOCK_START}",
        f"{BLOCK_START}{BLOCK_START}{BLOCK_END}",
    ):
        with pytest.raises(ValueError):
            replace_block(broken, "x")


def test_docs_performance_has_one_marked_block_holding_a_table() -> None:
    block = read_block((ROOT / "docs" / "performance.md").read_text(encoding="utf-8"))
    titles, rows = parse_table(block)
    assert titles[0] == "metric" and len(titles) >= 2
    assert any(label.startswith("max throughput") for label, *_ in rows)


@pytest.mark.parametrize(
    "options",
    [
        BenchOptions(),
        BenchOptions(scales=(1000, 100_000), http=True),
        BenchOptions(scales=(1000, 20_000), rate=800.0, low_rate=150.0, http=True, http_rate=50.0),
        BenchOptions.quick(http=True),
        BenchOptions(latency_seconds=2.5, repeats=5, commands=5000),
        BenchOptions.quick(shared_database=True),
    ],
)
def test_the_command_line_runs_the_same_options(options: BenchOptions) -> None:
    line = command_line(asdict(options))
    argv = shlex.split(line)
    assert argv[:2] == ["synclife", "bench"]
    ctx = bench.make_context("bench", argv[2:])
    params = {k: v for k, v in ctx.params.items() if k not in ("as_json", "markdown")}
    for name in ("update_path", "from_json"):
        params.pop(name)
    params["latency_seconds"] = params.pop("seconds")
    params["pgbench"] = params.pop("pgbench_path")
    params["keep"] = params["keep"] or None
    params["http"] = params["http"] or None
    params["shared_database"] = params["shared_database"] or None
    assert bench_options(**params) == options
    if options == BenchOptions():
        assert line == "synclife bench"


def test_bench_update_writes_a_saved_report_into_the_marked_block(tmp_path: Path) -> None:
    saved = tmp_path / "report.json"
    saved.write_text(to_json(_report([_baseline_scale()])), encoding="utf-8")
    doc = tmp_path / "performance.md"
    doc.write_text(f"# P\n\n{BLOCK_START}\nold\n{BLOCK_END}\n\nkept\n", encoding="utf-8")
    args = ["--from-json", str(saved), "--update", str(doc)]
    result = CliRunner().invoke(bench, args)
    assert result.exit_code == 0, result.output
    text = doc.read_text(encoding="utf-8")
    assert "old" not in text and text.endswith(f"{BLOCK_END}\n\nkept\n")
    titles, rows = parse_table(read_block(text))
    assert titles == ["metric", "1,000 syncs"] and len(rows) > 10
    assert "| throughput / pgbench |" in result.output  # printed as well


def test_bench_refuses_a_file_without_the_block_before_running(tmp_path: Path) -> None:
    doc = tmp_path / "plain.md"
    doc.write_text("# no block\n", encoding="utf-8")
    result = CliRunner().invoke(bench, ["--quick", "--update", str(doc)])
    assert result.exit_code == 2 and "expected one <!-- bench:start -->" in result.output
    result = CliRunner().invoke(bench, ["--json", "--markdown"])
    assert result.exit_code == 2 and "one of them" in result.output


def test_tail_split_reports_where_the_slowest_commands_waited() -> None:
    # 100 commands: 99 fast ones decided in 2 ms; the slowest waited 40 ms for the relay.
    latency = [5.0] * 99 + [50.0]
    to_decision = [2.0] * 99 + [3.0]
    lags = [1.0] * 99 + [40.0]
    observed = [2.0] * 99 + [7.0]
    split = tail_split(latency, to_decision, lags, observed)
    assert split == {
        "tail_to_decision_ms": 3.0,
        "tail_relay_lag_ms": 40.0,
        "tail_to_observed_ms": 7.0,
    }
    assert math.isnan(tail_split([], [], [], [])["tail_relay_lag_ms"])


def test_the_reference_workload_takes_cpu_time_and_its_median_is_reported() -> None:
    measured = reference_ms(rounds=3)
    assert 0 < measured < 10_000
    rows = [_repeat(1000, 500), _repeat(1100, 500), _repeat(900, 500)]
    for row, ms in zip(rows, (30.0, 50.0, 40.0), strict=True):
        row.reference_ms = ms
    summary = summarise(1000, rows, 100.0, 80.0)
    assert summary["median"]["reference_ms"] == 40.0
    _, table = table_rows({"scales": [summary], "options": {"rate": 1000.0, "pgbench_clients": 4}})
    [line] = [r for r in table if r[0].startswith("the machine's speed")]
    assert line[1] == ["40.0"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://u:p%40ss@127.0.0.1:15432/synclife",
            "postgresql://u:p%40ss@127.0.0.1:15432/synclife_bench_x",
        ),
        (
            "postgresql://u:pw@db1:5432,db2:5432/app?target_session_attrs=read-write",
            "postgresql://u:pw@db1:5432,db2:5432/synclife_bench_x?target_session_attrs=read-write",
        ),
        ("postgresql://u@localhost", "postgresql://u@localhost/synclife_bench_x"),
    ],
)
def test_a_run_s_own_database_is_on_the_same_servers(url: str, expected: str) -> None:
    settings = Settings(database_url=SecretStr(url))
    assert with_database(settings, "synclife_bench_x").database_url.get_secret_value() == expected
