"""``synclife stack``, ``demo`` and ``bench``: the local Kafka and Postgres, the walkthrough
and the benchmark (``events.devtools``, imported inside each command)."""

from __future__ import annotations

import json
import shlex
from typing import Any

import click

from events.cli.common import echo_err, load_settings, run


@click.group()
def stack() -> None:
    """The local Kafka (KRaft) and Postgres used by the demo and the tests."""


@stack.command("up")
@run
async def stack_up() -> None:
    """Start (or reuse) Kafka and Postgres; print `export SYNCLIFE_...=...` lines.

    Progress goes to stderr, so `eval "$(synclife stack up)"` sets the variables.
    """
    from events.devtools import stack as local_stack

    env = await local_stack.up(load_settings(), echo_err)
    for name, value in env.items():
        click.echo(f"export {name}={shlex.quote(value)}")


@stack.command("down")
@run
async def stack_down() -> None:
    """Stop the Kafka and Postgres that `stack up` started (their data is kept)."""
    from events.devtools import stack as local_stack

    await local_stack.down(load_settings(), echo_err)


@stack.command("status")
@run
async def stack_status() -> None:
    """Say whether each service is up."""
    from events.devtools import stack as local_stack

    for name, state in (await local_stack.status(load_settings())).items():
        click.echo(f"{name}: {state}")


@click.command()
@run
async def demo() -> None:
    """Start everything and walk one sync through create, pause, resume, printing what happens."""
    from events.devtools.demo import run_demo

    await run_demo(load_settings(), click.echo, echo_err)


@click.command()
@click.option(
    "--syncs",
    "syncs_",
    default=None,
    help="Sync counts to run at, comma-separated (default 1000; --quick 200).",
)
@click.option("--scale", is_flag=True, help="Run at 1,000 and at 100,000 syncs.")
@click.option("--commands", type=int, default=None, help="Commands of the throughput phase.")
@click.option("--repeats", type=int, default=None, help="Runs per sync count (median; 3).")
@click.option("--rate", type=float, default=1000.0, help="The fixed offered load, commands/s.")
@click.option("--seconds", type=float, default=None, help="Length of each latency phase (10).")
@click.option("--pgbench-seconds", type=float, default=None, help="Length of each pgbench run.")
@click.option("--pgbench", "pgbench_path", default=None, help="The pgbench binary.")
@click.option(
    "--profile",
    type=click.Path(dir_okay=False, resolve_path=True),
    default=None,
    help="Write cProfile stats of serve to this file.",
)
@click.option(
    "--serve-path",
    type=click.Path(exists=True, file_okay=False, resolve_path=True),
    default=None,
    help="Run serve from this checkout (e.g. a git worktree of another commit, with the same "
    "database schema), to compare.",
)
@click.option("--keep", is_flag=True, help="Keep the topics, tenant, syncs and scratch schema.")
@click.option(
    "--http",
    is_flag=True,
    help="Also compare pause/resume round trips over a `synclife gateway` with Kafka's.",
)
@click.option("--http-rate", type=float, default=None, help="Their offered load (200/s).")
@click.option("--quick", is_flag=True, help="A smoke check: small, one run.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@run
async def bench(
    syncs_: str | None,
    scale: bool,
    commands: int | None,
    repeats: int | None,
    rate: float,
    seconds: float | None,
    pgbench_seconds: float | None,
    pgbench_path: str | None,
    profile: str | None,
    serve_path: str | None,
    keep: bool,
    http: bool,
    http_rate: float | None,
    quick: bool,
    as_json: bool,
) -> None:
    """Throughput, latency, relay lag and RSS of `synclife serve` against the real stack,
    with pgbench's per-command transaction on the same Postgres as the baseline."""
    from events.devtools.bench import BenchOptions, format_table, run_bench

    scales: tuple[int, ...] | None = None
    if syncs_:
        try:
            scales = tuple(int(n.replace("_", "")) for n in syncs_.split(",") if n.strip())
        except ValueError as exc:
            raise click.BadParameter(f"--syncs: {exc}") from exc
    elif scale:
        scales = (1000, 100_000)
    overrides: dict[str, Any] = {
        "scales": scales,
        "commands": commands,
        "repeats": repeats,
        "rate": rate,
        "latency_seconds": seconds,
        "pgbench_seconds": pgbench_seconds,
        "pgbench": pgbench_path,
        "profile": profile,
        "serve_path": serve_path,
        "keep": keep,
        "http": http,
        "http_rate": http_rate,
    }
    if quick:
        options = BenchOptions.quick(**overrides)
    else:
        options = BenchOptions(**{k: v for k, v in overrides.items() if v is not None})
    if any(n < 1 for n in options.scales) or options.commands < 1 or options.repeats < 1:
        raise click.BadParameter("sync counts, --commands and --repeats must be >= 1")
    report = await run_bench(load_settings(), options, echo_err)
    click.echo(json.dumps(report, default=str) if as_json else format_table(report))
