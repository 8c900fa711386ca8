"""One associative-recall experiment: train a :class:`~lib.recall.models.RecallModel` until it
converges or plateaus, then measure its accuracy at every test length.

``train_recall(config)`` is the function the results store runs for each
configuration of the recall chapters (see :class:`RecallConfig` for the keys).

Training draws fresh batches of ``batch`` sequences of length ``L`` from the
generator of :mod:`lib.recall.task` (a numpy stream seeded by ``seed``) and runs the
book's one loop, :func:`lib.train.fit`, with AdamW at a constant learning rate
after a short warm-up. Every ``eval_every`` steps it scores a fixed
*validation batch* (``eval_batch`` sequences of length ``L``, the same batch for
every model and seed; the problem's "test batch") and records the training
accuracy of the batches seen since the last evaluation. Every run stops for a
reason its record states (:func:`stop_reason`):

- ``converged``: validation accuracy at least ``target`` at ``patience``
  consecutive evaluations;
- ``plateau``: at least ``plateau_min_steps`` steps run, and the best validation
  accuracy (a trailing mean over ``plateau_smooth`` evaluations) in the last
  ``plateau_window`` of the steps is no more than ``plateau_delta`` above the best
  before them;
- ``diverged``: the training loss is not finite (the learning rate is too high);
- ``cap``: ``max_steps`` reached without any of these. Such a run is **not a
  result**: the chapters refuse it, and the cap must be raised.

After training, accuracy is measured at every length from tau + 2 to 3L and at
the ``far`` multiples of L beyond (:func:`lib.recall.task.evaluation_lengths`),
with ``per_length`` fresh sequences per length (a fixed stream): the record keeps
the number correct, so every accuracy comes with its binomial interval.

Run through the results store, training saves a checkpoint every few minutes
(:mod:`lib.checkpoint`): a killed run resumes where it was, and a run whose cap
was raised (:func:`lib.recall.plan.cap_ladder`) continues from the end of the
capped one instead of repeating its steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ..checkpoint import checkpoint_file
from ..config import normalise, require, takes
from ..train import default_device, fit, seeded
from .models import KINDS, POSITIONS, RecallModel, mamba_backend, mamba_state_floats, set_mamba_scan
from .task import embedding_matrix, evaluation_lengths, sample_recall

STOP_REASONS = ("converged", "plateau", "diverged", "cap")
"""Why a run stopped; only the first three are results (see the module docstring)."""


@dataclass(frozen=True)
class RecallConfig:
    """One recall experiment. Every key has a default; the store hashes all of them."""

    kind: Literal["transformer", "mamba", "hybrid"] = "transformer"
    position: Literal["learned", "rope", "none"] = "none"  # transformers only
    K: int = 16  # vocabulary size
    d: int = 8  # embedding dimension
    M: int = 1  # number of possible queries (1 = induction head, K = full AR)
    tau: int = 1  # delay between q and v
    L: int = 32  # training length
    width: int = 64  # model width (width = d is Problem 3's first reading)
    heads: int = 2  # attention heads
    fast_scan: bool = False  # Mamba layers: lib.recall.fast_mamba instead of mambapy
    batch: int = 64  # training batch size
    lr: float = 1e-3  # AdamW learning rate (constant after warm-up)
    warmup_steps: int = 50
    max_steps: int = 40_000  # hard cap; a run stopped by it is not a result
    eval_every: int = 25  # steps between validation-batch evaluations
    eval_batch: int = 256  # sequences in the fixed validation batch
    target: float = 0.99  # converged: validation accuracy at least this ...
    patience: int = 3  # ... at this many consecutive evaluations
    plateau_min_steps: int = 5000  # plateau: at least this many steps run, and ...
    plateau_window: float = 0.4  # ... over this last fraction of the steps ...
    plateau_delta: float = 0.01  # ... the best (smoothed) accuracy rose by at most this
    plateau_smooth: int = 8  # evaluations in the trailing mean the plateau rule compares
    per_length: int = 1000  # fresh test sequences per length after training
    far: list[int] = field(default_factory=lambda: [4, 5, 6, 8])  # test lengths beyond 3L, in L
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("K", "d", "L", "width", "heads", "batch", "max_steps", "eval_every", "eval_batch",
                     "patience", "per_length", "plateau_min_steps", "plateau_smooth"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        require(self.K >= 2, "K", self.K, "at least 2 (a query and another token)")
        require(1 <= self.M <= self.K, "M", self.M, f"between 1 and K={self.K}")
        require(self.tau >= 1, "tau", self.tau, "at least 1 (tau=0 would put v on top of q)")
        require(self.L >= self.tau + 2, "L", self.L, f"at least tau + 2 = {self.tau + 2}")
        require(self.kind == "transformer" or self.position == "none", "position", self.position,
                f"'none' for kind={self.kind!r} (only transformers take {POSITIONS})")
        require(self.kind == "mamba" or self.width % self.heads == 0, "heads", self.heads,
                f"a divisor of width={self.width}")
        require(self.kind != "transformer" or not self.fast_scan, "fast_scan", self.fast_scan,
                "False for a transformer (it has no Mamba layer)")
        require(self.lr > 0, "lr", self.lr, "a positive number")
        require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")
        require(0 <= self.target <= 1, "target", self.target, "an accuracy between 0 and 1")
        require(0 < self.plateau_window < 1, "plateau_window", self.plateau_window, "a fraction in (0, 1)")
        require(self.plateau_delta >= 0, "plateau_delta", self.plateau_delta, "a number >= 0")
        require(all(m > 3 for m in self.far), "far", self.far, "multiples of L above 3")
        require(self.seed >= 0, "seed", self.seed, "an integer >= 0")


assert KINDS == ("transformer", "mamba", "hybrid")
DEFAULTS: dict[str, Any] = normalise(RecallConfig, {})
"""Every key of :class:`RecallConfig` with its default."""

TEST_BATCH_SEED, LENGTH_SEED = 2024, 2025


def model_label(kind: str, position: str = "none") -> str:
    """Display name: ``"Transformer (RoPE)"``, ``"Mamba"``, ``"Hybrid"``."""
    if kind == "transformer":
        return "Transformer (" + {"learned": "learned PE", "rope": "RoPE", "none": "NoPE"}[position] + ")"
    return kind.capitalize()


def converged(accuracy: list[float], target: float, patience: int) -> bool:
    """The convergence rule: the last ``patience`` validation accuracies are all >= ``target``."""
    return len(accuracy) >= patience and all(a >= target for a in accuracy[-patience:])


def smoothed(accuracy: list[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` evaluations: (T,) -> (T,)."""
    a = np.asarray(accuracy, dtype=float)
    sums = np.cumsum(np.concatenate([[0.0], a]))
    start = np.maximum(np.arange(len(a)) + 1 - window, 0)
    return (sums[1:] - sums[start]) / (np.arange(len(a)) + 1 - start)


