"""Summaries and figures of associative-recall results, shared by the recall chapters.

Inputs are results-store records of :func:`lib.recall.experiment.train_recall`
(``{"config": ..., "result": ...}``). Two kinds of uncertainty are kept apart:

- one run's accuracy at one length is a binomial proportion over ``per_length``
  fresh sequences, given with its Wilson interval (:func:`lib.stats.wilson_interval`);
- the spread over training seeds is a mean with a Student-t interval over seeds
  (:func:`lib.stats.mean_interval`); figures draw that band and each seed faintly.

Runs stopped by the step cap are not results: :func:`results_only` drops them,
and every table says how many seeds of a setting are present.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import NullFormatter

from ..stats import Welch, mean_interval, welch_t, wilson_interval
from .experiment import model_label
from .task import chance_accuracy

Record = dict[str, Any]
STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ("-", "v"), ("--", "x")]
"""(line style, marker) per curve, so that curves lying on top of each other stay distinguishable."""


def group(records: Sequence[Record], key: Callable[[dict[str, Any]], Hashable]) -> dict[Hashable, list[Record]]:
    """Records grouped by ``key(config)``, in first-seen order."""
    groups: dict[Hashable, list[Record]] = {}
    for record in records:
        groups.setdefault(key(record["config"]), []).append(record)
    return groups


def results_only(records: Sequence[Record]) -> list[Record]:
    """The records that are results: stopped by convergence, a plateau or divergence, not by the cap."""
    return [r for r in records if r["result"]["stop_reason"] != "cap"]


def label(config: dict[str, Any]) -> str:
    """The model's display name for a configuration."""
    return model_label(config["kind"], config.get("position", "none"))


def cpu_hours(records: Sequence[Record]) -> float:
    """CPU time of the runs behind ``records`` (training and evaluation), in hours."""
    return sum(r.get("provenance", {}).get("cpu_seconds", r.get("seconds", 0.0)) for r in records) / 3600


# --- accuracy against length --------------------------------------------------------------

def length_matrix(runs: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, int]:
    """Lengths (T,), correct answers per seed and length (S, T), sequences per length n."""
    lengths = np.asarray(runs[0]["result"]["lengths"])
    correct = np.array([r["result"]["length_correct"] for r in runs])
    return lengths, correct, int(runs[0]["result"]["length_n"])


