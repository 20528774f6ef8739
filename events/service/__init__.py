"""The running service: consumer and lanes, the batch processor, relay, scheduler, leader
election, the database and its migrations, tenancy and observability.

Installed with ``synclife[server]``. Imports the client's modules and ``statemachine``; never
``events.devtools`` or ``events.cli``.
"""
