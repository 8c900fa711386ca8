"""Where and how a record was computed: code version, software, hardware, time.

Every record the store writes carries ``provenance``: the git commit of the
checkout and whether its tracked files differed from it, the versions of
``lib`` and torch, the device (CPU model or GPU name), torch's thread count,
the start time, and the wall-clock and CPU seconds of the computation.
Records written before provenance existed lack it; :func:`describe` says what
a record has and what it lacks.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from . import __version__

BOOK_ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("git_commit", "git_dirty", "lib_version", "torch_version", "device", "threads",
          "started", "wall_seconds", "cpu_seconds")


def _git(*args: str, root: Path = BOOK_ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_version(root: Path = BOOK_ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout at ``root``: dirty when a tracked file outside
    ``results/`` differs from the commit (records and the checkpoints a run is updating
    are data, not code), ``None`` where git cannot tell."""
    commit = _git("rev-parse", "HEAD", root=root)
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results", root=root)
    return commit, (bool(status) if status is not None else None)


@functools.lru_cache(maxsize=1)
def _code_version() -> tuple[str | None, bool | None]:
    return code_version()


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (from /proc/cpuinfo on Linux; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """Whether the CPU has bf16 matrix instructions (AVX-512 BF16 or AMX-BF16): two machines
    that print the same model name can differ here, and bf16 autocast with them."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def machine_name() -> str:
    """:func:`device_name`, and for a CPU whether it has bf16 instructions: machines that print
    one model name differ there (and in speed), so a run's segments say it."""
    name = device_name()
    return f"{name} (bf16 instructions)" if name == cpu_model() and native_bf16() else name


def device_name() -> str:
    """The GPU's name when CUDA is available, else the CPU model."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return cpu_model()


def provenance() -> dict[str, Any]:
    """Code version, software and hardware of this process (no timing)."""
    import torch

    commit, dirty = _code_version()
    return {"git_commit": commit, "git_dirty": dirty, "lib_version": __version__,
            "torch_version": torch.__version__, "device": device_name(), "threads": torch.get_num_threads(),
            "host_cpus": os.cpu_count()}


class Clock:
    """Wall-clock and process CPU time from construction to :meth:`stop`."""

    def __init__(self) -> None:
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self) -> dict[str, Any]:
        """``{"started", "wall_seconds", "cpu_seconds"}``."""
        return {"started": self.started, "wall_seconds": round(time.perf_counter() - self._wall, 3),
                "cpu_seconds": round(time.process_time() - self._cpu, 3)}


def describe(record: dict[str, Any]) -> dict[str, Any]:
    """Every provenance field of a record, ``None`` where the record lacks it (old records), plus
    ``"missing"``: the list of absent fields. Old records keep ``seconds`` (wall clock) and
    ``lib_version`` at the top level; they are used when present."""
    given = dict(record.get("provenance") or {})
    given.setdefault("wall_seconds", record.get("seconds"))
    given.setdefault("lib_version", record.get("lib_version"))
    fields = {field: given.get(field) for field in FIELDS}
    fields["missing"] = [field for field, value in fields.items() if value is None]
    return fields


def compute_statement(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the records cost and where they ran, for a chapter's compute statement.

    Returns ``runs``; ``wall_hours`` (sum of every record's wall-clock seconds, from
    ``provenance`` or the older top-level ``seconds``); ``cpu_hours`` and ``cpu_runs`` (the
    sum over the records that measured CPU time, and how many did); ``devices``,
    ``threads``, ``torch_versions``, ``commits`` (each value -> number of runs);
    ``dirty_runs`` (runs computed from a tree with uncommitted changes); ``first`` and
    ``last`` start times (or, for old records, the times they were written); ``lacking`` (field -> number of records without it, old records);
    and ``text``, one sentence for the chapter, e.g. "36 runs, 5.2 hours of wall-clock time
    (5.0 CPU-hours) on Intel Xeon ... with 1 thread; 4 older records lack ...".
    """
    from collections import Counter

    described = [describe(r) for r in records]
    wall = sum(d["wall_seconds"] or 0.0 for d in described)
    timed = [d["cpu_seconds"] for d in described if d["cpu_seconds"] is not None]
    count = lambda field: dict(Counter(d[field] for d in described if d[field] is not None))  # noqa: E731
    lacking = dict(Counter(f for d in described for f in d["missing"]))
    starts = sorted(filter(None, (d["started"] or r.get("created") for d, r in zip(described, records))))
    out: dict[str, Any] = {
        "runs": len(records), "wall_hours": wall / 3600, "cpu_hours": sum(timed) / 3600, "cpu_runs": len(timed),
        "devices": count("device"), "threads": count("threads"), "torch_versions": count("torch_version"),
        "commits": count("git_commit"), "dirty_runs": sum(1 for d in described if d["git_dirty"]),
        "first": starts[0] if starts else None, "last": starts[-1] if starts else None, "lacking": lacking,
    }
    parts = [f"{len(records)} run{'s' if len(records) != 1 else ''}, {_hours(wall)} of wall-clock time"]
    if timed:
        cpu = f"{_hours(sum(timed), 'CPU-')}" + ("" if len(timed) == len(records) else f" over the {len(timed)} "
                                                     "runs that measured it")
        parts[0] += f" ({cpu})"
    if out["devices"]:
        devices = " and ".join(f"{name}" + (f" ({n} runs)" if len(out["devices"]) > 1 else "")
                               for name, n in out["devices"].items())
        threads = ", ".join(str(t) for t in sorted(out["threads"]))
        parts[0] += f" on {devices} with {threads} thread{'' if set(out['threads']) == {1} else 's'}"
    old = sum(1 for d in described if "device" in d["missing"])
    if old:
        parts.append(f"{old} older record{'s' if old != 1 else ''} lack provenance (device, threads and CPU time "
                     "unknown; their wall-clock seconds are counted)")
    out["text"] = "; ".join(parts) + "."
    return out


def _hours(seconds: float, prefix: str = "") -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} {prefix}minutes" if prefix else f"{seconds / 60:.1f} minutes"
    return f"{seconds / 3600:.1f} {prefix}hours"
