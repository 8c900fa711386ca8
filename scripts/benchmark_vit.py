"""Training-step speed of lib.vit.ViT against vit-pytorch's ViT, as ratios and fractions of this machine's peak.

Usage: python scripts/benchmark_vit.py [--threads 1] [--steps 3] [--repeats 5] [--compile-schemes ape rope-mixed]

Machines differ widely (fp32 matmul peaks from 64 to 302 GFLOP/s on the book's
build machines), so nothing here is reported as an absolute speed alone. In one
run the script measures

1. the machine: the rate of a 512 x 512 x 512 matrix product in fp32 and in
   bf16 (GFLOP/s per CPU second at ``--threads``), the peak the model is
   compared with, and which precision ``lib.train``'s ``precision="auto"``
   picks here;
2. for the MNIST configuration (1 x 28 x 28, 4 x 4 patches, 49 + 1 tokens) and
   the CIFAR-10 one (3 x 32 x 32, 64 + 1 tokens), both with width 64, depth 4,
   4 heads of width 16, MLP 128, CLS pooling, batch 128 and AdamW: the CPU
   seconds of one training step of our ViT with every position scheme and of
   vit-pytorch's ViT (learned absolute positions, the only scheme it has), in
   alternating blocks of ``--steps`` steps so that background load hits all
   alike; the median block gives the step time. Reported: ours / vit-pytorch
   throughput per scheme, and the fraction of the fp32 peak reached (matmul
   FLOPs of a step, forward and backward, counted by torch's FlopCounterMode,
   per second of step time, over the peak);
3. at the CIFAR configuration: the effect of the attention path (fused kernel
   against explicit softmax; ``lib.vit`` picks fused without a bias and
   explicit with one on a CPU), of bf16 autocast (every scheme), and of
   ``torch.compile`` (the schemes in ``--compile-schemes``; its one-off
   compilation CPU seconds are reported too).

Times are CPU seconds of this process (``time.process_time``), which a
contended machine inflates less than wall-clock time; with ``--threads`` > 1
they add the threads up, so compare ratios only within one thread count. The
record goes to the results store (results/cpu/vit-benchmark/).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import vit_pytorch
from torch.utils.flop_counter import FlopCounterMode

from lib.provenance import cpu_model, native_bf16
from lib.store import ResultsStore
from lib.train import resolve_precision
from lib.vit import POSITION_SCHEMES, ViT

SHAPES = {"mnist": (1, 28), "cifar10": (3, 32)}  # channels, side
BATCH = 128


def matmul_gflops(dtype: torch.dtype, n: int = 512, repeats: int = 10) -> float:
    """GFLOP/s per CPU second of an n x n x n product in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    start = time.process_time()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.process_time() - start) / 1e9


def ours(dataset: str, position: str) -> ViT:
    channels, side = SHAPES[dataset]
    return ViT(image=(side, side), patch=(4, 4), channels=channels, classes=10, position=position, dim=64, depth=4,
               heads=4, mlp_dim=128, seed=0)


def reference(dataset: str) -> torch.nn.Module:
    channels, side = SHAPES[dataset]
    torch.manual_seed(0)
    return vit_pytorch.ViT(image_size=side, patch_size=4, num_classes=10, dim=64, depth=4, heads=4, dim_head=16,
                           mlp_dim=128, channels=channels)


