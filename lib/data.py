"""MNIST and CIFAR-10 as uint8 tensors, from torchvision or from an offline mirror.

Two ways to get the images, chosen explicitly:

1. **torchvision download** (the default, for machines with internet): the
   datasets are downloaded into ``$BOOK_DATA_CACHE/torchvision``.
2. **offline mirror**: set ``BOOK_DATA_MIRROR`` to a directory in torchvision's
   ``ImageFolder`` layout, ``<mirror>/<name>/{train,test}/<class>/<image>``, with
   ``name`` in ``mnist``, ``cifar10``. ``make data`` unpacks the archives of
   ``../shared/data`` there. Class folders must sort into torchvision's label
   order (MNIST ``0``..``9``; CIFAR-10 ``airplane``..``truck``).

Either way the decoded tensors are cached in ``$BOOK_DATA_CACHE/tensors``
(default ``~/.cache/attention-book``), so a second load takes seconds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

MIRROR_ENV = "BOOK_DATA_MIRROR"
CACHE_ENV = "BOOK_DATA_CACHE"
SPLITS = ("train", "test")
CLASSES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(i) for i in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
SHAPES: dict[str, tuple[int, int, int]] = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
MEAN_STD: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
"""Per-channel mean and standard deviation of each training set (pixel values in [0, 1])."""


class DatasetNotFound(RuntimeError):
    """Neither the mirror nor torchvision could provide the dataset."""


class Images(NamedTuple):
    """A whole split: ``images`` (B, C, H, W) uint8, ``labels`` (B,) int64, and where they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str


def cache_dir() -> Path:
    """``$BOOK_DATA_CACHE`` or ``~/.cache/attention-book``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attention-book")


def _how_to_get(name: str) -> str:
    return (
        f"Two ways to get {name}:\n"
        f"  1. online: leave {MIRROR_ENV} unset and torchvision downloads it into {cache_dir() / 'torchvision'};\n"
        f"  2. offline: set {MIRROR_ENV} to a directory holding {name}/train/<class>/<image> and "
        f"{name}/test/<class>/<image> (`make data` unpacks ../shared/data/*.tar.gz into such a directory)."
    )


def _from_mirror(mirror: Path, name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    root = mirror / name / split
    if not root.is_dir():
        raise DatasetNotFound(f"{MIRROR_ENV}={mirror} has no folder {name}/{split}.\n" + _how_to_get(name))
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if classes != CLASSES[name]:
        raise DatasetNotFound(f"{root} has class folders {classes}; expected {CLASSES[name]}.\n" + _how_to_get(name))
    channels, height, width = SHAPES[name]
    mode = "L" if channels == 1 else "RGB"
    files = [(f, label) for label, c in enumerate(classes) for f in sorted((root / c).iterdir())]
    images = np.empty((len(files), height, width, channels), dtype=np.uint8)
    for i, (f, _) in enumerate(files):
        with Image.open(f) as img:
            images[i] = np.asarray(img.convert(mode)).reshape(height, width, channels)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def _from_torchvision(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    try:
        ds = cls(str(cache_dir() / "torchvision"), train=(split == "train"), download=True)
    except Exception as err:  # no network, host down, bad checksum...
        raise DatasetNotFound(f"torchvision could not download {name} ({err}).\n" + _how_to_get(name)) from err
    data = torch.as_tensor(np.asarray(ds.data))
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def normalise_images(images: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 standardised with the dataset's channel statistics."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in MEAN_STD[name])
    return (images.float() / 255 - mean) / std


def pictures(images: torch.Tensor, name: str) -> np.ndarray:
    """Standardised images (B, C, H, W) back to displayable arrays in [0, 1]: (B, H, W) grey or (B, H, W, 3)."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in MEAN_STD[name])
    out = (images.detach().cpu().float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return out[..., 0] if out.shape[-1] == 1 else out


def load_images(name: str, split: str, mirror: str | Path | None = None) -> Images:
    """A whole split of MNIST or CIFAR-10, decoded once and cached.

    ``mirror`` (or ``$BOOK_DATA_MIRROR``) selects the offline mirror; without it
    torchvision downloads the data. Raises :class:`DatasetNotFound` with the two
    ways to get the data when neither works.

    Returns images (B, C, H, W) uint8 and labels (B,) int64.
    """
    if name not in CLASSES:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(CLASSES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    source = f"mirror {Path(mirror).resolve()}" if mirror else "torchvision"
    tag = hashlib.sha256(source.encode()).hexdigest()[:8]
    cached = cache_dir() / "tensors" / f"{name}-{split}-{tag}.pt"
    if cached.exists():
        images, labels = torch.load(cached)
    else:
        if mirror:
            images, labels = _from_mirror(Path(mirror), name, split)
        else:
            images, labels = _from_torchvision(name, split)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        torch.save((images, labels), tmp)
        os.replace(tmp, cached)
    return Images(images, labels, source)
