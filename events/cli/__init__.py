"""The ``synclife`` command line: run the service, manage tenants, send commands, watch events.

The group is here; its commands are in modules by area: ``admin`` (migrate, orgs, namespaces,
keys), ``commands`` (send, tail, show), ``bulk`` (bulk operations), ``docs`` (diagram,
asyncapi, schemas, openapi), ``dev`` (stack, demo, bench) and ``serve``. Each command
imports what it needs when it runs, so that ``synclife --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys

import click

from events.cli import admin, bulk, commands, dev, docs, gateway, outbox, serve

__all__ = ["main"]


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


for _command in (
    admin.migrate,
    admin.orgs,
    admin.namespaces,
    admin.keys,
    serve.serve,
    gateway.gateway,
    commands.send,
    commands.tail,
    commands.show,
    bulk.bulk,
    docs.diagram,
    docs.asyncapi,
    docs.schemas,
    docs.openapi,
    dev.stack,
    dev.demo,
    dev.bench,
    outbox.outbox,
):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
