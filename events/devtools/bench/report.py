"""The bench's figures: one repeat's, their medians and ranges per sync count, synclife's
latency over the bare Kafka baseline against the goals, the progress lines printed as phases
end, and the report as the table ``synclife bench`` prints (``table_rows``: its rows, which
``markdown`` prints too)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from events.devtools.procfs import CPU_USERS

__all__ = [
    "LATENCY_GOALS_MS",
    "RepeatResult",
    "baseline_line",
    "cpu_line",
    "format_table",
    "goals",
    "latency_line",
    "loads_line",
    "over_baseline",
    "round_trip_line",
    "summarise",
    "table_rows",
]

#: At the low rate, synclife's latency at most the bare Kafka baseline's plus these (ms).
LATENCY_GOALS_MS: Final = {"p50": 4.0, "p99": 10.0}
#: The latency figures of a paced phase that have a median per sync count.
LATENCY_FIGURES: Final = (
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "send_late_p99_ms",
    "relay_lag_p50_ms",
    "relay_lag_p99_ms",
    "to_decision_p50_ms",
    "to_observed_p50_ms",
    "tail_to_decision_ms",
    "tail_relay_lag_ms",
    "tail_to_observed_ms",
)
PERCENTILES: Final = ("p50", "p95", "p99")


@dataclass
class RepeatResult:
    """One repeat's figures at one sync count."""

    throughput: float
    publish_rate: float
    fixed_rate: float
    fixed: dict[str, float]
    half_rate: float
    half: dict[str, float]
    pgbench_tps: float
    ratio: float
    not_applied: int
    #: CPU microseconds per command by serve, kafka, postgres and the bench, per phase.
    cpu_max: dict[str, float]
    cpu_fixed: dict[str, float]
    #: ``--http``: round trips over Kafka and over the gateway at the same rate.
    round_trips: dict[str, Any] | None = None
    #: Latency at the low rate (``--low-rate``), and the bare Kafka baseline at the low and
    #: at the fixed rate.
    low_rate: float = math.nan
    low: dict[str, float] | None = None
    baseline_low: dict[str, float] | None = None
    baseline_fixed: dict[str, float] | None = None
    #: CPU ms of the bench's reference workload before the repeat (``reference``): how fast
    #: the machine was.
    reference_ms: float = math.nan
    #: The max-throughput phase's commands per sync row written: how many commands on one
    #: sync its batches coalesced into one load and one update (1.0: none).
    commands_per_write: float = math.nan


def _median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def cpu_line(cpu: dict[str, float]) -> str:
    return "CPU per command, us: " + ", ".join(f"{who} {us:,.0f}" for who, us in cpu.items())


