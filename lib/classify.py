"""Training a ViT classifier on MNIST or CIFAR-10: the recipe several chapters share.

Recipe for small ViTs on small data (what makes them train well on a CPU budget):
random translations (pad and crop; plus horizontal flips on CIFAR-10), AdamW
with weight decay, linear warm-up then cosine decay, label smoothing, gradient
clipping. :func:`train_classifier` takes one JSON-able config, trains with
:func:`lib.train.fit`, and returns a JSON-able result (learning curve, test
accuracy, seconds per epoch, parameter count), ready for the results store.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from .data import load_images
from .train import BatchFn, accuracy, fit, seeded
from .vit import ViT, count_parameters

MEAN_STD = {"mnist": ((0.1307,), (0.3081,)), "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}


def normalise(images: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 standardised with the dataset's channel statistics."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in MEAN_STD[name])
    return (images.float() / 255 - mean) / std


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per-image random translation by up to ``pad`` pixels (zero padding) and optional horizontal flip.

    x (B, C, H, W) -> (B, C, H, W).
    """
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = (torch.randint(0, 2 * pad + 1, (B,), generator=gen) for _ in range(2))
    rows = (dy[:, None] + torch.arange(H))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(W))[:, None, None, :]  # (B, 1, 1, W)
    if flip:
        mirrored = torch.rand(B, generator=gen) < 0.5
        cols = torch.where(mirrored[:, None, None, None], cols.flip(-1), cols)
    return padded[torch.arange(B)[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols]


def augmented_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, pad: int, flip: bool) -> BatchFn:
    """A batch function for :func:`lib.train.fit`: uniform random batches, augmented."""

    def draw(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(images), (batch_size,), generator=gen)
        return random_crop_flip(images[index], pad, flip, gen), labels[index]

    return draw


def load_split(name: str, split: str, fraction: float = 1.0, seed: int = 0) -> TensorDataset:
    """Normalised float images and labels of a split; ``fraction`` < 1 keeps a seeded, class-balanced subset."""
    images, labels, _ = load_images(name, split)
    if fraction < 1.0:
        gen = torch.Generator().manual_seed(seed)
        keep = []
        for c in labels.unique():
            members = (labels == c).nonzero().squeeze(1)
            keep.append(members[torch.randperm(len(members), generator=gen)[: int(round(fraction * len(members)))]])
        index = torch.cat(keep).sort().values
        images, labels = images[index], labels[index]
    return TensorDataset(normalise(images, name), labels)


def load_test(config: dict[str, Any]) -> TensorDataset:
    """The config's test set: all of it, or a seeded random ``test_limit`` images (smoke runs)."""
    test = load_split(config["dataset"], "test")
    if config.get("test_limit"):
        keep = torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[: config["test_limit"]]
        test = TensorDataset(*(t[keep] for t in test.tensors))
    return test


def build_vit(config: dict[str, Any]) -> ViT:
    """The ViT a config describes (model keys: position, patch, dim, depth, heads, mlp_dim, pool, dropout)."""
    channels, size = (1, 28) if config["dataset"] == "mnist" else (3, 32)
    with seeded(config["seed"]):
        return ViT(image=(size, size), patch=tuple(config["patch"]), channels=channels, classes=10,
                   position=config["position"], dim=config["dim"], depth=config["depth"], heads=config["heads"],
                   mlp_dim=config["mlp_dim"], pool=config.get("pool", "cls"), dropout=config.get("dropout", 0.0),
                   seed=config["seed"])


def train_classifier(config: dict[str, Any], return_model: bool = False):
    """Train the configured ViT; returns the JSON-able result (and the model when asked).

    Config keys: dataset, train_fraction, position, patch, dim, depth, heads, mlp_dim,
    epochs, batch_size, lr, weight_decay, warmup_epochs, label_smoothing, seed,
    and optionally eval_sizes (extra square test resolutions, e.g. [36]) and
    test_limit (evaluate on that many random test images only).
    """
    name = config["dataset"]
    train = load_split(name, "train", config.get("train_fraction", 1.0), config["seed"])
    test = load_test(config)
    images, labels = train.tensors
    steps_per_epoch = len(images) // config["batch_size"]
    steps = config["epochs"] * steps_per_epoch
    model = build_vit(config)
    subset = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:2000]
    eval_subset = TensorDataset(*(t[subset] for t in test.tensors))  # learning curve on 2,000 random test images
    start = time.perf_counter()
    record = fit(
        model, augmented_batches(images, labels, config["batch_size"], pad=2 if name == "mnist" else 4,
                                 flip=name == "cifar10"),
        steps=steps, seed=config["seed"], lr=config["lr"], weight_decay=config["weight_decay"],
        warmup_steps=config["warmup_epochs"] * steps_per_epoch, clip_grad_norm=1.0,
        loss_fn=lambda logits, y: F.cross_entropy(logits, y, label_smoothing=config["label_smoothing"]),
        evaluate=lambda m: {"test_accuracy_subset": accuracy(m, eval_subset)},
        eval_every=max(1, steps_per_epoch // 2), desc=f"{name} {config['position']} seed {config['seed']}",
    )
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        result = {
            "test_accuracy": accuracy(model, test),
            "history": record["history"],
            "parameters": count_parameters(model),
            "seconds_per_epoch": train_seconds / config["epochs"],
            "train_seconds": train_seconds,
            "train_images": len(images),
        }
        for size in config.get("eval_sizes", []):
            result[f"test_accuracy_{size}px"] = accuracy(model, resized(test, size))
    return (result, model) if return_model else result


def resized(data: TensorDataset, size: int, placement: str = "centre") -> TensorDataset:
    """The images placed on a size x size background canvas: more patches, same object scale.

    ``placement`` is ``"centre"`` (equal margins; size - H must be even) or
    ``"corner"`` (image at the top left, background to the right and below, so
    the image's patches keep their grid coordinates). Images (B, C, H, W) -> (B, C, size, size).
    """
    images, labels = data.tensors
    extra = size - images.shape[-1]
    if placement not in ("centre", "corner"):
        raise ValueError(f"placement must be 'centre' or 'corner', got {placement!r}")
    if extra < 0 or (placement == "centre" and extra % 2):
        raise ValueError(f"can only pad {images.shape[-1]} px images to a larger size by an even margin, got {size}")
    B, C, H, W = images.shape
    name = "mnist" if C == 1 else "cifar10"
    black = normalise(torch.zeros(1, C, 1, 1, dtype=torch.uint8), name)  # (1, C, 1, 1)
    canvas = black.expand(B, C, size, size).clone()
    offset = extra // 2 if placement == "centre" else 0
    canvas[..., offset: offset + H, offset: offset + W] = images
    return TensorDataset(canvas, labels)
