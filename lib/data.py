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
(default ``~/.cache/attention-book``), so a second load takes seconds. A
mirror's cache entry is keyed by what it caches: the listing of the split's
files with their sizes and modification times, so replacing, adding or removing
an image decodes the split afresh. Cache files are written under a unique
temporary name and renamed into place, so two first loads at once never
collide and a killed load leaves no partial file; an unreadable cache file is
decoded again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
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


def _mirror_files(mirror: Path, name: str, split: str) -> "MirrorListing":
    """Every (image file, label) of a mirror's split, checked: DatasetNotFound naming the folder at fault."""
    root = mirror / name / split
    if not root.is_dir():
        raise DatasetNotFound(f"{MIRROR_ENV}={mirror} has no folder {name}/{split} (expected {root}).\n"
                              + _how_to_get(name))
    present = {p.name for p in root.iterdir() if p.is_dir()}
    missing = [c for c in CLASSES[name] if c not in present]
    extra = sorted(present - set(CLASSES[name]))
    if missing or extra:
        raise DatasetNotFound(f"{root} has class folders {sorted(present)}; expected exactly {list(CLASSES[name])}"
                              + (f"; missing: {', '.join(str(root / c) for c in missing)}" if missing else "")
                              + (f"; unexpected: {extra}" if extra else "") + ".\n" + _how_to_get(name))
    files, digest = [], hashlib.sha256()
    for label, c in enumerate(CLASSES[name]):
        with os.scandir(root / c) as entries:  # one stat per file: the listing is also the cache key
            images = sorted((e.name, e.stat()) for e in entries if e.is_file() and not e.name.startswith("."))
        if not images:
            raise DatasetNotFound(f"the class folder {root / c} is empty: every class of {name}/{split} needs its "
                                  f"images (an interrupted unpacking? unpack the archive again).\n" + _how_to_get(name))
        for file_name, info in images:
            digest.update(f"{c}/{file_name}\t{label}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
        folder = os.path.join(root, c)
        files += [(os.path.join(folder, file_name), label) for file_name, _ in images]
    return MirrorListing(files, digest.hexdigest()[:16])


class MirrorListing(NamedTuple):
    """A mirror split's (image file, label) pairs and their fingerprint: SHA-256 (16 hex digits) of
    every file's class folder, name, label, size and modification time."""

    files: list[tuple[str, int]]
    fingerprint: str


def _from_mirror(mirror: Path, name: str, split: str,
                 files: list[tuple[str, int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    files = files if files is not None else _mirror_files(mirror, name, split).files
    channels, height, width = SHAPES[name]
    mode = "L" if channels == 1 else "RGB"
    images = np.empty((len(files), height, width, channels), dtype=np.uint8)
    for i, (f, _) in enumerate(files):
        try:
            with Image.open(f) as img:
                if img.size != (width, height):
                    raise DatasetNotFound(f"{f} is {img.size[0]}x{img.size[1]} pixels; {name} images are "
                                          f"{width}x{height}. Replace it, or unpack the archive again.")
                images[i] = np.asarray(img.convert(mode)).reshape(height, width, channels)
        except (UnidentifiedImageError, OSError) as err:
            raise DatasetNotFound(f"{f} is not a readable image ({err}); remove it or unpack the archive again") from err
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


def _save_atomically(value: object, path: Path) -> None:
    """``torch.save`` to a unique temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(value, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(path: Path, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached (images, labels), or None when the file is missing or unusable (then it is rebuilt)."""
    if not path.exists():
        return None
    try:
        images, labels = torch.load(path)
    except Exception:  # noqa: BLE001 - truncated or foreign file: decode again
        return None
    if images.dtype != torch.uint8 or images.shape[1:] != SHAPES[name] or labels.shape != images.shape[:1]:
        return None
    return images, labels


def load_images(name: str, split: str, mirror: str | Path | None = None) -> Images:
    """A whole split of MNIST or CIFAR-10, decoded once and cached.

    ``mirror`` (or ``$BOOK_DATA_MIRROR``) selects the offline mirror; without it
    torchvision downloads the data. Raises :class:`DatasetNotFound` with the two
    ways to get the data when neither works, naming the folder or file at fault.

    Returns images (B, C, H, W) uint8 and labels (B,) int64.
    """
    if name not in CLASSES:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(CLASSES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if mirror is not None and not isinstance(mirror, (str, Path)):
        raise TypeError(f"mirror={mirror!r} is not allowed: mirror must be a folder path or None")
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    files = None
    if mirror:
        mirror = Path(mirror).expanduser().resolve()
        source = f"mirror {mirror}"
        files, key = _mirror_files(mirror, name, split)
    else:
        source = "torchvision"
        key = hashlib.sha256(source.encode()).hexdigest()[:8]  # torchvision checks its own downloads
    cached = cache_dir() / "tensors" / f"{name}-{split}-{key}.pt"
    loaded = _load_cached(cached, name)
    if loaded is None:
        loaded = _from_mirror(mirror, name, split, files) if mirror else _from_torchvision(name, split)
        _save_atomically(loaded, cached)
    images, labels = loaded
    return Images(images, labels, source)
