"""2 workers x 1 thread against 1 worker x 2 threads on real recall configurations (lib.sweep's pool).

Both arms run the same four short Transformer recall configurations (seeds 0-3, a
fixed number of steps: the convergence rule is switched off with a patience no
run can reach) through :meth:`lib.store.ResultsStore.sweep` with the ``pool``
executor, each into its own fresh store. The arms alternate (A B A B ...), so a
change in the machine's load hits both, and the result is reported as a ratio of
wall-clock times per round, plus the compute seconds the records measured (which
leave out each job's start-up: importing torch in a fresh process).

    PYTHONPATH=. python scripts/benchmark_executors.py [--rounds 2] [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from lib.provenance import describe
from lib.recall.experiment import train_recall
from lib.store import ResultsStore
from lib.sweep import Executor


def configs(steps: int) -> list[dict]:
    return [{"kind": "transformer", "position": "rope", "L": 32, "max_steps": steps, "eval_every": steps,
             "patience": 10**6, "per_length": 16, "eval_batch": 128, "warmup_steps": 20, "seed": seed}
            for seed in range(4)]


def arm(executor: Executor, steps: int, folder: Path) -> dict:
    store = ResultsStore("smoke", root=folder / "results", read_only=False)
    start = time.perf_counter()
    records = store.sweep("bench", configs(steps), train_recall, executor=executor)
    wall = time.perf_counter() - start
    compute = [describe(r)["wall_seconds"] for r in records]
    cpu = [describe(r)["cpu_seconds"] for r in records]
    return {"wall": wall, "compute": compute, "cpu": cpu, "threads": [describe(r)["threads"] for r in records]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    arms = {"2 workers x 1 thread": Executor("pool", workers=2, threads=1),
            "1 worker x 2 threads": Executor("pool", workers=1, threads=2)}
    results: dict[str, list[dict]] = {name: [] for name in arms}
    for round_ in range(args.rounds):
        order = list(arms) if round_ % 2 == 0 else list(arms)[::-1]
        for name in order:
            with tempfile.TemporaryDirectory() as folder:
                out = arm(arms[name], args.steps, Path(folder))
            results[name].append(out)
            print(json.dumps({"round": round_, "arm": name, **out}), flush=True)
    a, b = (results[name] for name in arms)
    ratios = [y["wall"] / x["wall"] for x, y in zip(a, b)]
    print(f"wall-clock per round, 1x2 / 2x1: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"mean {statistics.mean(ratios):.2f} (> 1: two 1-thread workers finish the batch sooner)")
    for name, runs in results.items():
        compute = [s for r in runs for s in r["compute"]]
        print(f"{name}: wall {statistics.mean(r['wall'] for r in runs):.0f} s per batch of 4; "
              f"compute per configuration {statistics.mean(compute):.0f} s (records' wall seconds)")


if __name__ == "__main__":
    main()