def trainer(model: torch.nn.Module, dataset: str, bf16: bool = False, compile: bool = False) -> Callable[[], None]:
    """One AdamW training step on a fixed random batch, as a function."""
    channels, side = SHAPES[dataset]
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH, channels, side, side, generator=gen), torch.randint(0, 10, (BATCH,), generator=gen)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    forward = torch.compile(model) if compile else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def step_flops(model: torch.nn.Module, dataset: str) -> int:
    """Matmul FLOPs of one forward and backward pass at batch BATCH."""
    channels, side = SHAPES[dataset]
    if isinstance(model, ViT):  # count the explicit path: the fused kernel's FLOPs are the same but not counted
        with_attention_path(model, False)
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(torch.randn(BATCH, channels, side, side))
        F.cross_entropy(logits, torch.zeros(BATCH, dtype=torch.long)).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def interleaved(steps: dict[str, Callable[[], None]], block: int, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median CPU seconds per step of every step function, timed in alternating blocks."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.process_time()
            for _ in range(block):
                step()
            times[name].append((time.process_time() - start) / block)
    return {k: statistics.median(v) for k, v in times.items()}


def with_attention_path(model: ViT, fused: bool | None) -> ViT:
    for block in model.blocks:
        block.attention.fused = fused
    return model


def benchmark(config: dict) -> dict:
    torch.set_num_threads(config["threads"])
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    result: dict = {"cpu": cpu_model(), "matmul_gflops": peak, "auto_precision": resolve_precision(
        "auto", torch.device("cpu")), "datasets": {}}
    schemes = config["schemes"]
    for dataset in SHAPES:  # 2. ours (every scheme) against vit-pytorch, fp32
        steps = {"vit-pytorch": trainer(reference(dataset), dataset)}
        steps.update({s: trainer(ours(dataset, s), dataset) for s in schemes})
        seconds = interleaved(steps, config["steps"], config["repeats"])
        flops = {"vit-pytorch": step_flops(reference(dataset), dataset)}
        flops.update({s: step_flops(ours(dataset, s), dataset) for s in schemes})
        result["datasets"][dataset] = {
            "step_cpu_seconds": seconds, "step_gflop": {k: v / 1e9 for k, v in flops.items()},
            "ratio_over_vit_pytorch": {s: seconds["vit-pytorch"] / seconds[s] for s in schemes},
            "fraction_of_fp32_peak": {k: flops[k] / seconds[k] / 1e9 / peak["fp32"] for k in seconds},
        }
    dataset = "cifar10"  # 3. attention path, bf16, compile, at the CIFAR configuration
    steps = {}
    for s in schemes:
        steps[f"{s} fused"] = trainer(with_attention_path(ours(dataset, s), True), dataset)
        steps[f"{s} explicit"] = trainer(with_attention_path(ours(dataset, s), False), dataset)
    paths = interleaved(steps, config["steps"], config["repeats"])
    result["fused_over_explicit_speed"] = {s: paths[f"{s} explicit"] / paths[f"{s} fused"] for s in schemes}
    steps = {}
    for s in schemes:
        steps[f"{s} fp32"] = trainer(ours(dataset, s), dataset)
        steps[f"{s} bf16"] = trainer(ours(dataset, s), dataset, bf16=True)
    bf16 = interleaved(steps, 1, 3, warmup=1)  # bf16 may be emulated and slow: fewer steps
    result["bf16_speedup"] = {s: bf16[f"{s} fp32"] / bf16[f"{s} bf16"] for s in schemes}
    steps, compile_seconds = {}, {}
    for s in config["compile_schemes"]:
        steps[f"{s} eager"] = trainer(ours(dataset, s), dataset)
        start = time.process_time()
        steps[f"{s} compiled"] = trainer(ours(dataset, s), dataset, compile=True)
        steps[f"{s} compiled"]()  # the first call compiles
        compile_seconds[s] = time.process_time() - start
    compiled = interleaved(steps, config["steps"], config["repeats"])
    result["compile_speedup"] = {s: compiled[f"{s} eager"] / compiled[f"{s} compiled"]
                                 for s in config["compile_schemes"]}
    result["compile_cpu_seconds"] = compile_seconds
    return result


def report(result: dict) -> None:
    peak = result["matmul_gflops"]
    print(f"{result['cpu']}: matmul {peak['fp32']:.0f} GFLOP/s fp32, {peak['bf16']:.1f} bf16 "
          f"(precision='auto' picks {result['auto_precision']})")
    for dataset, r in result["datasets"].items():
        print(f"{dataset}: vit-pytorch at {100 * r['fraction_of_fp32_peak']['vit-pytorch']:.0f}% of the fp32 peak")
        for s, ratio in r["ratio_over_vit_pytorch"].items():
            print(f"  {s:>14}: ours / vit-pytorch {ratio:.2f}, {100 * r['fraction_of_fp32_peak'][s]:.0f}% of peak")
    for key in ("fused_over_explicit_speed", "bf16_speedup", "compile_speedup"):
        print(key, {s: round(v, 2) for s, v in result[key].items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--schemes", nargs="+", default=list(POSITION_SCHEMES))
    parser.add_argument("--compile-schemes", nargs="*", default=["ape", "rope-mixed"])
    args = parser.parse_args()
    config = {"threads": args.threads, "steps": args.steps, "repeats": args.repeats, "batch": BATCH,
              "schemes": args.schemes, "compile_schemes": args.compile_schemes, "version": 2, "cpu": cpu_model(),
              "torch": torch.__version__, "vit_pytorch": importlib.metadata.version("vit-pytorch")}
    if native_bf16():  # machines of one model name differ here (the key of older records lacks it)
        config["bf16_instructions"] = True
    report(ResultsStore("cpu").load_or_run("vit-benchmark", config, benchmark))


if __name__ == "__main__":
    main()
