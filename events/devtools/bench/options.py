"""What a bench run is asked to do: ``synclife bench``'s options, and ``--quick``'s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["BenchOptions"]


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Sync counts to measure, commands per max-throughput phase, repeats, the fixed rate, the
    low rate (latency against the bare Kafka baseline) and how long each paced phase lasts,
    pgbench's duration, clients and path, a cProfile output for serve, another checkout's
    serve, whether to keep what the run created, whether to compare round trips over the
    HTTP gateway with Kafka's (``--http``) and at which rate, and whether to run on the
    configured database instead of a fresh one of the run's own (``--shared-database``)."""

    scales: tuple[int, ...] = (1000,)
    commands: int = 20_000
    repeats: int = 3
    rate: float = 1000.0
    low_rate: float = 200.0
    latency_seconds: float = 10.0
    pgbench_seconds: float = 10.0
    pgbench_clients: int = 4
    pgbench: str | None = None
    profile: str | None = None
    serve_path: str | None = None
    keep: bool = False
    http: bool = False
    http_rate: float = 200.0
    shared_database: bool = False

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        """A smoke check (200 syncs, 2,000 commands, one run); ``overrides`` that are not
        None win."""
        base: dict[str, Any] = {
            "scales": (200,),
            "commands": 2000,
            "repeats": 1,
            "latency_seconds": 2.0,
            "pgbench_seconds": 3.0,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)
