"""``python -m events`` and the ``synclife`` command.

The command line comes with ``synclife[server]``; with the client alone it says so and exits 2
instead of showing a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from events.cli import main as cli
    except ModuleNotFoundError as exc:
        sys.stderr.write(
            f"synclife: the command line needs the server extras ({exc.name} is missing): "
            "pip install 'synclife[server]'\n"
        )
        raise SystemExit(2) from None
    cli()


if __name__ == "__main__":
    main()
