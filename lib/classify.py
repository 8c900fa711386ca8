"""Training a ViT classifier on MNIST or CIFAR-10: the recipe several chapters share.

Recipe for small ViTs on small data (what makes them train well on a CPU budget):
random translations (pad and crop; plus horizontal flips on CIFAR-10), AdamW
with weight decay, linear warm-up then cosine decay, label smoothing, gradient
clipping. :func:`train_classifier` takes one JSON-able config, trains with
:func:`lib.train.fit`, and returns a JSON-able result (learning curve, test
accuracy, seconds per epoch, parameter count), ready for the results store.

With ``val_fraction > 0`` a class-balanced share of the training set (split
with a fixed seed, so every run holds out the same images) is held out: the
learning curve then records accuracy on training images (unaugmented) and on
the validation images once per epoch, the model kept is the one with the best
validation accuracy, and the test set is evaluated once, at the end. With
``val_fraction = 0`` (the default, the older records) the curve is measured on
2,000 test images and the last model is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from .checkpoint import record_checkpoint, resumed_here
from .config import normalise, require, takes
from .data import MEAN_STD, SHAPES, load_images, normalise_images  # noqa: F401 (re-exported)
from .train import BatchFn, accuracy, fit
from .vit import POSITION_SCHEMES, ViT, count_parameters



@dataclass(frozen=True)
class ClassifierConfig:
    """One ViT classifier trained by :func:`train_classifier`. Every key has a default."""

    dataset: Literal["mnist", "cifar10"] = "mnist"
    train_fraction: float = 1.0  # share of the training set (class-balanced, seeded)
    position: str = "ape"  # a key of lib.vit.POSITION_SCHEMES
    patch: list[int] = field(default_factory=lambda: [4, 4])  # (height, width) in pixels
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_dim: int = 128
    pool: Literal["cls", "mean"] = "cls"
    dropout: float = 0.0
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3  # AdamW, after one linear warm-up, cosine decay to 0
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    seed: int = 0
    eval_sizes: list[int] = field(default_factory=list)  # extra square test canvases, e.g. [36]
    test_limit: Optional[int] = None  # evaluate on this many random test images only (smoke runs)
    val_fraction: float = 0.0  # share of the training set held out for validation (0: none, old records)
    decay_exempt: bool = False  # no weight decay on biases, norms, CLS token, position parameters
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # see lib.train; "auto" measures
    compile: bool = False  # torch.compile the model for training

    def __post_init__(self) -> None:
        channels, height, width = SHAPES[self.dataset]
        require(0 < self.train_fraction <= 1, "train_fraction", self.train_fraction, "in (0, 1]")
        require(self.position in POSITION_SCHEMES, "position", self.position, f"one of {list(POSITION_SCHEMES)}")
        require(len(self.patch) == 2 and all(p >= 1 for p in self.patch), "patch", self.patch,
                "[height, width] of positive integers")
        require(height % self.patch[0] == 0 and width % self.patch[1] == 0, "patch", self.patch,
                f"a divisor of the {height}x{width} images of {self.dataset}")
        for name in ("dim", "depth", "heads", "mlp_dim", "epochs", "batch_size"):
            require(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        require(self.dim % self.heads == 0, "heads", self.heads, f"a divisor of dim={self.dim}")
        if self.position.startswith("rope"):
            require((self.dim // self.heads) % 4 == 0, "dim", self.dim,
                    f"such that dim / heads is divisible by 4 (2-D RoPE), got head width {self.dim // self.heads}")
        require(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")
        require(self.lr > 0, "lr", self.lr, "a positive number")
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        require(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs", self.warmup_epochs,
                f"between 0 and epochs={self.epochs}")
        require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1)")
        require(self.seed >= 0, "seed", self.seed, "an integer >= 0")
        for size in self.eval_sizes:
            require(size >= height and (size - height) % 2 == 0 and size % self.patch[0] == 0
                    and size % self.patch[1] == 0, "eval_sizes", self.eval_sizes,
                    f"canvas sizes >= {height} with an even margin and a whole number of patches")
        require(self.test_limit is None or self.test_limit >= 1, "test_limit", self.test_limit, "None or >= 1")
        require(0 <= self.val_fraction < 0.5, "val_fraction", self.val_fraction, "in [0, 0.5)")


TRANSLATION_PAD = {"mnist": 2, "cifar10": 4}
"""Largest random translation (pixels, each axis) of the training augmentation per dataset."""


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per-image random translation by up to ``pad`` pixels and optional horizontal flip.

    The uncovered border is 0 in normalised units, i.e. the training set's mean colour
    (:func:`on_canvas` pads test images with black instead).

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


def balanced_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random ``fraction`` of every class. labels (n,) -> (about fraction * n,)."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        keep.append(members[torch.randperm(len(members), generator=gen)[: int(round(fraction * len(members)))]])
    return torch.cat(keep).sort().values


VALIDATION_SEED = 20261129
"""Seed of the train/validation split: fixed, so that every run holds out the same images."""


def load_split(name: str, split: str, fraction: float = 1.0, seed: int = 0, val_fraction: float = 0.0) -> TensorDataset:
    """Normalised float images and labels of a split; ``fraction`` < 1 keeps a seeded, class-balanced subset.

    ``split`` is ``"train"`` or ``"test"`` of the dataset, or ``"val"``: with
    ``val_fraction`` > 0, ``"val"`` is a class-balanced ``val_fraction`` of the
    training set (fixed seed :data:`VALIDATION_SEED`) and ``"train"`` the rest.
    """
    images, labels, _ = load_images(name, "test" if split == "test" else "train")
    if split != "test" and val_fraction > 0:
        held = torch.zeros(len(labels), dtype=torch.bool)
        held[balanced_subset(labels, val_fraction, VALIDATION_SEED)] = True
        images, labels = images[held == (split == "val")], labels[held == (split == "val")]
    elif split == "val":
        raise ValueError("the 'val' split needs val_fraction > 0")
    if fraction < 1.0:
        index = balanced_subset(labels, fraction, seed)
        images, labels = images[index], labels[index]
    return TensorDataset(normalise_images(images, name), labels)


def load_test(config: dict[str, Any]) -> TensorDataset:
    """The config's test set: all of it, or a seeded random ``test_limit`` images (smoke runs)."""
    test = load_split(config["dataset"], "test")
    if config.get("test_limit") is not None:
        keep = torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[: config["test_limit"]]
        test = TensorDataset(*(t[keep] for t in test.tensors))
    return test