def plateaued(steps: list[int], accuracy: list[float], min_steps: int, window: float = 0.4,
              delta: float = 0.01, smooth: int = 8) -> bool:
    """The plateau rule: at least ``min_steps`` steps run, and over the last ``window``
    fraction of them the best trailing-mean accuracy is at most ``delta`` above the
    best before. ``steps`` and ``accuracy`` are the evaluation steps and accuracies (T,)."""
    if not steps or steps[-1] < min_steps:
        return False
    s = smoothed(accuracy, smooth)
    late = np.asarray(steps) > (1 - window) * steps[-1]
    if late.all() or not late.any():
        return False
    return bool(s[late].max() <= s[~late].max() + delta)


def stop_reason(history: dict[str, list[float]], c: dict[str, Any], at_cap: bool = False) -> str | None:
    """Why a run with this ``history`` stops now: ``"converged"``, ``"plateau"``,
    ``"diverged"``, ``"cap"`` (only when ``at_cap``), or None to go on.
    ``c`` is a normalised :class:`RecallConfig`."""
    losses = history.get("train_loss", [])
    if losses and not math.isfinite(losses[-1]):
        return "diverged"
    acc = history.get("val_accuracy", [])
    if converged(acc, c["target"], c["patience"]):
        return "converged"
    if plateaued(history.get("step", []), acc, c["plateau_min_steps"], c["plateau_window"],
                 c["plateau_delta"], c["plateau_smooth"]):
        return "plateau"
    return "cap" if at_cap else None


