"""Training-step throughput of lib.vit.ViT against vit-pytorch's ViT at the same configuration.

Usage: python scripts/benchmark_vit.py [--steps 30] [--repeats 5] [--threads 2]

Both models: MNIST-shaped input (1 x 28 x 28), 4 x 4 patches, width 64, depth 4,
4 heads of width 16, MLP 128, CLS pooling, learned absolute positions; AdamW,
batch 128. Steps of the two models are timed in alternating blocks so that any
background load hits both alike; the median block time gives steps per second.
The record goes to the results store (results/cpu/vit-benchmark/).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import time

import torch
import torch.nn.functional as F
import vit_pytorch

from lib.store import ResultsStore
from lib.train import seeded
from lib.vit import ViT, count_parameters


def block_time(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def benchmark(config: dict) -> dict:
    torch.set_num_threads(config["threads"])
    with seeded(0):
        ours = ViT(image=(28, 28), patch=(4, 4), channels=1, classes=10, position="ape", dim=64, depth=4, heads=4, mlp_dim=128)
        reference = vit_pytorch.ViT(image_size=28, patch_size=4, num_classes=10, dim=64, depth=4, heads=4,
                                    dim_head=16, mlp_dim=128, channels=1)
        x, y = torch.randn(config["batch"], 1, 28, 28), torch.randint(0, 10, (config["batch"],))
    models = {"ours": ours, "vit-pytorch": reference}
    optimizers = {k: torch.optim.AdamW(m.parameters(), 1e-3) for k, m in models.items()}
    times = {k: [] for k in models}
    for k in models:  # warm-up
        block_time(models[k], optimizers[k], x, y, 3)
    for _ in range(config["repeats"]):
        for k in models:
            times[k].append(block_time(models[k], optimizers[k], x, y, config["steps"]))
    speed = {k: config["steps"] / statistics.median(v) for k, v in times.items()}
    return {"steps_per_second": speed, "ratio_ours_over_reference": speed["ours"] / speed["vit-pytorch"],
            "parameters": {k: count_parameters(m) for k, m in models.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    config = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads, "batch": 128,
              "torch": torch.__version__, "vit_pytorch": importlib.metadata.version("vit-pytorch")}
    result = ResultsStore("cpu").load_or_run("vit-benchmark", config, benchmark)
    print(result)


if __name__ == "__main__":
    main()
