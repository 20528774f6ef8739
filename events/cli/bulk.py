"""``synclife bulk``: pause or resume every sync a selector matches as one recorded operation,
undo a bulk pause, and show an operation's progress and counts."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from events.cli.common import load_settings, run, with_connection

__all__ = ["bulk"]


def _selector(
    bucket: str | None,
    connection: str | None,
    provider: str | None,
    status: str | None,
    metadata: tuple[str, ...],
) -> dict[str, Any]:
    selector: dict[str, Any] = {}
    for name, value in (
        ("bucket_id", bucket),
        ("connection_id", connection),
        ("provider", provider),
        ("status", status),
    ):
        if value is not None:
            selector[name] = value
    pairs: dict[str, Any] = {}
    for pair in metadata:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"--metadata {pair!r}: KEY=VALUE")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        pairs[key] = value if isinstance(value, str | int | float | bool) else text
    if pairs:
        selector["metadata"] = pairs
    if not selector:
        raise click.UsageError(
            "give a selector: --bucket, --connection, --provider, --status or --metadata"
        )
    return selector


def _selector_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option("--bucket", help="Syncs of this bucket_id."),
            click.option("--connection", help="Syncs of this connection_id."),
            click.option("--provider", help="Syncs of this provider."),
            click.option("--status", help="Syncs in this status (e.g. ACTIVE)."),
            click.option(
                "--metadata", multiple=True, help="KEY=VALUE a sync's metadata holds (repeat)."
            ),
            click.option("--operation-id", default=None, help="bulk_ + ULID (default: new)."),
            click.option("--reason", default=None),
        ]
    ):
        fn = option(fn)
    return fn


_CREDENTIALS = [
    click.option("--api-key", envvar="SYNCLIFE_API_KEY", help="Defaults to $SYNCLIFE_API_KEY."),
    click.option(
        "--namespace", envvar="SYNCLIFE_NAMESPACE", help="Defaults to $SYNCLIFE_NAMESPACE."
    ),
    click.option("--timeout", type=float, default=600.0, help="Seconds to wait for the result."),
]


def _credentials(fn: Any) -> Any:
    for option in reversed(_CREDENTIALS):
        fn = option(fn)
    return fn


async def _send(
    kind: str, operation_id: str | None, data: dict[str, Any], options: dict[str, Any]
) -> None:
    from events.client import SynclifeClient, new_operation_id

    api_key, namespace = options["api_key"], options["namespace"]
    if not api_key or not namespace:
        raise click.UsageError("an API key and a namespace are needed (flags or environment)")
    op = operation_id or new_operation_id()
    async with SynclifeClient(load_settings(), api_key=api_key, namespace=namespace) as client:
        result = await client.send(kind, op, data, timeout=options["timeout"])
    assert result is not None  # noqa: S101 - waited for
    click.echo(result.model_dump_json(exclude_none=True))
    if result.outcome.value == "rejected":
        sys.exit(2)


@click.group()
def bulk() -> None:
    """Pause or resume many syncs as one operation (each sync changed once, recorded)."""


@bulk.command("pause")
@_selector_options
@click.option(
    "--until",
    default=None,
    help="When the hold ends by itself: 2h, 90m, 1d12h, 2w, PT2H or an RFC 3339 time.",
)
@click.option("--by", "user", default=None, help="paused_by_user_id (default: the key's user).")
@_credentials
@run
async def pause(
    bucket: str | None,
    connection: str | None,
    provider: str | None,
    status: str | None,
    metadata: tuple[str, ...],
    operation_id: str | None,
    reason: str | None,
    until: str | None,
    user: str | None,
    **options: Any,
) -> None:
    """Pause every matched sync with the hold bulk:<operation id>; print the result."""
    from statemachine.durations import friendly_duration

    data: dict[str, Any] = {
        "selector": _selector(bucket, connection, provider, status, metadata),
    }
    if until is not None:
        try:
            until = friendly_duration(until)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--until") from exc
    for name, value in (("reason", reason), ("until", until), ("paused_by_user_id", user)):
        if value is not None:
            data[name] = value
    await _send("sync.bulk.pause", operation_id, data, options)


@bulk.command("resume")
@_selector_options
@click.option("--hold", default=None, help="Release this hold (else the plain holds).")
@click.option("--force", is_flag=True, help="Release every hold (scope syncs:admin).")
@click.option("--mode", type=click.Choice(["incremental", "full"]), default=None)
@click.option(
    "--run",
    "run_when",
    type=click.Choice(["due", "next_interval"]),
    default=None,
    help="A due run at once (due) or one interval after the resume.",
)
@click.option("--by", "user", default=None, help="resumed_by_user_id.")
@_credentials
@run
async def resume(
    bucket: str | None,
    connection: str | None,
    provider: str | None,
    status: str | None,
    metadata: tuple[str, ...],
    operation_id: str | None,
    reason: str | None,
    hold: str | None,
    force: bool,
    mode: str | None,
    run_when: str | None,
    user: str | None,
    **options: Any,
) -> None:
    """Resume every matched sync (the resume's fields as sync.resume's); print the result."""
    if reason is not None:
        raise click.UsageError("a resume has no --reason")
    data: dict[str, Any] = {
        "selector": _selector(bucket, connection, provider, status, metadata),
    }
    given = (("hold", hold), ("force", force or None), ("mode", mode), ("run", run_when))
    for name, value in (*given, ("resumed_by_user_id", user)):
        if value is not None:
            data[name] = value
    await _send("sync.bulk.resume", operation_id, data, options)


@bulk.command("undo")
@click.argument("operation_id")
@click.option("--reason", default=None)
@_credentials
@run
async def undo(operation_id: str, reason: str | None, **options: Any) -> None:
    """Release exactly the holds the bulk pause OPERATION_ID placed; print the result."""
    data = {"reason": reason} if reason is not None else {}
    await _send("sync.bulk.undo", operation_id, data, options)


@bulk.command("show")
@click.argument("operation_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def show(operation_id: str, as_json: bool) -> None:
    """An operation's status, progress and counts, read from Postgres."""
    from events.service.bulk.queries import operation_view

    found = await with_connection(lambda c: operation_view(c, operation_id))
    if found is None:
        raise click.ClickException(f"operation {operation_id} not found")
    if as_json:
        click.echo(json.dumps(found, default=str))
        return
    click.echo(f"{found['operation_id']}  {found['kind']}  {found['status']}")
    for name in ("namespace_id", "selector", "counts", "undo_counts", "error", "created_at"):
        if found.get(name) is not None:
            click.echo(f"  {name:<14} {found[name]}")
    for name in ("finished_at", "undone_at"):
        if found.get(name) is not None:
            click.echo(f"  {name:<14} {found[name]}")
    for phase, counts in found.get("progress", {}).items():
        done = counts["matched"] - counts["pending"]
        click.echo(f"  {phase:<14} {done}/{counts['matched']} done  {counts}")
