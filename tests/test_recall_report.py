"""lib.recall.report: the tables fit 80 columns, coverage counts seeds, the
figures draw the seed band, each seed's Wilson band and chance, and empty
panels say that their runs are missing."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib import pyplot as plt

from lib.recall.report import (accuracy_at, comparison_text, compare_runs,
                               coverage, plot_convergence,
                               plot_length_accuracy, settings_table)
from lib.stats import wilson_interval


def fake_run(seed: int, correct: list[int], n: int = 1000, L: int = 8,
             reason: str = "converged") -> dict:
    lengths = list(range(3, 3 * L + 1)) + [8 * L]
    assert len(correct) == len(lengths)
    return {"config": {"kind": "mamba", "position": "none", "K": 16,
                       "eval_batch": 256, "seed": seed},
            "result": {"lengths": lengths, "length_correct": correct,
                       "length_n": n, "stop_reason": reason,
                       "steps_run": 100 * (seed + 1),
                       "state_floats": {"ssm": 4096, "conv": 768},
                       "history": {"step": [25, 50, 75],
                                   "val_accuracy": [0.1, 0.5, 1.0],
                                   "train_loss": [2.0, 1.0, 0.1]}}}


def runs(L: int = 8) -> list[dict]:
    T = 3 * L - 2 + 1
    rng = np.random.default_rng(0)
    return [fake_run(s, list(rng.integers(0, 1001, T)), L=L) for s in range(3)]


def test_settings_table_fits_80_columns_and_reports_wilson() -> None:
    groups = {"a": runs(), "b": runs()[:2]}
    names = ["Mamba d = 64, width 64, M = 16, tau = 10", "Transformer (RoPE)"]
    lines = settings_table(groups, names, 8, state=True, seeds=3)
    assert lines and all(len(line) <= 80 for line in lines)
    assert any("2 of 3 seeds" in line for line in lines)
    # the per-seed figures at 8L are Wilson intervals of the stored counts
    k = runs()[0]["result"]["length_correct"][-1]
    low, high = wilson_interval(k, 1000)
    assert accuracy_at(runs(), 64)["seeds"][0] == pytest.approx(
        (k / 1000, low, high))
    assert f"{100 * low:.0f}, {100 * high:.0f}]" in "\n".join(lines)


def test_coverage_counts_seeds_per_planned_setting() -> None:
    groups = {("x", 1): runs(), ("y", 1): runs()[:1]}
    planned = [(("x", 1), "x"), (("y", 1), "y"), (("z", 1), "z")]
    lines, complete, missing = coverage(planned, groups, 3)
    assert complete == ["x"] and missing == ["y", "z"]
    assert [line.split()[1] for line in lines] == ["3", "1", "0"]


def test_figures_draw_bands_chance_and_say_when_empty() -> None:
    fig, (a, b, c) = plt.subplots(1, 3)
    plot_length_accuracy(a, {"m": runs()}, 8)
    # one seed band and three Wilson bands; chance at 1/16
    assert len(a.collections) == 4
    assert any(np.allclose(line.get_ydata(), 1 / 16) for line in a.lines)
    plot_convergence(b, {"m": runs()})
    assert any(np.allclose(line.get_ydata(), 1 / 16) for line in b.lines)
    plot_length_accuracy(c, {}, 8)
    assert any("no stored runs" in t.get_text() for t in c.texts)
    plt.close(fig)


def test_compare_runs_gives_steps_only_for_converged_runs() -> None:
    a, b = runs(), runs()
    for r in b:
        r["result"]["steps_run"] *= 2
        r["result"]["length_correct"] = [max(0, k - 100) for k in r["result"]["length_correct"]]
    tests = compare_runs(a, b, 8)
    assert set(tests) == {"steps", "at 3L", "at 8L"}
    assert 10 ** tests["steps"].difference == pytest.approx(0.5)
    assert comparison_text("steps", tests["steps"]).startswith("x0.50 [")
    assert tests["at 8L"].difference == pytest.approx(
        np.mean([r["result"]["length_correct"][-1] for r in a])
        / 10 - np.mean([r["result"]["length_correct"][-1] for r in b]) / 10)
    b[0]["result"]["stop_reason"] = "plateau"  # a plateau's steps are not steps to converge
    assert set(compare_runs(a, b, 8)) == {"at 3L", "at 8L"}
