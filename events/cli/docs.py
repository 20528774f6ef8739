"""``synclife diagram``, ``asyncapi``, ``schemas`` and ``openapi``: the documents generated from
the code."""

from __future__ import annotations

import click

from events.cli.common import echo_err
from events.service.settings import Settings


@click.command()
def diagram() -> None:
    """Print the lifecycle state diagram (Mermaid), generated from the transition table."""
    from statemachine.table import mermaid

    click.echo(mermaid())


@click.command()
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
        echo_err(f"wrote {output}")


@click.command()
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
    echo_err(f"wrote {len(generated)} schemas to {directory}")
    stale = sorted(p.name for p in directory.glob("*.json") if p.name not in generated)
    if stale:
        echo_err(f"not generated any more (delete them if they are ours): {', '.join(stale)}")


@click.command()
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Write to this file.")
def openapi(output: str | None) -> None:
    """Print the OpenAPI 3.1 document of the HTTP API (JSON), as the gateway serves it.

    Regenerate the checked-in copy: `synclife openapi --output docs/openapi.json`.
    """
    from pathlib import Path

    from events.contract.asyncapi import to_json
    from events.contract.openapi import openapi_document

    text = to_json(openapi_document())
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")
        echo_err(f"wrote {output}")
