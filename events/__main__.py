"""``python -m events``: the ``synclife`` command line."""

from events.cli import main

main()
