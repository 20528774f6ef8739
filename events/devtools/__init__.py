"""Developer tooling: the local Kafka and Postgres stack, the benchmark, the demo.

Only ``events.cli`` (and the tests) import it; the service never does.
"""
