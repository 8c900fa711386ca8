"""One associative-recall experiment: train a :class:`~lib.recall.models.RecallModel` until it
converges, then measure its accuracy at every test length.

``train_recall(config)`` is the function the results store runs for each
configuration of the recall chapters (see :class:`RecallConfig` for the keys).

Training draws fresh batches of ``batch`` sequences of length ``L`` from the
generator of :mod:`lib.recall.task` (a numpy stream seeded by ``seed``) and runs the
book's one loop, :func:`lib.train.fit`, with AdamW at a constant learning rate
after a short warm-up. Every ``eval_every`` steps it scores a fixed test batch
(``eval_batch`` sequences of length ``L``, the same batch for every model and
seed). **Convergence rule:** training stops when that accuracy is at least
``target`` at ``patience`` consecutive evaluations, or after ``max_steps``.

After training, accuracy is measured at every length from tau + 2 to 3L with
``per_length`` fresh sequences per length (also a fixed stream). mambapy layers
train with the parallel scan and are evaluated with the sequential loop (the
same function; on CPU the loop is faster for inference at these lengths,
because the parallel scan pads every length to a power of two).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..config import normalise, require, takes
from ..train import default_device, fit, seeded
from .models import KINDS, POSITIONS, RecallModel, mamba_backend, set_mamba_scan
from .task import embedding_matrix, evaluation_lengths, sample_recall


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
    width: int = 64  # model width
    heads: int = 2  # attention heads
    batch: int = 64  # training batch size
    lr: float = 1e-3  # AdamW learning rate (constant after warm-up)
    warmup_steps: int = 50
    max_steps: int = 1000  # upper limit of the convergence rule
    eval_every: int = 25  # steps between test-batch evaluations
    eval_batch: int = 256  # sequences in the fixed test batch
    target: float = 0.99  # convergence: test-batch accuracy at least this ...
    patience: int = 3  # ... at this many consecutive evaluations
    per_length: int = 128  # sequences per test length after training
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("K", "d", "L", "width", "heads", "batch", "max_steps", "eval_every", "eval_batch",
                     "patience", "per_length"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        require(self.K >= 2, "K", self.K, "at least 2 (a query and another token)")
        require(1 <= self.M <= self.K, "M", self.M, f"between 1 and K={self.K}")
        require(self.tau >= 1, "tau", self.tau, "at least 1 (tau=0 would put v on top of q)")
        require(self.L >= self.tau + 2, "L", self.L, f"at least tau + 2 = {self.tau + 2}")
        require(self.kind == "transformer" or self.position == "none", "position", self.position,
                f"'none' for kind={self.kind!r} (only transformers take {POSITIONS})")
        require(self.kind == "mamba" or self.width % self.heads == 0, "heads", self.heads,
                f"a divisor of width={self.width}")
        require(self.lr > 0, "lr", self.lr, "a positive number")
        require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")
        require(0 <= self.target <= 1, "target", self.target, "an accuracy between 0 and 1")
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


def converged(history: dict[str, list[float]], target: float, patience: int) -> bool:
    """The convergence rule: the last ``patience`` test-batch accuracies are all >= ``target``."""
    acc = history.get("test_accuracy", [])
    return len(acc) >= patience and all(a >= target for a in acc[-patience:])


@torch.no_grad()
def batch_accuracy(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor, chunk: int = 512) -> float:
    """Fraction of sequences (B, N) whose predicted value equals the label (B,)."""
    device = next(model.parameters()).device
    correct = sum(
        (model(tokens[s:s + chunk].to(device)).argmax(-1).cpu() == labels[s:s + chunk]).sum().item()
        for s in range(0, len(tokens), chunk)
    )
    return correct / len(tokens)


@takes(RecallConfig)
def train_recall(config: dict[str, Any], return_model: bool = False):
    """Train one model on one AR setting; returns a JSON-ready record (and the model if asked).

    ``config`` is normalised by :class:`RecallConfig`: missing keys take their
    defaults; unknown keys and out-of-domain values raise :class:`lib.config.ConfigError`.
    """
    c = normalise(RecallConfig, config)
    K, d, M, tau, L = c["K"], c["d"], c["M"], c["tau"], c["L"]
    embeddings = embedding_matrix(K, d)
    with seeded(c["seed"]):
        model = RecallModel(embeddings, c["kind"], c["position"], width=c["width"], heads=c["heads"],
                            max_len=3 * L)
    n_params = sum(p.numel() for p in model.parameters())

    train_rng = np.random.default_rng(c["seed"])

    def batch_fn(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, labels, _ = sample_recall(c["batch"], L, K, M, tau, train_rng)
        return tokens, labels

    test_tokens, test_labels, _ = sample_recall(c["eval_batch"], L, K, M, tau, np.random.default_rng(TEST_BATCH_SEED))
    record = fit(
        model, batch_fn, steps=c["max_steps"], seed=c["seed"], lr=c["lr"], warmup_steps=c["warmup_steps"],
        schedule="constant", evaluate=lambda m: {"test_accuracy": batch_accuracy(m, test_tokens, test_labels)},
        eval_every=c["eval_every"], stop_when=lambda h: converged(h, c["target"], c["patience"]),
        device=default_device(), desc=model_label(c["kind"], c["position"]),
    )

    start = time.perf_counter()
    model.eval()
    set_mamba_scan(model, parallel=False)  # one sequence length at a time: the loop beats the padded scan
    length_rng = np.random.default_rng(LENGTH_SEED)
    lengths = evaluation_lengths(L, tau)
    length_accuracy = []
    for n in lengths:
        tokens, labels, _ = sample_recall(c["per_length"], n, K, M, tau, length_rng)
        length_accuracy.append(batch_accuracy(model, tokens, labels))
    record.update(
        converged=converged(record["history"], c["target"], c["patience"]),
        lengths=lengths,
        length_accuracy=length_accuracy,
        length_eval_seconds=time.perf_counter() - start,
        parameters=n_params,
        backend=mamba_backend() if c["kind"] != "transformer" else "torch",
        threads=torch.get_num_threads(),
    )
    return (record, model) if return_model else record


def profile_settings(profile: str) -> dict[str, Any]:
    """The scale of the recall chapters for a run profile (training length, seeds, step limits).

    ``smoke`` trains a few steps (CI); ``cpu`` is what the book shows (L = 32, 3 seeds);
    ``gpu`` is the full-scale rerun (L = 64, 5 seeds, long limits).
    """
    from ..profiles import pick

    return pick(
        profile,
        smoke={"L": 16, "seeds": [0], "max_steps": 10, "eval_every": 5, "eval_batch": 32, "per_length": 4,
               "warmup_steps": 2},
        cpu={"L": 32, "seeds": [0, 1, 2], "max_steps": 1500, "eval_every": 25, "eval_batch": 256,
             "per_length": 64, "warmup_steps": 50},
        gpu={"L": 64, "seeds": [0, 1, 2, 3, 4], "max_steps": 20_000, "eval_every": 50, "eval_batch": 1024,
             "per_length": 1000, "warmup_steps": 200},
    )


def time_training(config: dict[str, Any], steps: int, *, parallel_scan: bool = True, compile: bool = False,
                  warmup: int = 3) -> dict[str, float]:
    """Training steps per CPU-second of one configuration (its model, batch and length), after
    ``warmup`` untimed steps. ``parallel_scan`` picks mambapy's scan; ``compile`` wraps the
    model in ``torch.compile`` (the first call, which compiles, is timed separately, by the wall clock).

    Time is the process's CPU time (``time.process_time``), not wall-clock time, so other
    jobs on the machine do not distort it; with one torch thread the two agree on an idle
    machine. Returns ``{"steps_per_second", "first_call_seconds"}``.
    """
    c = normalise(RecallConfig, config)
    with seeded(c["seed"]):
        model = RecallModel(embedding_matrix(c["K"], c["d"]), c["kind"], c["position"], width=c["width"],
                            heads=c["heads"], max_len=3 * c["L"])
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
    start = time.process_time()
    for _ in range(steps):
        step()
    return {"steps_per_second": steps / (time.process_time() - start), "first_call_seconds": first}


def recall_config(profile: str, **overrides: Any) -> dict[str, Any]:
    """A :func:`train_recall` configuration at the scale of ``profile``; ``overrides`` set the
    setting (kind, position, M, tau, d, lr, seed, ...). Every chapter builds its configurations
    here. The result is normalised (:class:`RecallConfig`): every key spelled out, so one
    setting always maps to one stored record."""
    base = {k: v for k, v in profile_settings(profile).items() if k != "seeds"}
    return normalise(RecallConfig, {**base, **overrides})


LR_GRID = (3e-4, 1e-3, 3e-3)
"""Learning rates swept for the models with Mamba layers."""
LR_SWEEP_TASKS = ({"M": 1, "tau": 1}, {"M": 4, "tau": 1})
"""The settings of the sweep: the induction head, and AR with 4 queries."""
TRANSFORMER_LR = 1e-3
"""The learning rate of the attention-only Transformers (not swept)."""


def lr_sweep_configs(profile: str) -> list[dict[str, Any]]:
    """Mamba at every rate of :data:`LR_GRID` on every task of :data:`LR_SWEEP_TASKS`, first seed."""
    seed = profile_settings(profile)["seeds"][0]
    return [recall_config(profile, kind="mamba", lr=lr, seed=seed, **task) for task in LR_SWEEP_TASKS for lr in LR_GRID]


def chosen_lr(records: list[dict[str, Any]]) -> float:
    """The swept rate with the best mean final test-batch accuracy over the sweep's tasks;
    ties (within 0.005) go to the rate that needed fewer steps in total.
    ``records`` are results-store records (``{"config": ..., "result": ...}``)."""
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for record in records:
        by_lr.setdefault(record["config"]["lr"], []).append(record["result"])
    if not by_lr:
        raise ValueError("no learning-rate sweep records")

    def score(lr: float) -> tuple[float, int]:
        runs = by_lr[lr]
        accuracy = sum(r["final"]["test_accuracy"] for r in runs) / len(runs)
        return round(accuracy / 0.005), -sum(r["steps_run"] for r in runs)

    return max(by_lr, key=score)
