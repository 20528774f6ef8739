"""The bench's figures: one repeat's, their medians and ranges per sync count, the progress
lines printed as phases end, and the report as the table ``synclife bench`` prints."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from events.devtools.procfs import CPU_USERS

__all__ = [
    "RepeatResult",
    "cpu_line",
    "format_table",
    "latency_line",
    "round_trip_line",
    "summarise",
]


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


def _median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def cpu_line(cpu: dict[str, float]) -> str:
    return "CPU per command, us: " + ", ".join(f"{who} {us:,.0f}" for who, us in cpu.items())


def latency_line(lat: dict[str, float]) -> str:
    return (
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms (p50: publish -> decision "
        f"{lat['to_decision_p50_ms']:.1f}, relay lag {lat['relay_lag_p50_ms']:.1f}, "
        f"send -> observed {lat['to_observed_p50_ms']:.1f})"
    )


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
    }
    for name in (
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "relay_lag_p50_ms",
        "relay_lag_p99_ms",
        "to_decision_p50_ms",
        "to_observed_p50_ms",
    ):
        median[f"fixed_{name}"] = med(lambda r, n=name: r.fixed[n])  # type: ignore[misc]
        median[f"half_{name}"] = med(lambda r, n=name: r.half[n])  # type: ignore[misc]
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
        "repeats": [asdict(r) for r in repeats],
        "not_applied": sum(r.not_applied for r in repeats),
    }


def _num(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain aligned table, one column per sync count."""
    scales = report["scales"]
    m = report["machine"]
    v = report["versions"]
    repeats = report["options"]["repeats"]
    lines = [
        f"synclife bench, {report['date']}: {m.get('cpus')} CPUs ({m.get('cpu', '?')}), "
        f"{m.get('memory_gib', '?')} GiB, Postgres {v.get('postgres', '?')}, "
        f"Kafka {v['kafka'].split()[0]}; median of {repeats} run(s) [min-max]",
        "",
    ]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [cell(s) for s in scales]))

    def rng(s: dict[str, Any], name: str, digits: int = 0) -> str:
        lo, hi = s["range"][name]
        return f"{_num(s['median'][name], digits)} [{_num(lo, digits)}-{_num(hi, digits)}]"

    def lat(s: dict[str, Any], prefix: str) -> str:
        md = s["median"]
        return " / ".join(_num(md[f"{prefix}_{p}_ms"], 1) for p in ("p50", "p95", "p99"))

    def lag(s: dict[str, Any], prefix: str) -> str:
        md = s["median"]
        return " / ".join(_num(md[f"{prefix}_relay_lag_{p}_ms"], 1) for p in ("p50", "p99"))

    rate = report["options"]["rate"]
    row("max throughput, commands/s (publish -> result)", lambda s: rng(s, "throughput"))
    row(
        f"pgbench per-command tps ({report['options']['pgbench_clients']} clients)",
        lambda s: rng(s, "pgbench_tps"),
    )
    row("throughput / pgbench", lambda s: rng(s, "ratio", 2))
    row(f"latency at {rate:,.0f}/s, ms p50 / p95 / p99", lambda s: lat(s, "fixed"))
    row("latency at 50% of max, ms p50 / p95 / p99", lambda s: lat(s, "half"))
    row("  (50% of max, commands/s)", lambda s: _num(s["median"]["half_rate"]))
    row(f"relay lag at {rate:,.0f}/s, ms p50 / p99", lambda s: lag(s, "fixed"))
    row("relay lag at 50% of max, ms p50 / p99", lambda s: lag(s, "half"))

    def cpu(s: dict[str, Any], phase: str) -> str:
        return " / ".join(_num(s["median"][f"cpu_{phase}_{who}_us"]) for who in CPU_USERS)

    users = " / ".join(CPU_USERS)
    row(f"CPU us per command at max: {users}", lambda s: cpu(s, "max"))
    row(f"CPU us per command at {rate:,.0f}/s: {users}", lambda s: cpu(s, "fixed"))
    if all("rt_http_p50_ms" in s["median"] for s in scales):
        rt_rate = scales[0]["median"]["rt_rate"]

        def trip(s: dict[str, Any], path: str) -> str:
            return " / ".join(_num(s["median"][f"rt_{path}_{p}_ms"], 1) for p in ("p50", "p99"))

        row(f"round trip at {rt_rate:,.0f}/s over Kafka, ms p50 / p99", lambda s: trip(s, "kafka"))
        row(f"round trip at {rt_rate:,.0f}/s over HTTP, ms p50 / p99", lambda s: trip(s, "http"))
        overhead = "rt_overhead_p50_ms"
        row("HTTP overhead over Kafka, ms p50", lambda s: _num(s["median"][overhead], 1))
        row("gateway CPU us per request", lambda s: _num(s["median"]["gateway_cpu_us"]))
    row("serve peak RSS, MB", lambda s: _num(s["median"]["peak_rss_mb"]))
    row("creating the syncs, commands/s", lambda s: _num(s["median"]["create_rate"]))
    row("commands not applied (should be 0)", lambda s: str(s["not_applied"]))

    titles = ["metric", *(f"{s['syncs']:,} syncs" for s in scales)]
    width0 = max(len(titles[0]), *(len(label) for label, _ in rows))
    widths = [
        max(len(titles[i + 1]), *(len(cells[i]) for _, cells in rows)) for i in range(len(scales))
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
    loads = ", ".join(
        f"{s['syncs']:,} syncs: {s['loadavg_1m'][0]:.1f} -> {s['loadavg_1m'][1]:.1f}"
        for s in scales
    )
    lines.append(f"1-minute load average before -> after ({m.get('cpus')} CPUs): {loads}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
