"""Summaries and figures of associative-recall results, shared by the recall chapters.

Inputs are results-store records of :func:`lib.recall.experiment.train_recall`
(``{"config": ..., "result": ...}``); seeds of one setting are grouped and shown
as a mean with a band from the worst to the best seed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from ..plots import heatmap, line_with_band
from .experiment import model_label

Record = dict[str, Any]
STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ("-", "v"), ("--", "x")]
"""(line style, marker) per curve, so that curves lying on top of each other stay distinguishable."""


def _restyle(ax: Axes, index: int) -> None:
    line = ax.get_lines()[-1]
    style, marker = STYLES[index % len(STYLES)]
    line.set_linestyle(style)
    line.set_marker(marker)
    line.set_markevery((index % 5, 5))


def group(records: Sequence[Record], key: Callable[[dict[str, Any]], Hashable]) -> dict[Hashable, list[Record]]:
    """Records grouped by ``key(config)``, in first-seen order."""
    groups: dict[Hashable, list[Record]] = {}
    for record in records:
        groups.setdefault(key(record["config"]), []).append(record)
    return groups


def label(config: dict[str, Any]) -> str:
    """The model's display name for a configuration."""
    return model_label(config["kind"], config.get("position", "none"))


def length_curve(runs: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy against test length over seeds: lengths (T,), mean, min, max (T,) each."""
    lengths = np.asarray(runs[0]["result"]["lengths"])
    acc = np.array([r["result"]["length_accuracy"] for r in runs])  # (seeds, T)
    return lengths, acc.mean(0), acc.min(0), acc.max(0)


def accuracy_at(runs: Sequence[Record], lengths: Sequence[int]) -> np.ndarray:
    """Mean accuracy over seeds at exactly each of ``lengths`` (which must be tested lengths)."""
    all_lengths, mean, _, _ = length_curve(runs)
    return np.array([mean[list(all_lengths).index(n)] for n in lengths])


def convergence_curve(runs: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Test-batch accuracy against step over seeds: steps (T,), mean, min, max.

    Runs that stopped early (converged) keep their last value up to the longest run.
    """
    longest = max(runs, key=lambda r: len(r["result"]["history"]["step"]))
    steps = np.asarray(longest["result"]["history"]["step"])
    acc = []
    for r in runs:
        a = r["result"]["history"]["test_accuracy"]
        acc.append(a + [a[-1]] * (len(steps) - len(a)))
    acc = np.array(acc)
    return steps, acc.mean(0), acc.min(0), acc.max(0)


def steps_to_converge(runs: Sequence[Record]) -> list[int | None]:
    """Per seed, the step at which training stopped by the convergence rule (None if it hit the limit)."""
    return [r["result"]["steps_run"] if r["result"]["converged"] else None for r in runs]


def plot_length_accuracy(ax: Axes, groups: dict[Hashable, list[Record]], L: int, title: str = "") -> None:
    """One curve (mean, band min..max over seeds) per group of accuracy against test length."""
    for index, runs in enumerate(groups.values()):
        lengths, mean, low, high = length_curve(runs)
        line_with_band(ax, lengths, mean, low, high, label=f"{label(runs[0]['config'])} ({len(runs)} seeds)")
        _restyle(ax, index)
    ax.axvline(L, color="grey", ls="--", lw=1)
    ax.text(L, 0.02, " training length", color="grey", fontsize=7)
    ax.set(xlabel="test sequence length", ylabel="accuracy", ylim=(-0.02, 1.02), title=title)


def plot_convergence(ax: Axes, groups: dict[Hashable, list[Record]], title: str = "") -> None:
    """Test-batch accuracy against training step (mean, band over seeds) per group."""
    for index, runs in enumerate(groups.values()):
        steps, mean, low, high = convergence_curve(runs)
        line_with_band(ax, steps, mean, low, high, label=label(runs[0]["config"]))
        _restyle(ax, index)
    ax.set(xlabel="training step (batch 64)", ylabel="test-batch accuracy", ylim=(-0.02, 1.02), title=title)


def length_heatmap(ax: Axes, groups: dict[Hashable, list[Record]], row_labels: Sequence[str], bin_width: int = 8,
                   title: str = "") -> None:
    """Mean accuracy, rows = groups, columns = test lengths in bins of ``bin_width``."""
    rows, edges = [], None
    for runs in groups.values():
        lengths, mean, _, _ = length_curve(runs)
        edges = np.arange(lengths.min(), lengths.max() + bin_width, bin_width)
        rows.append([mean[(lengths >= a) & (lengths < a + bin_width)].mean() for a in edges[:-1]])
    columns = [f"{a}-{min(a + bin_width - 1, int(lengths.max()))}" for a in edges[:-1]]
    heatmap(ax, np.array(rows), title=title, xlabel="test length", vmin=0.0, vmax=1.0)
    ax.set_xticklabels(columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticklabels(list(row_labels), fontsize=8)