def latency_line(lat: dict[str, float]) -> str:
    return (
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms (p50: scheduled -> decision "
        f"{lat['to_decision_p50_ms']:.1f}, relay lag {lat['relay_lag_p50_ms']:.1f}, "
        f"send -> observed {lat['to_observed_p50_ms']:.1f}; slowest 1%: "
        f"{lat.get('tail_to_decision_ms', math.nan):.1f} / "
        f"{lat.get('tail_relay_lag_ms', math.nan):.1f} / "
        f"{lat.get('tail_to_observed_ms', math.nan):.1f}; pacer late p99 "
        f"{lat.get('send_late_p99_ms', math.nan):.1f})"
    )


def over_baseline(lat: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    """synclife's latency minus the baseline's at the same rate, per percentile (ms)."""
    return {f"{p}_ms": lat[f"{p}_ms"] - base[f"{p}_ms"] for p in PERCENTILES}


def baseline_line(base: dict[str, float], lat: dict[str, float] | None = None) -> str:
    """The baseline's p50 / p99, and synclife's excess over it once ``lat`` is measured."""
    line = f"bare Kafka round trip p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms"
    if lat is not None:
        over = over_baseline(lat, base)
        line += f"; synclife over it: p50 {over['p50_ms']:+.1f}, p99 {over['p99_ms']:+.1f} ms"
    return line


def goals(median: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The latency goals at the low rate: each one's figure (a median of per-repeat
    differences), its limit, and whether it is met (None when not measured)."""
    out: dict[str, dict[str, Any]] = {}
    for p, limit in LATENCY_GOALS_MS.items():
        value = median.get(f"over_low_{p}_ms", math.nan)
        out[f"low_{p}_over_baseline_ms"] = {
            "value": value,
            "at_most": limit,
            "met": None if math.isnan(value) else value <= limit,
        }
    return out


def round_trip_line(rt: dict[str, Any]) -> str:
    k, h = rt["kafka"], rt["http"]
    return (
        f"round trip p50 / p99, ms: Kafka {k['p50_ms']:.1f} / {k['p99_ms']:.1f}, "
        f"HTTP {h['p50_ms']:.1f} / {h['p99_ms']:.1f} (overhead p50 {rt['overhead_p50_ms']:+.1f}; "
        f"gateway CPU {h['gateway_cpu_us']:,.0f} us per request)"
    )


def summarise(
    scale: int, repeats: list[RepeatResult], create_rate: float, peak_rss: float
) -> dict[str, Any]:
    """One sync count's part of the report: medians (NaN where not measured), ranges of the
    main figures, every repeat, and the commands not applied."""

    def med(get: Callable[[RepeatResult], float]) -> float:
        return _median([get(r) for r in repeats])

    def spread(get: Callable[[RepeatResult], float]) -> list[float]:
        return [min(get(r) for r in repeats), max(get(r) for r in repeats)]

    median: dict[str, float] = {
        "throughput": med(lambda r: r.throughput),
        "pgbench_tps": med(lambda r: r.pgbench_tps),
        "ratio": med(lambda r: r.ratio),
        "half_rate": med(lambda r: r.half_rate),
        "create_rate": create_rate,
        "peak_rss_mb": peak_rss,
        "reference_ms": med(lambda r: r.reference_ms),
        "commands_per_write": med(lambda r: r.commands_per_write),
    }
    median["low_rate"] = med(lambda r: r.low_rate)
    for name in LATENCY_FIGURES:
        for phase in ("fixed", "half", "low"):
            values = [(getattr(r, phase) or {}).get(name, math.nan) for r in repeats]
            median[f"{phase}_{name}"] = _median(values)
    for rate in ("fixed", "low"):
        pairs = [(getattr(r, rate), getattr(r, f"baseline_{rate}")) for r in repeats]
        measured = [(lat, base) for lat, base in pairs if lat is not None and base is not None]
        for p in PERCENTILES:
            median[f"baseline_{rate}_{p}_ms"] = _median([b[f"{p}_ms"] for _, b in measured])
            # The median of each repeat's difference: both measured minutes apart at most.
            overs = [over_baseline(lat, base)[f"{p}_ms"] for lat, base in measured]
            median[f"over_{rate}_{p}_ms"] = _median(overs)
    for who in CPU_USERS:
        for phase in ("max", "fixed"):
            values = [getattr(r, f"cpu_{phase}").get(who) for r in repeats]
            known = [v for v in values if v is not None]
            median[f"cpu_{phase}_{who}_us"] = _median(known) if known else math.nan
    trips = [r.round_trips for r in repeats if r.round_trips is not None]
    if trips:
        for path in ("kafka", "http"):
            for p in ("p50_ms", "p99_ms"):
                median[f"rt_{path}_{p}"] = _median([t[path][p] for t in trips])
        median["rt_overhead_p50_ms"] = _median([t["overhead_p50_ms"] for t in trips])
        median["rt_overhead_p99_ms"] = _median([t["overhead_p99_ms"] for t in trips])
        median["rt_rate"] = _median([t["rate"] for t in trips])
        median["gateway_cpu_us"] = _median([t["http"]["gateway_cpu_us"] for t in trips])
    return {
        "syncs": scale,
        "median": median,
        "range": {
            "throughput": spread(lambda r: r.throughput),
            "pgbench_tps": spread(lambda r: r.pgbench_tps),
            "ratio": spread(lambda r: r.ratio),
        },
        "goals": goals(median),
        "repeats": [asdict(r) for r in repeats],
        "not_applied": sum(r.not_applied for r in repeats),
    }


def _num(value: float | None, digits: int = 0, sign: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:{sign},.{digits}f}"


Rows = list[tuple[str, list[str]]]


def table_rows(report: dict[str, Any]) -> tuple[list[str], Rows]:
    """The table's column titles (metric, then one per sync count) and its rows, each a label
    and one cell per sync count ("-" where not measured, e.g. a report of an older bench)."""
    scales = report["scales"]
    options = report["options"]
    rows: Rows = []

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [cell(s) for s in scales]))

    def md(s: dict[str, Any], name: str) -> float:
        value: float = s["median"].get(name, math.nan)
        return value

    def rng(s: dict[str, Any], name: str, digits: int = 0) -> str:
        lo, hi = s["range"][name]
        return f"{_num(md(s, name), digits)} [{_num(lo, digits)}-{_num(hi, digits)}]"

    def lat(prefix: str, names: Sequence[str] = PERCENTILES) -> Callable[[dict[str, Any]], str]:
        return lambda s: " / ".join(_num(md(s, f"{prefix}_{p}_ms"), 1) for p in names)

    def over(rate: str) -> Callable[[dict[str, Any]], str]:
        return lambda s: " / ".join(
            _num(md(s, f"over_{rate}_{p}_ms"), 1, "+") for p in ("p50", "p99")
        )

    rate = options["rate"]
    low = options.get("low_rate", math.nan)
    goal = LATENCY_GOALS_MS
    row("max throughput, commands/s (publish -> result)", lambda s: rng(s, "throughput"))
    row(
        f"pgbench per-command tps ({options['pgbench_clients']} clients)",
        lambda s: rng(s, "pgbench_tps"),
    )
    row("throughput / pgbench", lambda s: rng(s, "ratio", 2))
    row(f"latency at {_num(low)}/s, ms p50 / p95 / p99", lat("low"))
    row(f"bare Kafka round trip at {_num(low)}/s, ms p50 / p95 / p99", lat("baseline_low"))
    row(
        f"latency over the bare round trip at {_num(low)}/s, ms p50 / p99 "
        f"(goal <= +{goal['p50']:g} / +{goal['p99']:g})",
        over("low"),
    )
    row(
        f"  where the slowest 1% at {_num(low)}/s wait, ms: to the decision / relay lag / "
        "relay -> observed",
        lambda s: " / ".join(
            _num(md(s, f"low_tail_{part}_ms"), 1)
            for part in ("to_decision", "relay_lag", "to_observed")
        ),
    )
    row(f"latency at {_num(rate)}/s, ms p50 / p95 / p99", lat("fixed"))
    row(f"bare Kafka round trip at {_num(rate)}/s, ms p50 / p95 / p99", lat("baseline_fixed"))
    row(f"latency over the bare round trip at {_num(rate)}/s, ms p50 / p99", over("fixed"))
    row("latency at 50% of max, ms p50 / p95 / p99", lat("half"))
    row("  (50% of max, commands/s)", lambda s: _num(md(s, "half_rate")))
    row(f"relay lag at {_num(rate)}/s, ms p50 / p99", lat("fixed_relay_lag", ("p50", "p99")))
    row("relay lag at 50% of max, ms p50 / p99", lat("half_relay_lag", ("p50", "p99")))

    def cpu(phase: str) -> Callable[[dict[str, Any]], str]:
        return lambda s: " / ".join(_num(md(s, f"cpu_{phase}_{who}_us")) for who in CPU_USERS)

    users = " / ".join(CPU_USERS)
    row(f"CPU us per command at max: {users}", cpu("max"))
    row(
        "  commands per sync row written at max (a batch's commands on one sync: one load, "
        "one update)",
        lambda s: _num(md(s, "commands_per_write"), 2),
    )
    row(f"CPU us per command at {_num(rate)}/s: {users}", cpu("fixed"))
    if all("rt_http_p50_ms" in s["median"] for s in scales):
        rt_rate = _num(scales[0]["median"]["rt_rate"])
        row(f"round trip at {rt_rate}/s over Kafka, ms p50 / p99", lat("rt_kafka", ("p50", "p99")))
        row(f"round trip at {rt_rate}/s over HTTP, ms p50 / p99", lat("rt_http", ("p50", "p99")))
        row("HTTP overhead over Kafka, ms p50", lambda s: _num(md(s, "rt_overhead_p50_ms"), 1))
        row("gateway CPU us per request", lambda s: _num(md(s, "gateway_cpu_us")))
    row("serve peak RSS, MB", lambda s: _num(md(s, "peak_rss_mb")))
    row("creating the syncs, commands/s", lambda s: _num(md(s, "create_rate")))
    row("commands not applied (should be 0)", lambda s: str(s["not_applied"]))
    row(
        "the machine's speed: CPU ms of the bench's reference workload (lower is faster)",
        lambda s: _num(md(s, "reference_ms"), 1),
    )
    return ["metric", *(f"{s['syncs']:,} syncs" for s in scales)], rows


def loads_line(report: dict[str, Any]) -> str:
    """The 1-minute load average before and after each sync count."""
    loads = ", ".join(
        f"{s['syncs']:,} syncs: {s['loadavg_1m'][0]:.1f} -> {s['loadavg_1m'][1]:.1f}"
        for s in report["scales"]
        if "loadavg_1m" in s
    )
    return f"1-minute load average before -> after ({report['machine'].get('cpus')} CPUs): {loads}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain aligned table, one column per sync count."""
    m = report["machine"]
    v = report["versions"]
    repeats = report["options"]["repeats"]
    lines = [
        f"synclife bench, {report['date']}: {m.get('cpus')} CPUs ({m.get('cpu', '?')}), "
        f"{m.get('memory_gib', '?')} GiB, Postgres {v.get('postgres', '?')}, "
        f"Kafka {v['kafka'].split()[0]}; median of {repeats} run(s) [min-max]",
        "",
    ]
    titles, rows = table_rows(report)
    width0 = max(len(titles[0]), *(len(label) for label, _ in rows))
    widths = [
        max(len(titles[i + 1]), *(len(cells[i]) for _, cells in rows))
        for i in range(len(titles) - 1)
    ]
    lines.append(
        "  ".join(
            [
                titles[0].ljust(width0),
                *(h.rjust(w) for h, w in zip(titles[1:], widths, strict=True)),
            ]
        )
    )
    lines.append("  ".join(["-" * width0, *("-" * w for w in widths)]))
    for label, cells in rows:
        lines.append(
            "  ".join(
                [label.ljust(width0), *(c.rjust(w) for c, w in zip(cells, widths, strict=True))]
            )
        )
    lines.append(loads_line(report))
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
