"""Helpers shared by the tests: imported by name, never from a ``conftest`` module.

``syncs``: builders of syncs and commands (no I/O). ``live``: the real stack's topics, tenants,
what a topic carried, the CLI in a process of its own. ``messages``: commands written by hand,
as any Kafka client would, and the waits for their results and dead letters.
"""