@torch.no_grad()
def batch_predictions(model: torch.nn.Module, tokens: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """The model's answer for each sequence: tokens (B, N) -> predicted tokens (B,)."""
    device = next(model.parameters()).device
    return torch.cat([model(tokens[s:s + chunk].to(device)).argmax(-1).cpu()
                      for s in range(0, len(tokens), chunk)])


def batch_accuracy(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of sequences (B, N) whose predicted value equals the label (B,)."""
    return (batch_predictions(model, tokens) == labels).float().mean().item()


def build_model(c: dict[str, Any]) -> RecallModel:
    """The model of a normalised configuration, its parameters drawn from ``seed``."""
    far = max(c["far"], default=3)
    with seeded(c["seed"]):
        return RecallModel(embedding_matrix(c["K"], c["d"]), c["kind"], c["position"], width=c["width"],
                           heads=c["heads"], max_len=max(3, far) * c["L"], fast_scan=c["fast_scan"])


def checkpoint_name(c: dict[str, Any]) -> str:
    """The training checkpoint's name for a normalised configuration: one name for every
    ``max_steps``, so a run with a raised cap continues where the capped run stopped (the
    schedule is constant after warm-up, so the first steps are the same; see :mod:`lib.checkpoint`)."""
    from ..store import config_hash

    return "recall-" + config_hash({**c, "max_steps": None})


def _finite_or_none(values: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


@takes(RecallConfig)
def train_recall(config: dict[str, Any], return_model: bool = False):
    """Train one model on one AR setting; returns a JSON-ready record (and the model if asked).

    ``config`` is normalised by :class:`RecallConfig`: missing keys take their
    defaults; unknown keys and out-of-domain values raise :class:`lib.config.ConfigError`.
    The record holds the training history, ``stop_reason``, and per test length
    the number of correct answers (``length_correct``) out of ``per_length``, the
    fraction of answers equal to the query token (``length_query_answers``), and at
    length L the correct answers and sequences per query token (``per_query_at_L``).
    """
    c = normalise(RecallConfig, config)
    K, M, tau, L = c["K"], c["M"], c["tau"], c["L"]
    model = build_model(c)
    n_params = sum(p.numel() for p in model.parameters())
    train_rng = np.random.default_rng(c["seed"])
    seen = {"correct": 0, "total": 0}

    def batch_fn(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels, _ = sample_recall(c["batch"], L, K, M, tau, train_rng)
        return tokens, labels

    def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen["correct"] += (logits.argmax(-1) == labels).sum().item()
        seen["total"] += len(labels)
        return torch.nn.functional.cross_entropy(logits, labels)

    val_tokens, val_labels, _ = sample_recall(c["eval_batch"], L, K, M, tau, np.random.default_rng(TEST_BATCH_SEED))

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        train_acc = seen["correct"] / max(seen["total"], 1)
        seen["correct"] = seen["total"] = 0
        return {"val_accuracy": batch_accuracy(m, val_tokens, val_labels), "train_accuracy": train_acc}

    def get_state() -> dict[str, Any]:
        return {"data": train_rng.bit_generator.state, "seen": dict(seen)}

    def set_state(state: dict[str, Any]) -> None:
        train_rng.bit_generator.state = state["data"]
        seen.update(state["seen"])

    record = fit(
        model, batch_fn, steps=c["max_steps"], seed=c["seed"], lr=c["lr"], warmup_steps=c["warmup_steps"],
        schedule="constant", loss_fn=loss_fn, evaluate=evaluate, eval_every=c["eval_every"],
        stop_when=lambda h: stop_reason(h, c) is not None,
        device=default_device(), desc=model_label(c["kind"], c["position"]),
        checkpoint=checkpoint_file(checkpoint_name(c)), caller_state=(get_state, set_state),
    )
    reason = stop_reason(record["history"], c, at_cap=True)
    record["history"]["train_loss"] = _finite_or_none(record["history"]["train_loss"])
    record["final"] = {k: (v if math.isfinite(v) else None) for k, v in record["final"].items()}

    start = time.perf_counter()
    model.eval()
    set_mamba_scan(model, parallel=False)  # one sequence length at a time: the loop beats the padded scan
    length_rng = np.random.default_rng(LENGTH_SEED)
    lengths = evaluation_lengths(L, tau, c["far"])
    correct, query_answers = [], []
    for n in lengths:
        tokens, labels, _ = sample_recall(c["per_length"], n, K, M, tau, length_rng)
        answers = batch_predictions(model, tokens)
        correct.append(int((answers == labels).sum()))
        query_answers.append(float((answers == tokens[:, -1]).float().mean()))
        if n == L:  # which queries the model has learned: correct answers per query token
            q = tokens[:, -1]
            per_query = {"correct": [int(((answers == labels) & (q == t)).sum()) for t in range(M)],
                         "n": [int((q == t).sum()) for t in range(M)]}
    record.update(
        stop_reason=reason,
        converged=reason == "converged",
        lengths=lengths,
        length_correct=correct,
        length_n=c["per_length"],
        length_accuracy=[k / c["per_length"] for k in correct],
        length_query_answers=query_answers,
        per_query_at_L=per_query,
        length_eval_seconds=time.perf_counter() - start,
        parameters=n_params,
        state_floats=mamba_state_floats(model),
        backend=next((m.backend for m in model.modules() if hasattr(m, "backend")), "torch"),
        threads=torch.get_num_threads(),
    )
    return (record, model) if return_model else record


def profile_settings(profile: str) -> dict[str, Any]:
    """The scale of the recall chapters for a run profile (training length, seeds, step limits).

    ``smoke`` trains a few steps (CI; its runs end at the cap and are not results);
    ``cpu`` is what the book shows (L = 32, 3 seeds); ``gpu`` is the full-scale
    rerun (L = 64, 5 seeds). ``fast_scan`` applies to models with Mamba layers.
    """
    from ..profiles import pick

    return pick(
        profile,
        smoke={"L": 16, "seeds": [0], "max_steps": 10, "eval_every": 5, "eval_batch": 32, "per_length": 4,
               "warmup_steps": 2, "plateau_min_steps": 5, "fast_scan": True},
        cpu={"L": 32, "seeds": [0, 1, 2], "max_steps": 40_000, "eval_every": 25, "eval_batch": 256,
             "per_length": 1000, "warmup_steps": 50, "plateau_min_steps": 5000, "fast_scan": True},
        gpu={"L": 64, "seeds": [0, 1, 2, 3, 4], "max_steps": 200_000, "eval_every": 50, "eval_batch": 1024,
             "per_length": 2000, "warmup_steps": 200, "plateau_min_steps": 20_000, "fast_scan": False},
    )


def recall_config(profile: str, **overrides: Any) -> dict[str, Any]:
    """A :func:`train_recall` configuration at the scale of ``profile``; ``overrides`` set the
    setting (kind, position, M, tau, d, lr, seed, ...). Every chapter builds its configurations
    here. The result is normalised (:class:`RecallConfig`): every key spelled out, so one
    setting always maps to one stored record. ``fast_scan`` is the profile's for models with
    Mamba layers and off for transformers."""
    base = {k: v for k, v in profile_settings(profile).items() if k != "seeds"}
    if overrides.get("kind", DEFAULTS["kind"]) == "transformer":
        base["fast_scan"] = False
    return normalise(RecallConfig, {**base, **overrides})


def time_training(config: dict[str, Any], steps: int, *, parallel_scan: bool = True, compile: bool = False,
                  warmup: int = 3, clock: Literal["process", "wall"] = "process") -> dict[str, float]:
    """Training steps per CPU-second of one configuration (its model, batch and length), after
    ``warmup`` untimed steps. ``parallel_scan`` picks mambapy's scan; ``compile`` wraps the
    model in ``torch.compile`` (the first call, which compiles, is timed separately, by the wall clock).

    Time is the process's CPU time (``time.process_time``), not wall-clock time, so other
    jobs on the machine do not distort it; with one torch thread the two agree on an idle
    machine; ``clock="wall"`` times by the wall clock instead (to compare thread layouts).
    Returns ``{"steps_per_second", "first_call_seconds"}``.
    """
    c = normalise(RecallConfig, config)
    model = build_model(c)
    set_mamba_scan(model, parallel_scan)
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=c["lr"])
    rng = np.random.default_rng(c["seed"])

    def step() -> None:
        tokens, labels, _ = sample_recall(c["batch"], c["L"], c["K"], c["M"], c["tau"], rng)
        loss = torch.nn.functional.cross_entropy(forward(tokens), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()  # the first call (compilation) is timed by the wall clock:
    step()  # torch.compile runs part of its work in helper processes
    first = time.perf_counter() - start
    for _ in range(warmup):
        step()
    now = time.process_time if clock == "process" else time.perf_counter
    start = now()
    for _ in range(steps):
        step()
    return {"steps_per_second": steps / (now() - start), "first_call_seconds": first}
