"""``synclife outbox parked`` and ``synclife outbox retry``: the outbox rows Kafka refused.

The relay parks a row that Kafka refuses for good (too large, an unknown topic, not
authorized, ...) and the syncs' lifecycle events held behind one (events/service/parking.py).
These commands read and write Postgres only: a retried row goes back into the outbox under its
own id, and the relay publishes it, in order, when it next reads.
"""

from __future__ import annotations

import json

import click

from events.cli.common import run, with_connection


@click.group()
def outbox() -> None:
    """The outbox rows Kafka refused for good, parked: list them, put them back."""


@outbox.command("parked")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@run
async def outbox_parked(as_json: bool) -> None:
    """Each parked row: id, topic, key, size, reason; never its value or headers."""
    from events.service.parking import parked

    rows = await with_connection(parked)
    for row in rows:
        if as_json:
            click.echo(json.dumps(row))
        else:
            held = f" behind {row['held_by']}" if row["held_by"] is not None else ""
            click.echo(
                f"{row['id']}  {row['topic']}  {row['key']}  {row['size']} bytes  "
                f"{row['reason']}{held}  parked {row['parked_at']} ({row['attempts']}x)"
            )
    if not rows and not as_json:
        click.echo("no parked rows")


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "everything", is_flag=True, help="Every parked row.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def outbox_retry(ids: tuple[int, ...], everything: bool, as_json: bool) -> None:
    """Put parked rows back in the outbox (IDs, or --all), with every other parked row of the
    same topic and key, so that they are published in their order. Fix the cause first."""
    from events.service.parking import retry

    if bool(ids) == everything:
        raise click.UsageError("name the rows to retry (IDS) or --all, not both")
    put_back = await with_connection(lambda c: retry(c, ids, everything))
    if as_json:
        click.echo(json.dumps({"retried": put_back}))
    else:
        click.echo(f"put back: {', '.join(map(str, put_back))}" if put_back else "none")
