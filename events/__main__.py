"""``python -m events`` and the ``synclife`` command.

The command line comes with ``synclife[server]``; with the client alone it says so and exits 2
instead of showing a traceback.
"""

from __future__ import annotations

import sys

#: What ``synclife[server]`` adds: a missing one means the extras are not installed.
SERVER_PACKAGES = frozenset(
    {
        "asyncpg",
        "transitions",
        "click",
        "prometheus_client",
        "aiohttp",
        "pythonjsonlogger",
        "uvloop",
    }
)


def main() -> None:
    try:
        from events.cli import main as cli
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_PACKAGES:
            raise  # not the extras: a real error, shown as such
        sys.stderr.write(
            f"synclife: the command line needs the server extras ({exc.name} is missing): "
            "pip install 'synclife[server]'\n"
        )
        raise SystemExit(2) from None
    cli()


if __name__ == "__main__":
    main()
