"""How fast the recall models train on a CPU: the benchmark behind the compute plan.

:func:`benchmark` times training steps of every model (process CPU time, one
thread), with mambapy's Mamba block and with :mod:`lib.recall.fast_mamba`,
*interleaved*: every round times each variant once, so a change in the
machine's load affects all variants of a round alike, and speed-ups are
reported as the median over rounds of per-round ratios. It also compares two
ways of using two cores for the sweeps, two 1-thread processes against one
2-thread process (wall-clock throughput, also interleaved), and profiles one
Mamba training step of each path.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from typing import Any

import torch

from .experiment import model_label, recall_config, time_training

VARIANTS = [("transformer", "learned", False), ("transformer", "rope", False), ("transformer", "none", False),
            ("mamba", "none", False), ("mamba", "none", True), ("hybrid", "none", False), ("hybrid", "none", True)]


def variant_name(kind: str, position: str, fast: bool) -> str:
    if kind == "transformer":
        return model_label(kind, position)
    return f"{model_label(kind)}, {'fast scan' if fast else 'mambapy'}"


def _throughput(args: tuple[dict[str, Any], int, int]) -> float:
    """Steps per wall-clock second of one process running ``steps`` steps with ``threads`` threads."""
    config, steps, threads = args
    torch.set_num_threads(threads)
    return time_training(config, steps, clock="wall")["steps_per_second"]


def thread_layouts(config: dict[str, Any], steps: int, rounds: int) -> dict[str, Any]:
    """Total training steps per wall-clock second on two cores: two 1-thread processes at
    once (``"2 x 1 thread"``) against one 2-thread process (``"1 x 2 threads"``), per round."""
    ctx = mp.get_context("spawn")
    out: dict[str, list[float]] = {"2 x 1 thread": [], "1 x 2 threads": []}
    with ctx.Pool(2) as pool:
        for _ in range(rounds):
            out["2 x 1 thread"].append(sum(pool.map(_throughput, [(config, steps, 1)] * 2)))
            out["1 x 2 threads"].append(pool.apply(_throughput, ((config, steps, 2),)))
    ratios = [a / b for a, b in zip(out["2 x 1 thread"], out["1 x 2 threads"])]
    return {**out, "ratio": statistics.median(ratios)}


def top_operators(config: dict[str, Any], steps: int = 3, top: int = 4) -> list[list[Any]]:
    """The operators with the most self CPU time in ``steps`` training steps: [name, share]."""
    from torch.profiler import profile

    with profile() as prof:
        time_training(config, steps, warmup=0)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [[e.key, e.self_cpu_time_total / total] for e in events[:top]]


def benchmark(config: dict[str, Any]) -> dict[str, Any]:
    """The benchmark record for ``config`` = ``{"profile", "steps", "rounds", "thread_steps"}``:
    per variant the median steps per CPU-second, the per-round ratios fast / mambapy,
    the thread layouts, and the profiles."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        configs = {variant_name(k, p, f): recall_config(config["profile"], kind=k, position=p, fast_scan=f)
                   for k, p, f in VARIANTS}
        speeds: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(config["rounds"]):
            for name, c in configs.items():
                speeds[name].append(time_training(c, config["steps"])["steps_per_second"])
        out: dict[str, Any] = {"steps_per_second": {n: statistics.median(v) for n, v in speeds.items()},
                               "rounds": speeds}
        for kind in ("Mamba", "Hybrid"):
            ratios = [a / b for a, b in zip(speeds[f"{kind}, fast scan"], speeds[f"{kind}, mambapy"])]
            out[f"{kind} speed-up"] = {"median": statistics.median(ratios), "per_round": ratios}
        from .experiment import build_model
        out["fast backend"] = build_model(configs["Mamba, fast scan"]).layers[0].backend
        out["threads"] = thread_layouts(configs["Mamba, fast scan"], config["thread_steps"], config["rounds"])
        out["profile Mamba, mambapy"] = top_operators(configs["Mamba, mambapy"])
        out["profile Mamba, fast scan"] = top_operators(configs["Mamba, fast scan"])
        return out
    finally:
        torch.set_num_threads(threads)
