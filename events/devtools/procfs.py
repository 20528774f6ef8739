"""What Linux's ``/proc`` says about processes and the machine: CPU time and peak RSS of a
process, a postmaster's children, the CPU model and memory. Read by ``synclife bench`` (CPU per
command, serve's peak RSS, the report's machine) and the fault suite (its summary's machine).
Every reader returns None (or leaves a figure out) where ``/proc`` does not answer.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CPU_USERS",
    "CpuMeter",
    "CpuReading",
    "cpu_model",
    "cpu_seconds",
    "machine_info",
    "memory_kib",
    "peak_rss_kib",
]


def _status_kib(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def peak_rss_kib(pid: int) -> int | None:
    """The peak resident set size of process ``pid`` (``VmHWM``), in KiB."""
    return _status_kib(pid, "VmHWM")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(parent: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            # A process may exit between the listing and the read.
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text(encoding="ascii")
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(int(entry.name))
    return out


#: Whose CPU time the bench accounts per command, in the order it prints them.
CPU_USERS: Final = ("serve", "kafka", "postgres", "bench")


CpuReading = dict[str, dict[int, float]]  # user -> pid -> CPU seconds so far


class CpuMeter:
    """CPU seconds used by ``serve``, the broker, Postgres (the postmaster and its processes)
    and the bench itself. Only the local stack's broker and Postgres have known pids; with
    external ones those are left out. A Postgres backend that exits between two readings takes
    its time since the first with it (only processes in the second reading are counted)."""

    def __init__(self, serve_pid: int, stack_pids: dict[str, int]) -> None:
        self.serve_pid = serve_pid
        self.stack_pids = stack_pids

    def read(self) -> CpuReading:
        pids: dict[str, list[int]] = {"serve": [self.serve_pid]}
        if "kafka" in self.stack_pids:
            pids["kafka"] = [self.stack_pids["kafka"]]
        if "postgres" in self.stack_pids:
            postmaster = self.stack_pids["postgres"]
            pids["postgres"] = [postmaster, *_children(postmaster)]
        out: CpuReading = {}
        for who, members in pids.items():
            seconds = {pid: cpu_seconds(pid) for pid in members}
            out[who] = {pid: t for pid, t in seconds.items() if t is not None}
        times = os.times()
        out["bench"] = {os.getpid(): times.user + times.system}
        return out

    @staticmethod
    def per_command(before: CpuReading, after: CpuReading, commands: int) -> dict[str, float]:
        """Microseconds of CPU per command, by user, between two readings."""
        out: dict[str, float] = {}
        for who in CPU_USERS:
            if not before.get(who) or not after.get(who):
                continue
            used = sum(t - before[who].get(pid, 0.0) for pid, t in after[who].items())
            out[who] = used / commands * 1e6
        return out


def cpu_model() -> str | None:
    """The CPU's model name (the first one ``/proc/cpuinfo`` lists)."""
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        if match := re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE):
            return match.group(1).strip()
    return None


def memory_kib() -> int | None:
    """The machine's memory (``MemTotal``), in KiB."""
    with contextlib.suppress(OSError):
        meminfo = Path("/proc/meminfo").read_text(encoding="ascii")
        if match := re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE):
            return int(match.group(1))
    return None


def machine_info() -> dict[str, Any]:
    """CPUs, CPU model, memory (GiB) and Python version, for a report."""
    info: dict[str, Any] = {"cpus": os.cpu_count()}
    kib = memory_kib()
    if kib is not None:
        info["memory_gib"] = round(kib / 1024 / 1024, 1)
    cpu = cpu_model()
    if cpu is not None:
        info["cpu"] = cpu
    info["python"] = sys.version.split()[0]
    return info