def length_curve(runs: Sequence[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy against test length over seeds: lengths (T,), mean, low, high (T,) each,
    the band a 95% Student-t interval over seeds, clipped to [0, 1]."""
    lengths, correct, n = length_matrix(runs)
    mean, low, high = mean_interval(correct / n)
    return lengths, mean, np.clip(low, 0, 1), np.clip(high, 0, 1)


def accuracy_at(runs: Sequence[Record], length: int) -> dict[str, Any]:
    """Accuracy at one tested length: ``mean`` over seeds with its seed interval
    (``low``, ``high``), and ``seeds``: per seed (accuracy, Wilson low, Wilson high)."""
    lengths, correct, n = length_matrix(runs)
    column = list(lengths).index(length)
    k = correct[:, column]
    mean, low, high = mean_interval(k / n)
    wl, wh = wilson_interval(k, np.full_like(k, n))
    return {"mean": float(mean), "low": float(max(low, 0)), "high": float(min(high, 1)),
            "seeds": [(float(a), float(b), float(c)) for a, b, c in zip(k / n, wl, wh)]}


def mean_beyond(runs: Sequence[Record], start: int, stop: int | None = None) -> float:
    """Mean accuracy over seeds and over the tested lengths in (start, stop]."""
    lengths, correct, n = length_matrix(runs)
    keep = (lengths > start) & (lengths <= (stop if stop is not None else lengths.max()))
    return float((correct[:, keep] / n).mean())


def fmt_interval(summary: dict[str, Any], scale: float = 100, digits: int = 0) -> str:
    """``"97 [95, 99]"`` for a summary with ``mean``, ``low``, ``high``."""
    f = f"{{:.{digits}f}}"
    return f"{f.format(scale * summary['mean'])} [{f.format(scale * summary['low'])}, " \
           f"{f.format(scale * summary['high'])}]"


def no_runs(ax: Axes) -> None:
    """Say on an empty panel that its runs are not stored yet."""
    ax.text(0.5, 0.5, "no stored runs yet", transform=ax.transAxes, ha="center", va="center",
            color="grey", fontsize=9)


def plot_length_accuracy(ax: Axes, groups: dict[Hashable, list[Record]], L: int, title: str = "",
                         labels: Sequence[str] | None = None) -> None:
    """Accuracy against test length (log axis), one colour per group: the mean over seeds
    with its 95% Student-t interval over seeds as a band (none for a single seed), each
    seed as a faint line inside a fainter band, its 95% Wilson interval; the chance
    level 1/K; dashed lines at L and 3L."""
    K = None
    for index, (key, runs) in enumerate(groups.items()):
        lengths, mean, low, high = length_curve(runs)
        _, correct, n = length_matrix(runs)
        style, marker = STYLES[index % len(STYLES)]
        name = labels[index] if labels is not None else label(runs[0]["config"])
        (line,) = ax.plot(lengths, mean, ls=style, marker=marker, ms=3, markevery=(index % 4, 8),
                          label=f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        if len(runs) > 1:
            ax.fill_between(lengths, low, high, alpha=0.2, color=line.get_color(), linewidth=0)
        for row in correct:
            ax.plot(lengths, row / n, color=line.get_color(), lw=0.5, alpha=0.35)
            w_low, w_high = wilson_interval(row, np.full_like(row, n))
            ax.fill_between(lengths, w_low, w_high, alpha=0.08, color=line.get_color(), linewidth=0)
        K = runs[0]["config"]["K"]
    if not groups:
        no_runs(ax)
    if K is not None:
        ax.axhline(chance_accuracy(K), color="black", lw=0.8, ls=":")
        ax.text(3, chance_accuracy(K) + 0.02, "chance 1/K", fontsize=7)
    for x, text in ((L, "L"), (3 * L, "3L")):
        ax.axvline(x, color="grey", ls="--", lw=0.8)
        ax.text(x, 1.03, text, color="grey", fontsize=7, ha="center")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="test sequence length (log scale)", ylabel="accuracy", ylim=(-0.02, 1.08), title=title)


# --- training -----------------------------------------------------------------------------

def stop_summary(runs: Sequence[Record]) -> str:
    """``"3 converged"``, ``"2 converged, 1 plateau"``, ..."""
    reasons = [r["result"]["stop_reason"] for r in runs]
    return ", ".join(f"{reasons.count(x)} {x}" for x in ("converged", "plateau", "diverged", "cap")
                     if x in reasons)


def steps_summary(runs: Sequence[Record]) -> dict[str, Any]:
    """Steps to the stop over seeds: ``mean``, ``low``, ``high`` (Student-t), ``steps`` per seed,
    and ``all_converged``."""
    steps = np.array([r["result"]["steps_run"] for r in runs], dtype=float)
    mean, low, high = mean_interval(steps)
    return {"mean": float(mean), "low": float(max(low, 0)), "high": float(high), "steps": steps.tolist(),
            "all_converged": all(r["result"]["stop_reason"] == "converged" for r in runs)}


def compare_runs(a: Sequence[Record], b: Sequence[Record], L: int) -> dict[str, Welch]:
    """Welch's t over seeds of the runs ``a`` against ``b`` (two or more seeds each):

    - ``"steps"``: log10 steps to the stop, so the difference reads as a ratio
      10^diff (A over B); only when every run of both converged (a plateau's
      steps are not steps to converge), else the key is absent;
    - ``"at 3L"``, ``"at 8L"``: accuracy in points (seed means), A - B.
    """
    out: dict[str, Welch] = {}
    if all(r["result"]["stop_reason"] == "converged" for r in [*a, *b]):
        out["steps"] = welch_t(*[[float(np.log10(r["result"]["steps_run"])) for r in runs] for runs in (a, b)])
    for m in (3, 8):
        out[f"at {m}L"] = welch_t(*[[100 * x for x, _, _ in accuracy_at(runs, m * L)["seeds"]]
                                    for runs in (a, b)])
    return out


def comparison_text(what: str, test: Welch) -> str:
    """``"x1.52 [1.26, 1.83]"`` for steps (a ratio), ``"+9.6 [+7.4, +11.8]"`` (points) otherwise."""
    if what == "steps":
        return f"x{10 ** test.difference:.2f} [{10 ** test.low:.2f}, {10 ** test.high:.2f}]"
    return f"{test.difference:+.1f} [{test.low:+.1f}, {test.high:+.1f}]"


def held_curve(runs: Sequence[Record], key: str = "val_accuracy") -> tuple[np.ndarray, np.ndarray]:
    """One history metric of every seed on the longest run's steps, each run held at its
    last value after it stopped: steps (T,), values (S, T)."""
    longest = max(runs, key=lambda r: len(r["result"]["history"]["step"]))
    steps = np.asarray(longest["result"]["history"]["step"])
    rows = []
    for r in runs:
        a = [np.nan if v is None else v for v in r["result"]["history"][key]]
        rows.append(a + [a[-1]] * (len(steps) - len(a)))
    return steps, np.array(rows, dtype=float)


def plot_convergence(ax: Axes, groups: dict[Hashable, list[Record]], title: str = "", key: str = "val_accuracy",
                     labels: Sequence[str] | None = None) -> None:
    """A history metric against training step: mean over seeds (runs held at their last value
    after they stop) with its 95% Student-t interval over seeds as a band (none for a single
    seed), each seed faintly, and a cross where each run stopped. For the validation
    accuracy also each seed's 95% Wilson band over the validation batch, and chance 1/K."""
    for index, (k, runs) in enumerate(groups.items()):
        steps, values = held_curve(runs, key)
        style, _ = STYLES[index % len(STYLES)]
        name = labels[index] if labels is not None else label(runs[0]["config"])
        _, low, high = mean_interval(values)
        (line,) = ax.plot(steps, np.nanmean(values, 0), ls=style, lw=1.4, label=name)
        if len(runs) > 1:  # accuracies lie in [0, 1], losses are >= 0
            low = np.clip(low, 0, None)
            high = np.clip(high, None, 1) if key.endswith("accuracy") else high
            ax.fill_between(steps, low, high, alpha=0.2, color=line.get_color(), linewidth=0)
        for r, row in zip(runs, values):
            ax.plot(steps, row, color=line.get_color(), lw=0.5, alpha=0.35)
            if key == "val_accuracy":  # Wilson band over the validation batch
                n = r["config"]["eval_batch"]
                ok = ~np.isnan(row)
                w_low, w_high = wilson_interval(np.round(row[ok] * n), np.full(ok.sum(), n))
                ax.fill_between(steps[ok], w_low, w_high, alpha=0.08, color=line.get_color(), linewidth=0)
            history = r["result"]["history"]
            ax.plot(history["step"][-1], history[key][-1], "x", color=line.get_color(), ms=5)
    if not groups:
        no_runs(ax)
    elif key == "val_accuracy":
        K = next(iter(groups.values()))[0]["config"]["K"]
        ax.axhline(chance_accuracy(K), color="black", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ylabel = {"val_accuracy": "validation-batch accuracy", "train_accuracy": "training accuracy",
              "train_loss": "training loss"}.get(key, key)
    ax.set(xlabel="training step (batch 64, log scale)", ylabel=ylabel, title=title)
    if key.endswith("accuracy"):
        ax.set_ylim(-0.02, 1.02)


def settings_table(groups: dict[Hashable, list[Record]], names: Sequence[str], L: int,
                   multiples: Sequence[int] = (1, 3, 8), state: bool = False,
                   seeds: int | None = None) -> list[str]:
    """Text lines, at most 80 characters, a block per setting: its name; seeds stored (of
    ``seeds`` planned) and their stop reasons; steps to the stop (mean [95% interval over
    seeds]); accuracy in % at each multiple of L (mean [95% interval over seeds]); each
    seed's accuracy at the largest multiple with its 95% Wilson interval; and with
    ``state`` the model's recurrent state in floats (selective state + convolution)."""
    rows = []
    for name, runs in zip(names, groups.values()):
        steps = steps_summary(runs)
        of = f" of {seeds}" if seeds is not None else ""
        rows.append(name)
        rows.append(f"  {len(runs)}{of} seeds: {stop_summary(runs)}; "
                    f"steps to stop {fmt_interval(steps, 1)}")
        rows.append("  accuracy %, seed mean [95% interval over seeds]:")
        rows.append("   " + "".join(f" {str(m) if m > 1 else ''}L "
                                    f"{fmt_interval(accuracy_at(runs, m * L)):17s}" for m in multiples).rstrip())
        far = max(multiples)
        seeds_at = "; ".join(f"{100 * a:.0f} [{100 * lo:.0f}, {100 * hi:.0f}]"
                             for a, lo, hi in accuracy_at(runs, far * L)["seeds"])
        rows.append(f"  per seed at {far}L, [95% Wilson]: {seeds_at}")
        if state:
            floats = runs[0]["result"]["state_floats"]
            rows.append(f"  recurrent state: {floats['ssm'] + floats['conv']:,d} floats "
                        f"({floats['ssm']:,d} selective + {floats['conv']:,d} convolution)")
    return rows


def coverage(planned: Sequence[tuple[Hashable, str]], groups: dict[Hashable, list[Record]],
             seeds: int) -> tuple[list[str], list[str], list[str]]:
    """What is stored of a chapter's plan. ``planned``: (setting key, display name) per
    planned setting; ``groups``: stored results by setting key. Returns text lines (at most
    80 characters: name, seeds stored of ``seeds``), the names of complete settings and
    the names of incomplete ones."""
    lines, complete, missing = [], [], []
    width = max([10] + [len(name) for _, name in planned])
    for key, name in planned:
        n = len(groups.get(key, []))
        (complete if n >= seeds else missing).append(name)
        lines.append(f"{name:{width}s} {n} of {seeds} seeds stored")
    return lines, complete, missing


def setting_summary(runs: Sequence[Record], L: int) -> dict[str, Any]:
    """Everything the commentary reads about one setting (seeds of one configuration):
    stop reasons, steps (:func:`steps_summary`), accuracy at L, 2L, 3L, 8L
    (:func:`accuracy_at`), mean accuracy beyond L up to 3L and beyond 3L, and at the
    shortest length the accuracy and the share of answers that repeat the query."""
    lengths = runs[0]["result"]["lengths"]
    return {
        "seeds": len(runs),
        "reasons": [r["result"]["stop_reason"] for r in runs],
        "all_converged": all(r["result"]["stop_reason"] == "converged" for r in runs),
        "steps": steps_summary(runs),
        **{name: accuracy_at(runs, m * L) for name, m in (("L", 1), ("2L", 2), ("3L", 3), ("8L", 8))
           if m * L in lengths},
        "beyond": mean_beyond(runs, L, 3 * L),
        "far": mean_beyond(runs, 3 * L),
        "shortest": accuracy_at(runs, lengths[0]),
        "shortest_query": float(np.mean([r["result"]["length_query_answers"][0] for r in runs])),
    }


PENDING = "(pending)"
"""What the prose shows for a number whose runs are not all stored yet."""


def glue_text(glue: Callable[..., Any], name: str, compute: Callable[[], Any], fmt: str = "{:.0f}") -> str:
    """``glue(name, fmt.format(compute()))`` as text, or :data:`PENDING` when ``compute``
    needs a setting whose runs are missing (it raises KeyError). Returns the text."""
    try:
        text = fmt.format(compute())
    except KeyError:
        text = PENDING
    glue(name, text, display=False)
    return text
