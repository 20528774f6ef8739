"""The ``synclife`` command line: run the service, manage tenants, send commands, watch events."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click
import uvloop
from pydantic import SecretStr

from events.errors import SynclifeError
from events.service.settings import Settings

__all__ = ["main"]

P = ParamSpec("P")
T = TypeVar("T")


def _runner(
    run: Callable[[Coroutine[Any, Any, T]], T],
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, T]]:
    """A decorator that runs an async click command with ``run``; our errors become a clear
    message and exit code 1."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return run(fn(*args, **kwargs))
            except SynclifeError as exc:
                raise click.ClickException(str(exc)) from exc

        return wrapper

    return decorate


_run = _runner(asyncio.run)
#: ``serve`` runs on uvloop, libuv's faster event loop (made for asyncpg): its every batch is
#: event-loop work. Not the others: uvloop's subprocesses cannot switch user, which
#: ``stack up`` needs as root (Postgres refuses to run as root).
_run_on_uvloop = _runner(uvloop.run)


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


def _settings() -> Settings:
    """Settings from the environment; without a database URL there, the local stack's."""
    settings = Settings()
    if "SYNCLIFE_DATABASE_URL" not in os.environ:
        from events.devtools import stack as local_stack

        try:
            env = local_stack.local_env(settings)
        except SynclifeError:
            return settings  # no local stack either: the defaults, and a clear error on use
        settings = Settings(
            kafka_bootstrap_servers=os.environ.get(
                "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS", env["SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS"]
            ),
            database_url=SecretStr(env["SYNCLIFE_DATABASE_URL"]),
        )
    return settings


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(obj, default=str))
    else:
        for k, v in obj.items():
            click.echo(f"{k}: {v}")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """synclife: the lifecycle service for sync configurations."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)


# --- stack ---------------------------------------------------------------------------------


@main.group()
def stack() -> None:
    """The local Kafka (KRaft) and Postgres used by the demo and the tests."""


@stack.command("up")
@_run
async def stack_up() -> None:
    """Start (or reuse) Kafka and Postgres; print `export SYNCLIFE_...=...` lines.

    Progress goes to stderr, so `eval "$(synclife stack up)"` sets the variables.
    """
    from events.devtools import stack as local_stack

    env = await local_stack.up(_settings(), _echo_err)
    for name, value in env.items():
        click.echo(f"export {name}={shlex.quote(value)}")


@stack.command("down")
@_run
async def stack_down() -> None:
    """Stop the Kafka and Postgres that `stack up` started (their data is kept)."""
    from events.devtools import stack as local_stack

    await local_stack.down(_settings(), _echo_err)


@stack.command("status")
@_run
async def stack_status() -> None:
    """Say whether each service is up."""
    from events.devtools import stack as local_stack

    for name, state in (await local_stack.status(_settings())).items():
        click.echo(f"{name}: {state}")


# --- database ------------------------------------------------------------------------------


@main.command()
@_run
async def migrate() -> None:
    """Apply the SQL migrations not yet applied (idempotent)."""
    from events.service.db import connect
    from events.service.db import migrate as apply

    conn = await connect(_settings())
    try:
        applied = await apply(conn)
    finally:
        await conn.close()
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


async def _admin(action: Callable[[Any], Awaitable[T]]) -> T:
    from events.service.db import connect

    conn = await connect(_settings())
    try:
        return await action(conn)
    finally:
        await conn.close()


@main.group()
def orgs() -> None:
    """Organizations (the tenancy scope of keys and syncs)."""


@orgs.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_run
async def orgs_create(name: str, as_json: bool) -> None:
    from events.service.tenancy import create_org

    _print(await _admin(lambda c: create_org(c, name)), as_json)


@main.group()
def namespaces() -> None:
    """Namespaces within an organization."""


@namespaces.command("create")
@click.argument("name")
@click.option("--org", required=True, help="Organization id or name.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_run
async def namespaces_create(name: str, org: str, as_json: bool) -> None:
    from events.service.tenancy import create_namespace

    _print(await _admin(lambda c: create_namespace(c, org, name)), as_json)


@main.group()
def keys() -> None:
    """API keys: created once (the key is shown only then), listed, revoked."""


@keys.command("create")
@click.option("--org", required=True, help="Organization id or name.")
@click.option("--scope", "scopes", multiple=True, required=True, help="syncs:write or syncs:run.")
@click.option("--namespace", "namespaces_", multiple=True, help="Limit the key to a namespace.")
@click.option("--expires-in", type=int, default=None, help="Seconds until the key expires.")
@click.option("--name", default=None, help="A label for people.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_run
async def keys_create(
    org: str,
    scopes: tuple[str, ...],
    namespaces_: tuple[str, ...],
    expires_in: int | None,
    name: str | None,
    as_json: bool,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from events.service.tenancy import create_key

    expiry = timedelta(seconds=expires_in) if expires_in is not None else None
    created = await _admin(
        lambda c: create_key(c, org, list(scopes), list(namespaces_) or None, expiry, name)
    )
    _print(created, as_json)
    if not as_json:
        _echo_err("store this key now: it is not shown again")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_run
async def keys_revoke(key_id: str, as_json: bool) -> None:
    from events.service.tenancy import revoke_key

    _print(await _admin(lambda c: revoke_key(c, key_id)), as_json)


@keys.command("list")
@click.option("--org", default=None, help="Only this organization's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@_run
async def keys_list(org: str | None, as_json: bool) -> None:
    """Key ids, scopes and status; never the key."""
    from events.service.tenancy import list_keys

    for row in await _admin(lambda c: list_keys(c, org)):
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{row['id']}  {row['org']}  {','.join(row['scopes'])}  {row['status']}"
                f"  last used {row['last_used_at'] or 'never'}"
            )


# --- serve ---------------------------------------------------------------------------------


@main.command()
@_run_on_uvloop
async def serve() -> None:
    """Consume commands, apply them, relay lifecycle events and results (until SIGTERM).

    Serves /metrics, /healthz and /readyz on SYNCLIFE_HTTP_HOST:SYNCLIFE_HTTP_PORT and logs
    JSON lines (SYNCLIFE_LOG_FORMAT=text for people).
    """
    from events.service.app import serve as run_service
    from events.service.observability import configure_logging

    settings = _settings()
    configure_logging(getattr(logging, settings.log_level), settings.log_format == "json")
    await run_service(settings)


# --- send and tail -------------------------------------------------------------------------

_SEND_TYPES = {
    "create": "sync.create",
    "update": "sync.update",
    "activate": "sync.activate",
    "pause": "sync.pause",
    "resume": "sync.resume",
    "trigger": "sync.trigger",
    "cancel": "sync.cancel",
    "archive": "sync.archive",
}


@main.command()
@click.argument("verb", type=click.Choice(sorted(_SEND_TYPES)))
@click.argument("sync_id", required=False)
@click.option("--data", "data_json", default="{}", help="The command's data as a JSON object.")
@click.option(
    "--set", "pairs", multiple=True, help="A data field, KEY=VALUE (VALUE as JSON or text)."
)
@click.option("--api-key", envvar="SYNCLIFE_API_KEY", help="Defaults to $SYNCLIFE_API_KEY.")
@click.option("--namespace", envvar="SYNCLIFE_NAMESPACE", help="Defaults to $SYNCLIFE_NAMESPACE.")
@click.option("--command-id", default=None, help="Idempotency key (default: a new UUID).")
@click.option("--expected-version", type=int, default=None)
@click.option("--timeout", type=float, default=30.0, help="Seconds to wait for the result.")
@_run
async def send(
    verb: str,
    sync_id: str | None,
    data_json: str,
    pairs: tuple[str, ...],
    api_key: str | None,
    namespace: str | None,
    command_id: str | None,
    expected_version: int | None,
    timeout: float,
) -> None:
    """Publish a command and print its result as JSON (create makes a new id if none is given)."""
    from events.client import SynclifeClient, new_sync_id

    if not api_key or not namespace:
        raise click.UsageError("an API key and a namespace are needed (flags or environment)")
    try:
        data = json.loads(data_json)
    except ValueError as exc:
        raise click.BadParameter(f"--data is not JSON: {exc}") from exc
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            data[name] = json.loads(text)
        except ValueError:
            data[name] = text
    if sync_id is None:
        if verb != "create":
            raise click.UsageError(f"{verb} needs a SYNC_ID")
        sync_id = new_sync_id()
    async with SynclifeClient(_settings(), api_key=api_key, namespace=namespace) as client:
        result = await client.send(
            _SEND_TYPES[verb],
            sync_id,
            data,
            command_id=command_id,
            expected_version=expected_version,
            timeout=timeout,
        )
    assert result is not None  # noqa: S101 - waited for
    click.echo(result.model_dump_json(exclude_none=True))
    if result.outcome.value == "rejected":
        sys.exit(2)


@main.command()
@click.option("--sync", "sync_ids", multiple=True, help="Only these syncs.")
@click.option("--type", "types", multiple=True, help="Only these event types.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest event.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.option("--limit", type=int, default=None, help="Stop after this many events.")
@_run
async def tail(
    sync_ids: tuple[str, ...],
    types: tuple[str, ...],
    from_beginning: bool,
    as_json: bool,
    limit: int | None,
) -> None:
    """Print lifecycle events as they arrive."""
    from events.client import lifecycle_events

    count = 0
    async for event in lifecycle_events(
        _settings(), from_beginning=from_beginning, types=types or None, sync_ids=sync_ids or None
    ):
        if as_json:
            click.echo(
                json.dumps(
                    {"id": event.id, "type": event.type, "data": event.data.model_dump(mode="json")}
                )
            )
        else:
            d = event.data
            change = f"{d.from_status} -> {d.to_status}" if d.from_status else f"{d.to_status}"
            click.echo(
                f"{d.occurred_at:%H:%M:%S}  {event.type:<22} {d.sync_config_id}  v{d.version}"
                f"  {change}  by {d.actor}"
            )
        count += 1
        if limit is not None and count >= limit:
            return


@main.command()
@click.argument("sync_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_run
async def show(sync_id: str, as_json: bool) -> None:
    """Print a sync and its timeline (every change, oldest first), read from Postgres."""
    from events.service.tenancy import sync_timeline

    found = await _admin(lambda c: sync_timeline(c, sync_id))
    if found is None:
        raise click.ClickException(f"sync {sync_id} not found")
    sync, timeline = found
    if as_json:
        click.echo(json.dumps({"sync": sync, "timeline": timeline}, default=str))
        return
    click.echo(f"{sync['sync_config_id']}  {sync['status']}  v{sync['version']}")
    for name in (
        "bucket_id",
        "provider",
        "source_path",
        "sync_mode",
        "polling_interval_seconds",
        "namespace_id",
        "internal_id",
        "next_sync_at",
        "last_sync_at",
        "locked_by_worker_id",
        "consecutive_failures",
        "last_error",
        "total_files_synced",
        "total_files_failed",
    ):
        click.echo(f"  {name:<26} {sync.get(name)}")
    click.echo("timeline:")
    for row in timeline:
        change = (
            f"{row['from_status'] or '-'} -> {row['to_status']}"
            if row["from_status"] != row["to_status"]
            else ""
        )
        reason = f"  ({row['reason']})" if row["reason"] else ""
        click.echo(
            f"  v{row['version']:<4} {row['occurred_at']}  {row['event_type']:<24} {change:<24}"
            f" by {row['actor']} via {row['trigger']}{reason}"
        )


# --- docs ----------------------------------------------------------------------------------


@main.command()
def diagram() -> None:
    """Print the lifecycle state diagram (Mermaid), generated from the transition table."""
    from statemachine.table import mermaid

    click.echo(mermaid())


@main.command()
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write to this file.")
@click.option(
    "--from-env",
    is_flag=True,
    help="Topic names from SYNCLIFE_* settings (default: the contract's default names).",
)
def asyncapi(output: str | None, from_env: bool) -> None:
    """Print the AsyncAPI 3.0 document of the wire contract (JSON).

    Regenerate the checked-in copy: `synclife asyncapi --output docs/asyncapi.json`.
    """
    from pathlib import Path

    from events.contract.asyncapi import asyncapi_document, to_json

    text = to_json(asyncapi_document(Settings() if from_env else None))
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")
        _echo_err(f"wrote {output}")


@main.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Directory for the *.json files (created if missing).",
)
def schemas(output_dir: str) -> None:
    """Write one JSON Schema (Draft 2020-12) per command type, event type and the result.

    Regenerate the checked-in copies: `synclife schemas --output-dir docs/schemas`.
    """
    from pathlib import Path

    from events.contract.asyncapi import json_schemas, to_json

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    generated = json_schemas()
    for name, schema in generated.items():
        (directory / name).write_text(to_json(schema), encoding="utf-8")
    _echo_err(f"wrote {len(generated)} schemas to {directory}")
    stale = sorted(p.name for p in directory.glob("*.json") if p.name not in generated)
    if stale:
        _echo_err(f"not generated any more (delete them if they are ours): {', '.join(stale)}")


@main.command()
@_run
async def demo() -> None:
    """Start everything and walk one sync through create, pause, resume, printing what happens."""
    from events.devtools.demo import run_demo

    await run_demo(_settings(), click.echo, _echo_err)


# --- bench ---------------------------------------------------------------------------------


@main.command()
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
@click.option("--quick", is_flag=True, help="A smoke check: small, one run.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_run
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
    }
    if quick:
        options = BenchOptions.quick(**overrides)
    else:
        options = BenchOptions(**{k: v for k, v in overrides.items() if v is not None})
    if any(n < 1 for n in options.scales) or options.commands < 1 or options.repeats < 1:
        raise click.BadParameter("sync counts, --commands and --repeats must be >= 1")
    report = await run_bench(_settings(), options, _echo_err)
    click.echo(json.dumps(report, default=str) if as_json else format_table(report))


if __name__ == "__main__":  # pragma: no cover
    main()
