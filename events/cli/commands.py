"""``synclife send``, ``tail`` and ``show``: commands out, lifecycle events and a sync's
timeline in."""

from __future__ import annotations

import json
import sys

import click

from events.cli.common import load_settings, run, with_connection

_SEND_TYPES = {
    "create": "sync.create",
    "update": "sync.update",
    "activate": "sync.activate",
    "pause": "sync.pause",
    "resume": "sync.resume",
    "trigger": "sync.trigger",
    "cancel": "sync.cancel",
    "archive": "sync.archive",
    "unlock": "sync.unlock",
}


@click.command()
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
@click.option("--hold", default=None, help="pause/resume: the hold's label (a named hold).")
@click.option(
    "--until",
    default=None,
    help="pause: when the hold ends by itself: 2h, 90m, 1d12h, 2w, PT2H or an RFC 3339 time.",
)
@click.option("--reason", default=None, help="The command's reason.")
@click.option("--force", is_flag=True, help="resume: release every hold (scope syncs:admin).")
@click.option(
    "--mode", type=click.Choice(["incremental", "full"]), default=None, help="resume, trigger."
)
@click.option(
    "--run",
    "run_when",
    type=click.Choice(["due", "next_interval"]),
    default=None,
    help="resume: a due run at once (due) or one interval after the resume.",
)
@run
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
    hold: str | None,
    until: str | None,
    reason: str | None,
    force: bool,
    mode: str | None,
    run_when: str | None,
) -> None:
    """Publish a command and print its result as JSON (create makes a new id if none is given).

    \b
    synclife send pause SYNC_ID --hold maintenance:INC-42 --until 2h --reason "db upgrade"
    synclife send resume SYNC_ID --hold maintenance:INC-42 --mode full
    """
    from events.client import SynclifeClient, new_sync_id
    from statemachine.durations import friendly_duration

    if not api_key or not namespace:
        raise click.UsageError("an API key and a namespace are needed (flags or environment)")
    try:
        data = json.loads(data_json)
    except ValueError as exc:
        raise click.BadParameter(f"--data is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise click.BadParameter("--data must be a JSON object")
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            data[name] = json.loads(text)
        except ValueError:
            data[name] = text
    options = _options(verb, hold=hold, until=until, force=force, mode=mode, run=run_when)
    if until is not None:
        try:
            options["until"] = friendly_duration(until)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--until") from exc
    if reason is not None:
        options["reason"] = reason
    data.update(options)
    if sync_id is None:
        if verb != "create":
            raise click.UsageError(f"{verb} needs a SYNC_ID")
        sync_id = new_sync_id()
    async with SynclifeClient(load_settings(), api_key=api_key, namespace=namespace) as client:
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


#: The verbs each option of ``send`` applies to.
_OPTION_VERBS: dict[str, frozenset[str]] = {
    "hold": frozenset({"pause", "resume"}),
    "until": frozenset({"pause"}),
    "force": frozenset({"resume"}),
    "mode": frozenset({"resume", "trigger"}),
    "run": frozenset({"resume"}),
}


def _options(verb: str, **given: object) -> dict[str, object]:
    """The options given (not None, not false), each checked to apply to ``verb``."""
    chosen = {name: value for name, value in given.items() if value not in (None, False)}
    for name in chosen:
        if verb not in _OPTION_VERBS[name]:
            verbs = " or ".join(sorted(_OPTION_VERBS[name]))
            raise click.UsageError(f"--{name.replace('_', '-')} applies to {verbs}, not {verb}")
    return chosen


@click.command()
@click.option("--sync", "sync_ids", multiple=True, help="Only these syncs.")
@click.option("--type", "types", multiple=True, help="Only these event types.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest event.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.option("--limit", type=int, default=None, help="Stop after this many events.")
@run
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
        load_settings(),
        from_beginning=from_beginning,
        types=types or None,
        sync_ids=sync_ids or None,
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


@click.command()
@click.argument("sync_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def show(sync_id: str, as_json: bool) -> None:
    """Print a sync and its timeline (every change, oldest first), read from Postgres."""
    from events.service.tenancy import sync_timeline

    found = await with_connection(lambda c: sync_timeline(c, sync_id))
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
