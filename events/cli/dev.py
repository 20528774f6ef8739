"""``synclife stack``, ``demo`` and ``bench``: the local Kafka and Postgres, the walkthrough
and the benchmark (``events.devtools``, imported inside each command)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from events.cli.common import echo_err, load_settings, run

if TYPE_CHECKING:
    from events.devtools.bench import BenchOptions


@click.group()
def stack() -> None:
    """The local Kafka (KRaft) and Postgres used by the demo and the tests."""


_CLUSTER = click.option(
    "--cluster",
    is_flag=True,
    help="Three Kafka brokers (replication 3, min.insync.replicas 2) and a Postgres primary "
    "with a synchronous standby, on ports 29092-29097 and 29432-29433 (docs/operating.md).",
)


@stack.command("up")
@_CLUSTER
@click.option(
    "--reset-promoted",
    is_flag=True,
    help="With --cluster, after a failover (the standby promoted): drop the promoted "
    "server's data and make the standby again from the old primary. Stop every serve "
    "process first.",
)
@run
async def stack_up(cluster: bool, reset_promoted: bool) -> None:
    """Start (or reuse) Kafka and Postgres; print `export SYNCLIFE_...=...` lines.

    Progress goes to stderr, so `eval "$(synclife stack up)"` sets the variables.
    """
    from events.devtools import stack as local_stack

    settings = load_settings()
    if cluster:
        env = await local_stack.cluster_up(
            local_stack.Cluster(settings), echo_err, reset_promoted=reset_promoted
        )
    else:
        env = await local_stack.up(settings, echo_err)
    for name, value in env.items():
        click.echo(f"export {name}={shlex.quote(value)}")


@stack.command("down")
@_CLUSTER
@run
async def stack_down(cluster: bool) -> None:
    """Stop the Kafka and Postgres that `stack up` started (their data is kept)."""
    from events.devtools import stack as local_stack

    settings = load_settings()
    if cluster:
        await local_stack.cluster_down(local_stack.Cluster(settings), echo_err)
    else:
        await local_stack.down(settings, echo_err)


@stack.command("status")
@run
async def stack_status() -> None:
    """Say whether each service is up."""
    from events.devtools import stack as local_stack

    for name, state in (await local_stack.status(load_settings())).items():
        click.echo(f"{name}: {state}")


@stack.command("browser")
@run
async def stack_browser() -> None:
    """Install Debian's chromium and chromium-driver if missing (the console's browser tests
    and `make screenshots`); print their paths."""
    from events.devtools.stack.install import browser

    chromium, driver = await browser(echo_err)
    click.echo(f"chromium: {chromium}")
    click.echo(f"chromedriver: {driver}")


@click.command()
@run
async def demo() -> None:
    """Start everything and walk one sync through create, pause, resume, printing what happens."""
    from events.devtools.demo import run_demo

    await run_demo(load_settings(), click.echo, echo_err)


def bench_options(
    *,
    syncs_: str | None = None,
    scale: bool = False,
    quick: bool = False,
    **given: Any,
) -> BenchOptions:
    """The ``BenchOptions`` that ``synclife bench``'s options ask for: ``--syncs`` (or
    ``--scale``) as sync counts, the others as given (None: the default, or ``--quick``'s)."""
    from events.devtools.bench import BenchOptions

    scales: tuple[int, ...] | None = None
    if syncs_:
        try:
            scales = tuple(int(n.replace("_", "")) for n in syncs_.split(",") if n.strip())
        except ValueError as exc:
            raise click.BadParameter(f"--syncs: {exc}") from exc
    elif scale:
        scales = (1000, 100_000)
    overrides: dict[str, Any] = {"scales": scales, **given}
    if quick:
        options = BenchOptions.quick(**overrides)
    else:
        options = BenchOptions(**{k: v for k, v in overrides.items() if v is not None})
    if any(n < 1 for n in options.scales) or options.commands < 1 or options.repeats < 1:
        raise click.BadParameter("sync counts, --commands and --repeats must be >= 1")
    if min(options.rate, options.low_rate, options.http_rate, options.latency_seconds) <= 0:
        raise click.BadParameter("rates and --seconds must be > 0")
    return options


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
@click.option("--rate", type=float, default=None, help="The fixed offered load (1,000/s).")
@click.option(
    "--low-rate",
    type=float,
    default=None,
    help="The low offered load, where latency is compared with the bare Kafka round trip (200/s).",
)
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
@click.option(
    "--keep", is_flag=True, help="Keep the topics, tenant, syncs, scratch schema and database."
)
@click.option(
    "--http",
    is_flag=True,
    help="Also compare pause/resume round trips over a `synclife gateway` with Kafka's.",
)
@click.option("--http-rate", type=float, default=None, help="Their offered load (200/s).")
@click.option(
    "--shared-database",
    is_flag=True,
    help="Run on the configured database, not on a fresh one of the run's own.",
)
@click.option("--quick", is_flag=True, help="A smoke check: small, one run.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (every figure).")
@click.option(
    "--markdown",
    is_flag=True,
    help="Print the report as Markdown: the table, the machine, the versions, the command.",
)
@click.option(
    "--update",
    "update_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Write the Markdown report into this file's block between <!-- bench:start --> and "
    "<!-- bench:end --> (e.g. docs/performance.md); implies --markdown.",
)
@click.option(
    "--from-json",
    "from_json",
    type=click.File("r"),
    default=None,
    help="Report a saved `--json` report instead of running the bench.",
)
@run
async def bench(
    syncs_: str | None,
    scale: bool,
    commands: int | None,
    repeats: int | None,
    rate: float | None,
    low_rate: float | None,
    seconds: float | None,
    pgbench_seconds: float | None,
    pgbench_path: str | None,
    profile: str | None,
    serve_path: str | None,
    keep: bool,
    http: bool,
    http_rate: float | None,
    shared_database: bool,
    quick: bool,
    as_json: bool,
    markdown: bool,
    update_path: str | None,
    from_json: IO[str] | None,
) -> None:
    """Throughput, latency, relay lag and RSS of `synclife serve` against the real stack,
    with pgbench's per-command transaction on the same Postgres and a bare Kafka round trip
    on the same broker as the baselines."""
    from events.devtools.bench import format_table, run_bench
    from events.devtools.bench.markdown import format_markdown, read_block, replace_block, to_json

    markdown = markdown or update_path is not None
    if as_json and markdown:
        raise click.BadParameter("--json and --markdown (or --update): one of them")
    target = None
    if update_path is not None:
        target = Path(update_path)
        try:  # before a run of minutes, not after
            read_block(target.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise click.BadParameter(f"--update {update_path}: {exc}") from exc
    if from_json is not None:
        report = json.load(from_json)
    else:
        options = bench_options(
            syncs_=syncs_,
            scale=scale,
            quick=quick,
            commands=commands,
            repeats=repeats,
            rate=rate,
            low_rate=low_rate,
            latency_seconds=seconds,
            pgbench_seconds=pgbench_seconds,
            pgbench=pgbench_path,
            profile=profile,
            serve_path=serve_path,
            keep=keep or None,
            http=http or None,
            http_rate=http_rate,
            shared_database=shared_database or None,
        )
        report = await run_bench(load_settings(), options, echo_err)
    if as_json:
        click.echo(to_json(report))
    elif markdown:
        text = format_markdown(report)
        click.echo(text)
        if target is not None:
            target.write_text(
                replace_block(target.read_text(encoding="utf-8"), text), encoding="utf-8"
            )
            echo_err(f"wrote the report into {target}'s bench block")
    else:
        click.echo(format_table(report))
