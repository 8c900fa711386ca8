"""The associative recall (AR) task of ECE 498/598 HW3-4 (after Gu and Dao's Mamba paper).

A sequence over the vocabulary [K] = {0, ..., K-1} hides a query q, drawn from
the first M tokens, twice: at an index i and at the very end; the token tau
positions after the first q is the value v, and the model must output v at
the last position. M = 1 is the induction-head task; M = K is full AR.

Recipe (the problem's, 0-based here):

1. draw q uniformly from {0..M-1} and v uniformly from [K], independently;
2. fill the L positions with tokens drawn uniformly from [K] minus {q};
3. put q at the last position L-1 and at an index i uniform in {0, ..., L-tau-2};
4. put v at i + tau; the label is v.

The problem states i in [1, L - tau] (1-based); its last value would put v on
the final q, so we stop one short: i + tau <= L - 2. Because v is drawn
independently of q, v == q happens (with probability 1/K); then q also sits in
the value slot, and everywhere else it appears exactly at i and at L-1.

Tokens are embedded with a fixed K x d matrix of N(0, 1) entries, rows scaled
to unit length, drawn as ``numpy.random.seed(0); numpy.random.randn(K, d)``
prescribes (we use the identical, but private, ``RandomState(0)`` stream).
"""

from __future__ import annotations

import numpy as np
import torch


def embedding_matrix(K: int, d: int) -> torch.Tensor:
    """The fixed token embeddings: (K, d) float32, unit-norm rows, from RandomState(0)."""
    E = np.random.RandomState(0).randn(K, d)
    return torch.tensor(E / np.linalg.norm(E, axis=1, keepdims=True), dtype=torch.float32)


def sample_recall(batch: int, L: int, K: int, M: int, tau: int, rng: np.random.Generator):
    """A batch of AR sequences.

    Returns tokens (B, L) int64, labels (B,) int64, query positions i (B,) int64.
    """
    if not 1 <= M <= K:
        raise ValueError(f"need 1 <= M <= K, got M={M}, K={K}")
    if tau < 1:
        raise ValueError(f"tau={tau} is not allowed: tau must be >= 1 (tau=0 would write v over q)")
    if L < tau + 2:
        raise ValueError(f"the shortest AR sequence has tau + 2 = {tau + 2} tokens, got L={L}")
    q = rng.integers(0, M, size=batch)
    v = rng.integers(0, K, size=batch)
    others = rng.integers(0, K - 1, size=(batch, L))
    tokens = others + (others >= q[:, None])  # uniform on [K] minus {q}
    i = rng.integers(0, L - tau - 1, size=batch)  # 0 .. L - tau - 2
    rows = np.arange(batch)
    tokens[rows, i] = q
    tokens[rows, i + tau] = v
    tokens[:, -1] = q
    return torch.as_tensor(tokens), torch.as_tensor(v), torch.as_tensor(i)


def evaluation_lengths(L: int, tau: int, far: tuple[int, ...] | list[int] = ()) -> list[int]:
    """Every length from tau + 2 to 3L (what the problem asks), then ``far`` multiples
    of L beyond it (e.g. ``(4, 5, 6, 8)``: 4L, 5L, 6L, 8L)."""
    near = list(range(tau + 2, 3 * L + 1))
    return near + sorted(m * L for m in set(far) if m * L > 3 * L)


def chance_accuracy(K: int) -> float:
    """Accuracy of a guess that ignores the sequence: v is uniform on [K] and
    independent of q, so no sequence-blind answer beats 1/K."""
    return 1.0 / K
