"""``synclife migrate``, ``orgs``, ``namespaces`` and ``keys``: the schema and the tenants."""

from __future__ import annotations

import json
from datetime import timedelta

import click

from events.cli.common import echo_err, load_settings, print_obj, run, with_connection


@click.command()
@run
async def migrate() -> None:
    """Apply the SQL migrations not yet applied (idempotent)."""
    from events.service.db import connect
    from events.service.db import migrate as apply

    conn = await connect(load_settings())
    try:
        applied = await apply(conn)
    finally:
        await conn.close()
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@click.group()
def orgs() -> None:
    """Organizations (the tenancy scope of keys and syncs)."""


@orgs.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def orgs_create(name: str, as_json: bool) -> None:
    from events.service.tenancy import create_org

    print_obj(await with_connection(lambda c: create_org(c, name)), as_json)


@click.group()
def namespaces() -> None:
    """Namespaces within an organization."""


@namespaces.command("create")
@click.argument("name")
@click.option("--org", required=True, help="Organization id or name.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def namespaces_create(name: str, org: str, as_json: bool) -> None:
    from events.service.tenancy import create_namespace

    print_obj(await with_connection(lambda c: create_namespace(c, org, name)), as_json)


@click.group()
def keys() -> None:
    """API keys: created once (the key is shown only then), listed, revoked."""


@keys.command("create")
@click.option("--org", required=True, help="Organization id or name.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="syncs:read, syncs:write (includes read), syncs:admin (includes write) or syncs:run.",
)
@click.option("--namespace", "namespaces_", multiple=True, help="Limit the key to a namespace.")
@click.option("--expires-in", type=int, default=None, help="Seconds until the key expires.")
@click.option("--name", default=None, help="A label for people.")
@click.option("--user", "user_id", default=None, help="The user id the key acts for (its owner).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def keys_create(
    org: str,
    scopes: tuple[str, ...],
    namespaces_: tuple[str, ...],
    expires_in: int | None,
    name: str | None,
    user_id: str | None,
    as_json: bool,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    from events.service.tenancy import create_key

    expiry = timedelta(seconds=expires_in) if expires_in is not None else None
    offset = timedelta(seconds=load_settings().clock_offset_seconds)
    created = await with_connection(
        lambda c: create_key(
            c, org, list(scopes), list(namespaces_) or None, expiry, name, user_id, offset
        )
    )
    print_obj(created, as_json)
    if not as_json:
        echo_err("store this key now: it is not shown again")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@run
async def keys_revoke(key_id: str, as_json: bool) -> None:
    from events.service.tenancy import revoke_key

    print_obj(await with_connection(lambda c: revoke_key(c, key_id)), as_json)


@keys.command("list")
@click.option("--org", default=None, help="Only this organization's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@run
async def keys_list(org: str | None, as_json: bool) -> None:
    """Key ids, scopes and status; never the key."""
    from events.service.tenancy import list_keys

    offset = timedelta(seconds=load_settings().clock_offset_seconds)
    for row in await with_connection(lambda c: list_keys(c, org, offset)):
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{row['id']}  {row['org']}  {','.join(row['scopes'])}  {row['status']}"
                f"  last used {row['last_used_at'] or 'never'}"
            )
