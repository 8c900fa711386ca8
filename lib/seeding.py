"""The book's one way to make randomness reproducible without touching anyone else's.

``seeded(seed)`` runs a block with torch's global generator (CPU and every
CUDA device) seeded, and gives the caller's generator state back afterwards.
Models that take a ``seed`` build all their parameters inside it, so the
same seed gives the same initial weights bit for bit, and building a model
never changes what the caller's next ``torch.randn`` returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run a block with torch's global RNG seeded by ``seed`` (no-op for ``None``), restoring the
    caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count()))
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
