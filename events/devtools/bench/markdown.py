"""The report for documents and scripts: ``synclife bench --markdown`` (the table as Markdown,
with the machine, the versions and the command line that reproduces it), ``--update FILE``
(that table written into FILE's marked block, between ``BLOCK_START`` and ``BLOCK_END``), and
``--json`` (every figure; NaN, a figure not measured, as null)."""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import asdict
from typing import Any, Final

from events.devtools.bench.options import BenchOptions
from events.devtools.bench.report import loads_line, table_rows

__all__ = [
    "BLOCK_END",
    "BLOCK_START",
    "command_line",
    "format_markdown",
    "markdown_table",
    "parse_table",
    "read_block",
    "replace_block",
    "to_json",
]

BLOCK_START: Final = "<!-- bench:start -->"
BLOCK_END: Final = "<!-- bench:end -->"

#: BenchOptions' fields with the ``synclife bench`` option that sets each (``keep`` and
#: ``pgbench_clients`` change no figure or have no option).
_FLAGS: Final = {
    "commands": "--commands",
    "repeats": "--repeats",
    "rate": "--rate",
    "low_rate": "--low-rate",
    "latency_seconds": "--seconds",
    "pgbench_seconds": "--pgbench-seconds",
    "pgbench": "--pgbench",
    "profile": "--profile",
    "serve_path": "--serve-path",
    "http_rate": "--http-rate",
}
_SEPARATOR: Final = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def command_line(options: dict[str, Any]) -> str:
    """The ``synclife bench`` command that runs with ``options`` (a report's: BenchOptions as a
    dict): every option that differs from the default, so ``--quick``'s are spelled out."""
    defaults = asdict(BenchOptions())
    argv = ["synclife", "bench"]
    scales = tuple(options.get("scales", defaults["scales"]))
    if scales == (1000, 100_000):
        argv.append("--scale")
    elif scales != defaults["scales"]:
        argv += ["--syncs", ",".join(str(n) for n in scales)]
    for field, flag in _FLAGS.items():
        value = options.get(field, defaults[field])
        if field == "http_rate" and not options.get("http"):
            continue
        if value != defaults[field] and value is not None:
            argv += [flag, _plain(value)]
    if options.get("http"):
        argv.append("--http")
    if options.get("shared_database"):
        argv.append("--shared-database")
    return shlex.join(argv)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(titles: list[str], rows: list[tuple[str, list[str]]]) -> str:
    """A Markdown table: the first column left-aligned, the figures right-aligned."""
    lines = [
        "| " + " | ".join(_cell(t) for t in titles) + " |",
        "|---|" + "---:|" * (len(titles) - 1),
    ]
    for label, cells in rows:
        lines.append("| " + " | ".join(_cell(c) for c in (label, *cells)) + " |")
    return "\n".join(lines)


def parse_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The first Markdown table in ``text``: its titles and rows of cells. ``ValueError`` if
    there is none, it has no separator line, or a row has another number of cells."""
    lines = [line.strip() for line in text.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        raise ValueError("no table")
    table: list[str] = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)

    def cells(line: str) -> list[str]:
        inner = line.strip().removeprefix("|").removesuffix("|")
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]

    if len(table) < 3 or not _SEPARATOR.match(table[1]):
        raise ValueError("a table needs a title line, a separator line and a row")
    titles = cells(table[0])
    if len(cells(table[1])) != len(titles):
        raise ValueError("the separator line has another number of columns than the titles")
    rows = [cells(line) for line in table[2:]]
    for n, row in enumerate(rows, start=1):
        if len(row) != len(titles):
            raise ValueError(f"row {n} has {len(row)} cells, not {len(titles)}: {row[0]!r}")
    return titles, rows


def format_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: what ran and when, the table, the machine and the versions, and
    the command that reproduces it."""
    m = report["machine"]
    v = report["versions"]
    options = report["options"]
    command = report.get("command") or command_line(options)
    commit = f" (commit {v['commit']})" if v.get("commit") else ""
    titles, rows = table_rows(report)
    versions = ", ".join(
        f"{name} {v[key].split()[0]}"
        for name, key in (
            ("PostgreSQL", "postgres"),
            ("Kafka", "kafka"),
            ("synclife", "synclife"),
            ("aiokafka", "aiokafka"),
            ("asyncpg", "asyncpg"),
            ("pydantic", "pydantic"),
        )
        if v.get(key)
    )
    settings = ", ".join(f"`{k}` {val}" for k, val in report.get("settings", {}).items())
    parts = [
        f"`{command}`, {report['date']}{commit}. Each figure is the median of "
        f"{options['repeats']} run(s), with [min-max]. Latency runs from each command's "
        "scheduled send time at the offered rate (corrected for coordinated omission); the bare "
        "Kafka round trip is the baseline measured in the same run at the same rate.",
        markdown_table(titles, rows),
        f"The machine: {m.get('cpus')} CPUs ({m.get('cpu', '?')}), {m.get('memory_gib', '?')} "
        f"GiB RAM, Linux {m.get('kernel', '?')}, Python {m.get('python', '?')}. Versions: "
        f"{versions}. Serve's settings: {settings}. {loads_line(report)}.",
    ]
    parts += [f"Note: {note}" for note in report.get("notes", [])]
    parts.append(
        f"To reproduce: `{command}`; with `--markdown --update docs/performance.md` it "
        "replaces this block."
    )
    return "\n\n".join(parts)


def read_block(text: str) -> str:
    """What lies between ``BLOCK_START`` and ``BLOCK_END`` in ``text`` (each exactly once, in
    that order); ``ValueError`` otherwise."""
    if text.count(BLOCK_START) != 1 or text.count(BLOCK_END) != 1:
        raise ValueError(f"expected one {BLOCK_START} and one {BLOCK_END}")
    start = text.index(BLOCK_START) + len(BLOCK_START)
    end = text.index(BLOCK_END)
    if end < start:
        raise ValueError(f"{BLOCK_END} comes before {BLOCK_START}")
    return text[start:end]


def replace_block(text: str, block: str) -> str:
    """``text`` with its marked block's content replaced by ``block``; the rest unchanged."""
    read_block(text)
    head, _, rest = text.partition(BLOCK_START)
    _, _, tail = rest.partition(BLOCK_END)
    return f"{head}{BLOCK_START}\n{block.strip()}\n{BLOCK_END}{tail}"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(report: dict[str, Any]) -> str:
    """The report as strict JSON: a figure not measured (NaN) is null."""
    return json.dumps(_finite(report), default=str, allow_nan=False)
