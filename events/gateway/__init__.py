"""The HTTP gateway: the vendor's REST API for sync configurations, over synclife's commands.

``app`` (the process: ``Gateway``, ``run_gateway``), ``writes`` and ``reads`` (the routes),
``waiter`` (results waited for on Postgres), ``errors`` (the one error body), ``queries`` and
``metrics`` (the reads' statements and the health figures)."""

from events.gateway.app import Gateway, create_app, run_gateway

__all__ = ["Gateway", "create_app", "run_gateway"]
