"""``python -m events.cli``: the ``synclife`` command line."""

from events.cli import main

main()
