"""The book's one training loop.

``fit`` trains any ``nn.Module`` with AdamW, an optional linear warm-up followed
by a cosine (or constant) learning rate, optional gradient clipping, and calls
an evaluation hook every ``eval_every`` steps. It is seeded (shuffling,
dropout and any other torch randomness inside the loop come from ``seed``,
without touching the caller's global generator), picks the device itself, shows
a tqdm bar only when someone is watching (see :func:`progress_enabled`), and
returns a record that the results store can keep as JSON.

Three options change how the same steps are computed, not what they compute:

- ``decay_exempt``: weight decay only on weight matrices; biases, norms and the
  parameters a model lists in ``no_weight_decay()`` (position embeddings and
  tables, RoPE frequencies, the CLS token) get none, as in the reference code
  of Heo et al. (2024) and timm. :func:`parameter_groups` builds the groups.
- ``precision``: ``"fp32"``; ``"bf16"`` (autocast of the forward pass and the
  loss to bfloat16, weights and optimiser in fp32); or ``"auto"``, which picks
  bf16 on CUDA when the GPU supports it, and on a CPU when a bf16 matrix
  product measured here runs at least :data:`BF16_MIN_SPEEDUP` times the fp32
  rate (CPUs without native bf16 instructions emulate it and run it tens of
  times slower). A faster product does not make a faster training step: on a
  CPU with bf16 instructions, where ``"auto"`` picks bf16, autocast slowed the
  training step of most schemes of the book's small ViT (the records of
  ``scripts/benchmark_vit.py``), so the book's CPU runs ask for fp32.
  :func:`resolve_precision` decides; the record says which precision ran.
- ``compile``: wrap the model in ``torch.compile`` for training.

With ``checkpoint`` (a file), ``fit`` saves its whole state there every
``checkpoint_seconds`` and resumes from the file when it exists, computing the
same steps as an uninterrupted run (see :mod:`lib.checkpoint`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import checkpoint as ckpt
from .provenance import machine_name
from .seeding import seeded

Batch = tuple[torch.Tensor, torch.Tensor]
BatchFn = Callable[[torch.Generator], Batch]
"""A function drawing one (inputs, targets) batch from a ``torch.Generator``."""


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress_enabled() -> bool:
    """Whether to draw progress bars.

    ``$BOOK_PROGRESS`` = ``1``/``0`` decides when set. Otherwise bars are drawn in
    an interactive terminal or Jupyter session, and not in batch runs (the
    Makefile, the runner and CI set ``BOOK_BATCH=1``), so executed notebooks and
    the PDF carry no progress-bar junk.
    """
    if "BOOK_PROGRESS" in os.environ:
        return os.environ["BOOK_PROGRESS"] == "1"
    if os.environ.get("BOOK_BATCH") == "1":
        return False
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _batches(data: Union[Dataset, BatchFn], batch_size: int, gen: torch.Generator) -> Iterator[Batch]:
    """Endless batches: reshuffled epochs of a Dataset, or repeated calls of a batch function."""
    if callable(data) and not isinstance(data, Dataset):
        while True:
            yield data(gen)
    while True:
        yield from DataLoader(data, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)


BF16_MIN_SPEEDUP = 1.5
"""bf16 matmul rate over fp32 rate above which ``precision="auto"`` trains in bf16 on a CPU
(autocast adds casts, so a small matmul gain does not pay)."""


def matmul_rate(dtype: torch.dtype, n: int = 256, repeats: int = 8) -> float:
    """Measured n x n x n matrix products per CPU second in ``dtype`` (this process's threads)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        a @ b
    return repeats / max(time.process_time() - start, 1e-9)


_PRECISION_CACHE: dict[tuple[str, int], str] = {}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself, or what ``"auto"`` picks on ``device`` (see the module)."""
    if precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    key = (device.type, torch.get_num_threads())
    if key not in _PRECISION_CACHE:
        speedup = matmul_rate(torch.bfloat16) / matmul_rate(torch.float32)
        _PRECISION_CACHE[key] = "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"
    return _PRECISION_CACHE[key]


def parameter_groups(model: nn.Module, weight_decay: float, decay_exempt: bool = True) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``[{"params": decayed, "weight_decay": weight_decay}, {"params": exempt,
    "weight_decay": 0.0}]``. Exempt (when ``decay_exempt``): every parameter with fewer than two
    dimensions (biases, norm gains) and every name in ``model.no_weight_decay()`` if the model has it."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not decay_exempt:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    listed = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    unknown = listed - {n for n, _ in named}
    if unknown:
        raise ValueError(f"no_weight_decay() names parameters the model does not have: {sorted(unknown)}")
    exempt = [p for n, p in named if p.ndim < 2 or n in listed]
    decayed = [p for n, p in named if not (p.ndim < 2 or n in listed)]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def lr_factor(step: int, steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then cosine to 0 or constant."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_fit_arguments(model: Any, data: Any, **given: Any) -> None:
    """ConfigError (a ValueError) naming the first argument of :func:`fit` outside its domain."""
    from .config import integral, real, require, require_int

    require(isinstance(model, nn.Module), "model", type(model).__name__, "a torch.nn.Module")
    require(isinstance(data, Dataset) or callable(data), "data", type(data).__name__,
            "a Dataset of (x, y) pairs or a function generator -> (x, y)")
    require_int("steps", given["steps"], 1)
    require_int("seed", given["seed"], 0)
    require_int("batch_size", given["batch_size"], 1)
    require_int("eval_every", given["eval_every"], 1)
    require(integral(given["warmup_steps"]) and 0 <= given["warmup_steps"] <= given["steps"], "warmup_steps",
            given["warmup_steps"], f"an integer between 0 and steps={given['steps']}")
    require(real(given["lr"]) and given["lr"] > 0, "lr", given["lr"], "a positive number")
    require(real(given["weight_decay"]) and given["weight_decay"] >= 0, "weight_decay", given["weight_decay"],
            "a number >= 0")
    require(given["schedule"] in ("cosine", "constant"), "schedule", given["schedule"], "'cosine' or 'constant'")
    clip = given["clip_grad_norm"]
    require(clip is None or (real(clip) and clip > 0), "clip_grad_norm", clip, "None or a positive number")
    if isinstance(data, Dataset) and not callable(data):
        require(len(data) >= given["batch_size"], "batch_size", given["batch_size"],
                f"at most the dataset's size {len(data)} (batches drop the last incomplete one)")


def fit(
    model: nn.Module,
    data: Union[Dataset, BatchFn],
    *,
    steps: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    clip_grad_norm: float | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int = 100,
    stop_when: Callable[[dict[str, list[float]]], bool] | None = None,
    select: str | None = None,
    decay_exempt: bool = False,
    precision: str = "fp32",
    compile: bool = False,
    device: torch.device | str | None = None,
    desc: str = "fit",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_seconds: float = 600.0,
    caller_state: tuple[Callable[[], Any], Callable[[Any], None]] | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``steps`` optimiser steps and return its record.

    ``data`` is a map-style Dataset of (x, y) pairs (shuffled each epoch) or a
    function ``gen -> (x, y)`` drawing a fresh batch. ``evaluate(model)`` runs
    under ``torch.no_grad`` in eval mode every ``eval_every`` steps and after the
    last one; its metrics join the history. ``stop_when(history)``, if given, is
    asked after every evaluation and ends training early when it returns True
    (a convergence rule); ``steps`` is then an upper limit, and the learning-rate
    schedule is still laid out over ``steps`` (use ``schedule="constant"`` with it).
    ``select``, a metric of ``evaluate`` (say a validation accuracy), makes the
    model end with the weights of the evaluation where that metric was highest
    (model selection; ties go to the later one). ``decay_exempt``, ``precision``
    and ``compile``: see the module docstring.

    ``checkpoint``: a file where the whole training state is saved every
    ``checkpoint_seconds`` of wall-clock time and after the last step; when the
    file exists, training resumes from it (its arguments must match; a constant
    schedule may resume with a larger ``steps``, so a longer run continues a
    shorter one). It is deleted when ``stop_when`` ends training. Needs ``data``
    to be a batch function (a DataLoader's place in an epoch is not saved);
    ``caller_state = (get, set)`` saves and restores state the batch function or
    the hooks keep outside ``fit`` (say a numpy generator).

    Returns ``{"history": {"step": [...], "train_loss": [...], <metric>: [...]},
    "final": {<metric>: value}, "steps_run": int, "stopped_early": bool,
    "selected_step": int | None, "precision": "fp32" | "bf16", "seconds": float,
    "steps_per_second": float, "device": str, "resumed_from_step": int | None}``
    (``seconds`` includes the segments before a resume).
    """
    _check_fit_arguments(model, data, steps=steps, seed=seed, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, warmup_steps=warmup_steps, schedule=schedule,
                         clip_grad_norm=clip_grad_norm, eval_every=eval_every)
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    precision = resolve_precision(precision, device)
    optimizer = torch.optim.AdamW(parameter_groups(model, weight_decay, decay_exempt), lr=lr)
    forward = torch.compile(model) if compile else model
    best: dict[str, Any] = {"value": -math.inf, "step": None, "state": None}
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, warmup_steps, schedule)
    )
    history: dict[str, list[float]] = {"step": [], "train_loss": []}
    final: dict[str, float] = {}

    def run_eval(step: int, losses: list[float]) -> None:
        history["step"].append(step)
        history["train_loss"].append(sum(losses) / len(losses))
        if not math.isfinite(history["train_loss"][-1]):
            raise FloatingPointError(f"{desc}: the training loss is {history['train_loss'][-1]} at step {step}; "
                                     f"training stopped and nothing was stored. Lower the learning rate "
                                     f"(lr={lr}) or set clip_grad_norm (now {clip_grad_norm}).")
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                metrics = evaluate(model)
            model.train()
            for k, v in metrics.items():
                history.setdefault(k, []).append(float(v))
                final[k] = float(v)
            if select is not None and select in metrics and final[select] >= best["value"]:
                best.update(value=final[select], step=step,
                            state={k: v.detach().clone() for k, v in model.state_dict().items()})
        final["train_loss"] = history["train_loss"][-1]

    if checkpoint is not None:
        from .config import require

        require(callable(data) and not isinstance(data, Dataset), "checkpoint", str(checkpoint),
                "None when data is a Dataset (a DataLoader's place in an epoch is not saved); "
                "pass a batch function to checkpoint")
        require(checkpoint_seconds > 0, "checkpoint_seconds", checkpoint_seconds, "a positive number")
    # what a checkpoint must agree on to be resumed (steps only where the schedule depends on it)
    arguments = {"seed": seed, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                 "warmup_steps": warmup_steps, "schedule": schedule, "clip_grad_norm": clip_grad_norm,
                 "eval_every": eval_every, "decay_exempt": decay_exempt, "precision": precision,
                 "select": select, "steps": steps if schedule == "cosine" else None}
    saved = ckpt.load(checkpoint) if checkpoint is not None else None
    if saved is not None:
        differ = {k: (saved["arguments"].get(k), v) for k, v in arguments.items() if saved["arguments"].get(k) != v}
        if differ or saved["step"] > steps:
            why = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differ.items()) or \
                f"it is at step {saved['step']} > steps={steps}"
            raise ValueError(f"{desc}: checkpoint {checkpoint} belongs to another run ({why}); "
                             f"delete it to start this run over")

    wall_start, cpu_start = time.perf_counter(), time.process_time()
    prior = {"wall": 0.0, "cpu": 0.0}
    # where each segment of a resumed run ran: a committed checkpoint may move machines
    segments: list[dict[str, Any]] = []
    segment = {"machine": machine_name(), "from_step": saved["step"] if saved is not None else 0}

    def save_checkpoint(step: int, asked: bool) -> None:
        ckpt.save(checkpoint, {
            "arguments": arguments, "step": step, "asked": asked, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "history": history, "final": final, "best": best, "torch_rng": torch.get_rng_state(),
            "generator": gen.get_state(), "caller": caller_state[0]() if caller_state else None,
            "wall_seconds": prior["wall"] + time.perf_counter() - wall_start,
            "cpu_seconds": prior["cpu"] + time.process_time() - cpu_start,
            "segments": segments + [{**segment, "to_step": step,
                                     "cpu_seconds": round(time.process_time() - cpu_start, 3),
                                     "wall_seconds": round(time.perf_counter() - wall_start, 3)}],
        })

    first, steps_run, stopped_early = 1, 0, False
    with seeded(seed):
        gen = torch.Generator().manual_seed(seed)
        if saved is not None:  # every piece of state the next step depends on
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            history, best = saved["history"], saved["best"]
            final.clear()
            final.update(saved["final"])
            torch.set_rng_state(saved["torch_rng"])
            gen.set_state(saved["generator"])
            if caller_state is not None:
                caller_state[1](saved["caller"])
            prior.update(wall=saved["wall_seconds"], cpu=saved["cpu_seconds"])
            segments = saved.get("segments") or [  # a checkpoint older than segments
                {"machine": None, "from_step": 0, "to_step": saved["step"],
                 "cpu_seconds": saved["cpu_seconds"], "wall_seconds": saved["wall_seconds"]}]
            first = steps_run = saved["step"]
            first += 1
            ckpt.note_resumed(saved["step"], saved["wall_seconds"], saved["cpu_seconds"], segments)
            # a shorter run ended here without asking stop_when; an uninterrupted one would ask
            if not saved["asked"] and stop_when is not None and saved["step"] < steps and stop_when(history):
                stopped_early, first = True, steps + 1
        batches = _batches(data, batch_size, gen)
        model.train()
        losses: list[float] = []
        show = progress_enabled()
        if show:  # tqdm.auto picks the notebook widget in Jupyter; imported only when a bar is drawn
            from tqdm.auto import tqdm as bar_type
        else:
            bar_type = tqdm
        bar = bar_type(range(first, steps + 1), desc=desc, disable=not show, leave=False,
                       initial=first - 1, total=steps)
        last_save = time.perf_counter()
        for step in bar:
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(forward(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            steps_run = step
            if step % eval_every == 0 or step == steps:
                run_eval(step, losses)
                losses = []
                bar.set_postfix({k: f"{v:.3g}" for k, v in final.items()})
                if stop_when is not None and step < steps and stop_when(history):
                    stopped_early = True
                    break
                if checkpoint is not None and (step == steps or time.perf_counter() - last_save >= checkpoint_seconds):
                    save_checkpoint(step, asked=step < steps)
                    last_save = time.perf_counter()
        bar.close()
    if checkpoint is not None and stopped_early:
        Path(checkpoint).unlink(missing_ok=True)
    if select is not None:
        if best["state"] is None:
            raise ValueError(f"select={select!r}: evaluate() never returned that metric")
        model.load_state_dict(best["state"])
    seconds = prior["wall"] + time.perf_counter() - wall_start
    return {
        "history": history,
        "final": final,
        "steps_run": steps_run,
        "stopped_early": stopped_early,
        "selected_step": best["step"],
        "precision": precision,
        "seconds": seconds,
        "steps_per_second": (steps_run - (saved["step"] if saved else 0)) / (time.perf_counter() - wall_start),
        "device": str(device),
        "resumed_from_step": None if saved is None else saved["step"],
    }

@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, batch_size: int = 512) -> float:
    """Fraction of (x, y) pairs in ``data`` where ``model(x).argmax(-1) == y``."""
    device = next(model.parameters()).device
    correct = 0
    for x, y in DataLoader(data, batch_size=batch_size):
        correct += (model(x.to(device)).argmax(-1) == y.to(device)).sum().item()
    return correct / len(data)