def build_vit(config: dict[str, Any]) -> ViT:
    """The ViT a :class:`ClassifierConfig` describes, initialised from its seed."""
    c = normalise(ClassifierConfig, config)
    channels, height, width = SHAPES[c["dataset"]]
    return ViT(image=(height, width), patch=tuple(c["patch"]), channels=channels, classes=10,
               position=c["position"], dim=c["dim"], depth=c["depth"], heads=c["heads"],
               mlp_dim=c["mlp_dim"], pool=c["pool"], dropout=c["dropout"], seed=c["seed"])


@takes(ClassifierConfig)
def train_classifier(config: dict[str, Any], return_model: bool = False, model: nn.Module | None = None):
    """Train the configured ViT; returns the JSON-able result (and the model when asked).

    ``config`` is normalised by :class:`ClassifierConfig`: missing keys take their
    defaults, unknown keys or out-of-domain values raise :class:`lib.config.ConfigError`.
    ``model``, when given, is trained in place of :func:`build_vit`'s model with
    the same recipe (a chapter's own ViT, say); the config's architecture keys
    should then describe it, since the results store files the run under them.
    """
    config = normalise(ClassifierConfig, config)
    name, val_fraction = config["dataset"], config["val_fraction"]
    train = load_split(name, "train", config["train_fraction"], config["seed"], val_fraction)
    test = load_test(config)
    images, labels = train.tensors
    steps_per_epoch = len(images) // config["batch_size"]
    steps = config["epochs"] * steps_per_epoch
    # in the results store, a checkpoint every 10 minutes (at an evaluation) lets a killed run
    # resume; not for a caller's own model, which the configuration does not describe
    checkpoint = record_checkpoint() if model is None else None
    model = build_vit(config) if model is None else model
    if val_fraction > 0:  # curves on validation and (unaugmented) training images, once per epoch
        val = load_split(name, "val", val_fraction=val_fraction)
        seen = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[: len(val)]
        train_probe = TensorDataset(images[seen], labels[seen])
        evaluate = lambda m: {"train_accuracy": accuracy(m, train_probe), "val_accuracy": accuracy(m, val)}
        eval_every, select = steps_per_epoch, "val_accuracy"
    else:  # the older recipe: a curve on 2,000 random test images, twice per epoch, last model kept
        subset = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:2000]
        eval_subset = TensorDataset(*(t[subset] for t in test.tensors))
        evaluate = lambda m: {"test_accuracy_subset": accuracy(m, eval_subset)}
        eval_every, select = max(1, steps_per_epoch // 2), None
    start, cpu_start = time.perf_counter(), time.process_time()
    record = fit(
        model, augmented_batches(images, labels, config["batch_size"], pad=TRANSLATION_PAD[name],
                                 flip=name == "cifar10"),
        steps=steps, seed=config["seed"], lr=config["lr"], weight_decay=config["weight_decay"],
        warmup_steps=config["warmup_epochs"] * steps_per_epoch, clip_grad_norm=1.0,
        loss_fn=lambda logits, y: F.cross_entropy(logits, y, label_smoothing=config["label_smoothing"]),
        evaluate=evaluate, eval_every=eval_every, select=select, decay_exempt=config["decay_exempt"],
        precision=config["precision"], compile=config["compile"],
        desc=f"{name} {config['position']} seed {config['seed']}", checkpoint=checkpoint,
    )
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    earlier = resumed_here()  # the segments before a resume count too
    if earlier is not None:
        train_seconds += earlier["wall_seconds"]
        train_cpu_seconds += earlier["cpu_seconds"]
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
        if val_fraction > 0:  # keys the older records do not have
            result.update(val_accuracy=max(record["history"]["val_accuracy"]),
                          selected_epoch=record["selected_step"] // steps_per_epoch,
                          precision=record["precision"], train_cpu_seconds=train_cpu_seconds,
                          threads=torch.get_num_threads())
        for size in config.get("eval_sizes", []):
            result[f"test_accuracy_{size}px"] = accuracy(model, on_canvas(test, size))
    return (result, model) if return_model else result


def on_canvas(data: TensorDataset, size: int, placement: str = "centre") -> TensorDataset:
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
    black = normalise_images(torch.zeros(1, C, 1, 1, dtype=torch.uint8), name)  # (1, C, 1, 1)
    canvas = black.expand(B, C, size, size).clone()
    offset = extra // 2 if placement == "centre" else 0
    canvas[..., offset: offset + H, offset: offset + W] = images
    return TensorDataset(canvas, labels)
