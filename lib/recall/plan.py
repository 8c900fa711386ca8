"""The recall study's runs: the learning-rate sweep per model family, then every
configuration of Problems 1-3 at the chosen rates, in the order they are run.

The chapters build their configurations here, so the chapters and the
command-line sweep always agree on what a setting is::

    python -m lib.recall.plan --profile cpu --families transformer   # Transformer sweeps, then runs
    python -m lib.recall.plan --profile cpu --families mamba hybrid  # the models with Mamba layers
    python -m lib.recall.plan --profile cpu --list                   # what is stored, what is missing
    python -m lib.recall.plan --profile cpu --families mamba --problems 3 --probes mamba-tau10-horizon

``--probes`` (all, or those named) also runs the probes the chapters read besides the
planned runs (:func:`probe_configs`), so every committed record has a command that makes it.

A family's main runs are planned only once its learning-rate sweep is complete
and its best rate lies strictly inside the grid (:func:`lr_choice`); extend
:data:`LR_GRIDS` when it does not. The store resumes: a killed sweep restarts
where it stopped, and two processes never compute the same run.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .experiment import model_label, profile_settings, recall_config, train_recall

Family = tuple[str, str]  # (kind, position)
FAMILIES: tuple[Family, ...] = (("transformer", "learned"), ("transformer", "rope"), ("transformer", "none"),
                                ("mamba", "none"), ("hybrid", "none"))
LR_GRIDS: dict[Family, tuple[float, ...]] = {
    ("transformer", "learned"): (3e-4, 1e-3, 3e-3, 1e-2),
    ("transformer", "rope"): (3e-4, 1e-3, 3e-3, 1e-2),
    ("transformer", "none"): (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    ("mamba", "none"): (3e-4, 1e-3, 3e-3, 1e-2),
    ("hybrid", "none"): (1e-3, 3e-3, 1e-2),
}
"""Learning rates swept per family (factors of about 3). The models with Mamba layers,
whose runs cost ten times more, started from three rates around the 3e-3 that an
earlier, shorter sweep found best; a grid is extended when its best rate is at an end
(Mamba's was: 1e-3 and 3e-3 converged in about as many steps, and the rule picked 1e-3;
the NoPE Transformer's too: only 3e-4 converged on both seeds)."""
LR_TASKS: dict[Family, dict[str, int]] = {
    ("transformer", "learned"): {"M": 1, "tau": 1},
    ("transformer", "none"): {"M": 1, "tau": 1},
    ("transformer", "rope"): {"M": 4, "tau": 1},
    ("mamba", "none"): {"M": 4, "tau": 1},
    ("hybrid", "none"): {"M": 4, "tau": 1},
}
"""The one representative task each family is swept on: the induction head for the
two Transformers that only Problem 1 trains, AR with four queries (Problem 2's
first setting) for the three models of Problem 2."""
LR_SEEDS = 2
"""Seeds per point of the sweep (the first ones of the profile)."""


def family_of(config: dict[str, Any]) -> Family:
    return config["kind"], config["position"]


def sweep_configs(profile: str, family: Family) -> list[dict[str, Any]]:
    """The learning-rate sweep of one family: every rate of its grid, first seeds of the profile."""
    kind, position = family
    seeds = profile_settings(profile)["seeds"][:LR_SEEDS]
    return [recall_config(profile, kind=kind, position=position, lr=lr, seed=seed, **LR_TASKS[family])
            for lr in LR_GRIDS[family] for seed in seeds]


def stored(store, configs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of ``configs`` that ``store`` holds, in order; computes nothing."""
    return [r for r in (store.get("recall", c, train_recall) for c in configs) if r is not None]


CAP_FACTOR = 2.5
"""How much a cap is raised: 40,000 steps, then 100,000, 250,000 and 625,000 at the cpu profile."""
CAP_RAISES = {"smoke": 0, "cpu": 3, "gpu": 2}
"""How often, per profile, a run that stopped at its step cap is run again with a higher cap
(three times at cpu since 2026-11-30: two probes were still rising at 100,000 and 250,000 steps).
Never at smoke, whose runs stop at a ten-step cap by design. A higher cap changes nothing
before the old one: training is seeded and its rate constant after warm-up, so the run
repeats the capped run's steps and goes on (tested; checked on the first raised runs); run
through the store it continues from the capped run's checkpoint (:mod:`lib.checkpoint`)."""


def cap_ladder(config: dict[str, Any], profile: str) -> list[dict[str, Any]]:
    """``config`` and its versions with raised caps (:data:`CAP_FACTOR`), lowest cap first."""
    caps = [round(config["max_steps"] * CAP_FACTOR ** k) for k in range(CAP_RAISES[profile] + 1)]
    return [recall_config(profile, **{**config, "max_steps": cap}) for cap in caps]


def final_records(store, configs: Sequence[dict[str, Any]],
                  fn: Callable[[dict[str, Any]], Any] = train_recall) -> list[dict[str, Any]]:
    """Per configuration, the stored record that stands for it: the one with the highest cap
    on its :func:`cap_ladder`; in order, a configuration without any left out. Computes nothing."""
    out = []
    for config in configs:
        found = [store.get("recall", c, fn) for c in cap_ladder(config, store.profile)]
        out += [r for r in reversed(found) if r is not None][:1]
    return out


def sweep_to_a_stop(store, configs: Sequence[dict[str, Any]],
                    fn: Callable[[dict[str, Any]], Any] = train_recall) -> list[dict[str, Any]]:
    """Run ``configs`` until each stops for a reason other than its cap: a run that stops at
    the cap is not a result, so it is run again one step up its :func:`cap_ladder`, as far
    as the ladder goes (a read-only store only lists what is missing). Returns the
    stored records that stand for the configurations (:func:`final_records`), in order
    (a configuration without any is left out)."""
    ladders = [cap_ladder(c, store.profile) for c in configs]
    rung = [max((i for i, c in enumerate(ladder) if store.get("recall", c, fn) is not None), default=0)
            for ladder in ladders]
    todo = list(range(len(configs)))
    while todo:
        store.sweep("recall", [ladders[k][rung[k]] for k in todo], fn)
        records = {k: store.get("recall", ladders[k][rung[k]], fn) for k in todo}
        todo = [k for k, r in records.items()
                if r is not None and r["result"]["stop_reason"] == "cap" and rung[k] + 1 < len(ladders[k])]
        for k in todo:
            rung[k] += 1
    return final_records(store, configs, fn)


def lr_scores(records: Sequence[dict[str, Any]]) -> dict[float, dict[str, float]]:
    """Per swept rate: seeds run, seeds converged, mean steps to stop, mean final validation accuracy."""
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for record in records:
        by_lr.setdefault(record["config"]["lr"], []).append(record["result"])
    return {lr: {"runs": len(runs),
                 "converged": sum(r["stop_reason"] == "converged" for r in runs),
                 "steps": float(np.mean([r["steps_run"] for r in runs])),
                 "log_steps": float(np.mean([math.log10(r["steps_run"]) for r in runs])),
                 "final": float(np.mean([r["final"]["val_accuracy"] for r in runs]))}
            for lr, runs in sorted(by_lr.items())}


def chosen_lr(records: Sequence[dict[str, Any]]) -> float:
    """The best swept rate: most seeds converged, then fewest steps (geometric mean over
    seeds), then best final validation accuracy. ``records`` are store records of one family."""
    scores = lr_scores(records)
    if not scores:
        raise ValueError("no learning-rate sweep records")
    return max(scores, key=lambda lr: (scores[lr]["converged"], -round(scores[lr]["log_steps"], 3),
                                       scores[lr]["final"]))


def lr_choice(store, profile: str, family: Family, run: bool = False) -> dict[str, Any]:
    """The sweep of ``family`` in ``store`` (run first when ``run``): ``{"records", "complete",
    "lr", "inside"}``. ``lr`` is None until the sweep is complete; ``inside`` says whether it
    lies strictly inside the grid (neither end)."""
    configs = sweep_configs(profile, family)
    records = store.sweep("recall", configs, train_recall) if run else stored(store, configs)
    complete = len(records) == len(configs)
    lr = chosen_lr(records) if complete else None
    grid = LR_GRIDS[family]
    return {"records": records, "complete": complete, "lr": lr,
            "inside": lr is not None and grid[0] < lr < grid[-1]}


def learning_rates(store, profile: str, run: bool = False) -> dict[Family, dict[str, Any]]:
    """:func:`lr_choice` of every family, with ``"use"``: the rate the main runs take, or None.
    At the smoke profile any complete sweep gives a rate (its runs are a few steps long);
    elsewhere the rate must also lie strictly inside the grid."""
    out = {}
    for family in FAMILIES:
        choice = lr_choice(store, profile, family, run=run)
        choice["use"] = choice["lr"] if choice["complete"] and (choice["inside"] or profile == "smoke") else None
        out[family] = choice
    return out


def problem_settings(problem: int, profile: str) -> list[dict[str, Any]]:
    """The settings of one problem (without lr and seed), most decisive first."""
    if problem == 1:
        return [{"kind": k, "position": p, "M": 1, "tau": tau} for tau in (1, 5) for k, p in FAMILIES]
    if problem == 2:
        return [{"kind": k, "position": p, "M": M, "tau": 1} for M in (4, 8, 16)
                for k, p in (("mamba", "none"), ("hybrid", "none"), ("transformer", "rope"))]
    if problem == 3:  # width = d (first reading), and d = 64 at width 64 for the delay
        return ([{"kind": "mamba", "d": 64, "width": 64, "M": M, "tau": 1} for M in (4, 8, 16)]
                + [{"kind": "mamba", "d": 8, "width": 8, "M": M, "tau": 1} for M in (4, 8, 16)]
                + [{"kind": "mamba", "d": 64, "width": 64, "M": 16, "tau": 10}])
    raise ValueError(f"problem must be 1, 2 or 3, got {problem}")


def problem_configs(problem: int, profile: str, lrs: dict[Family, float | None],
                    seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Every configuration of one problem whose family has a chosen rate in ``lrs``
    (families without one are left out), seeds innermost."""
    seeds = profile_settings(profile)["seeds"] if seeds is None else seeds
    out = []
    for setting in problem_settings(problem, profile):
        lr = lrs.get((setting["kind"], setting.get("position", "none")))
        if lr is not None:
            out += [recall_config(profile, lr=lr, seed=seed, **setting) for seed in seeds]
    return out


HORIZON = 3
"""A horizon probe's plateau minimum, in multiples of the profile's ``plateau_min_steps``."""


def neighbours(family: Family, lr: float) -> tuple[float, ...]:
    """The rates either side of ``lr`` in the family's :data:`LR_GRIDS` (one at an end)."""
    grid = LR_GRIDS[family]
    i = grid.index(lr)
    return grid[max(i - 1, 0):i] + grid[i + 1:i + 2]


def probe_configs(profile: str, lrs: dict[Family, float | None]) -> dict[str, list[dict[str, Any]]]:
    """The probes the chapters read besides the planned runs, by name: where a planned run
    stopped on the plateau rule far from the task, the same setting at the neighbouring
    rates of the family's grid, and with a plateau minimum :data:`HORIZON` times as long.
    A family without a chosen rate in ``lrs`` has none yet.

    - ``nope-tau5-rates``, ``nope-tau5-horizon``: the NoPE Transformer's induction head
      with delay 5 (Problem 1; rates on the sweep's two seeds, the horizon on the first);
    - ``mamba-tau10-rates``, ``mamba-tau10-horizon``: Mamba, d = 64, width 64, full AR
      (M = 16) with delay 10 (Problem 3b; rates on the first seed, the horizon on every seed);
    - ``mamba-width8-rates``: Mamba with width = d = 8 on full AR (Problem 3a, first seed).
    """
    settings = profile_settings(profile)
    seeds, horizon = settings["seeds"], HORIZON * settings["plateau_min_steps"]
    out: dict[str, list[dict[str, Any]]] = {}
    nope, mamba = lrs.get(("transformer", "none")), lrs.get(("mamba", "none"))
    if nope is not None:
        task = dict(kind="transformer", position="none", M=1, tau=5)
        out["nope-tau5-rates"] = [recall_config(profile, lr=lr, seed=seed, **task)
                                  for lr in neighbours(("transformer", "none"), nope)
                                  for seed in seeds[:LR_SEEDS]]
        out["nope-tau5-horizon"] = [recall_config(profile, lr=nope, seed=seeds[0],
                                                  plateau_min_steps=horizon, **task)]
    if mamba is not None:
        delay = dict(kind="mamba", d=64, width=64, M=16, tau=10)
        out["mamba-tau10-rates"] = [recall_config(profile, lr=lr, seed=seeds[0], **delay)
                                    for lr in neighbours(("mamba", "none"), mamba)]
        out["mamba-tau10-horizon"] = [recall_config(profile, lr=mamba, seed=seed,
                                                    plateau_min_steps=horizon, **delay)
                                      for seed in seeds]
        out["mamba-width8-rates"] = [recall_config(profile, kind="mamba", d=8, width=8, M=16, tau=1,
                                                   lr=lr, seed=seeds[0])
                                     for lr in neighbours(("mamba", "none"), mamba)]
    return out


def _main(argv: Sequence[str] | None = None) -> None:
    import torch

    from ..store import ResultsStore

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--families", nargs="+", default=["transformer", "mamba", "hybrid"],
                        help="kinds to run: transformer, mamba, hybrid")
    parser.add_argument("--problems", nargs="*", type=int, default=[2, 1, 3],
                        help="the problems whose planned runs to run (none: only the probes)")
    parser.add_argument("--probes", nargs="*", default=None, metavar="NAME",
                        help="after the problems, the chapters' probes (all, or those named; see probe_configs)")
    parser.add_argument("--list", action="store_true", help="only say what is stored and what is missing")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    store = ResultsStore(args.profile, read_only=args.list or None)
    families = [f for f in FAMILIES if f[0] in args.families]
    lrs: dict[Family, float | None] = {}
    for family in families:
        choice = lr_choice(store, args.profile, family, run=not args.list)
        lrs[family] = choice["lr"] if choice["complete"] and (choice["inside"] or args.profile == "smoke") else None
        print(f"{model_label(*family):26s} sweep {len(choice['records'])}/{len(sweep_configs(args.profile, family))}"
              f"  lr {choice['lr']}  {'inside the grid' if choice['inside'] else 'NOT inside: extend LR_GRIDS'}",
              flush=True)
    for problem in args.problems:
        configs = problem_configs(problem, args.profile, lrs)
        records = final_records(store, configs) if args.list else sweep_to_a_stop(store, configs)
        print(f"Problem {problem}: {len(records)}/{len(configs)} runs stored", flush=True)
    if args.probes is not None:
        probes = probe_configs(args.profile, lrs)
        known = set(probe_configs(args.profile, {f: LR_GRIDS[f][0] for f in FAMILIES}))
        unknown = set(args.probes) - known
        if unknown:
            parser.error(f"unknown probes {sorted(unknown)}; known: {sorted(known)}")
        for name in sorted(set(args.probes or known) - set(probes)):
            print(f"probe {name}: not ready (its family is not in --families, or its "
                  "learning-rate sweep has no chosen rate yet)", flush=True)
        for name, configs in probes.items():
            if args.probes and name not in args.probes:
                continue
            records = final_records(store, configs) if args.list else sweep_to_a_stop(store, configs)
            stops = ", ".join(r["result"]["stop_reason"] for r in records)
            print(f"probe {name}: {len(records)}/{len(configs)} stored ({stops})", flush=True)


if __name__ == "__main__":
    _main()
