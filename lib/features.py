"""Feature maps phi with phi(q) . phi(k) equal to (or estimating) the polynomial kernel (q . k)^p.

Performer-style attention (Choromanski et al., ICLR 2021) replaces the L x L
matrix A_ij = K(q_i, k_j) by phi(Q) phi(K)^T with phi: R^D -> R^M, so that
attention costs O(L M) instead of O(L^2). For the kernel K(q, k) = (q . k)^p:

- :func:`tensor_power_features`: x^{(x)p}, all D^p products; exact.
- :func:`symmetric_power_features`: the C(D+p-1, p) distinct monomials x^alpha,
  |alpha| = p, weighted by sqrt(p! / alpha!); exact, and much shorter.
- :func:`random_product_features` with :func:`gaussian_projections` or
  :func:`rademacher_projections`: phi(x)_j = M^{-1/2} prod_{t=1}^p (w_{t,j} . x)
  with independent w of identity second moment; unbiased, with the variance
  of :func:`product_feature_variance`.

Shapes: (..., D) -> (..., M).
"""

from __future__ import annotations

import itertools
import math

import torch


def tensor_power_features(x: torch.Tensor, p: int) -> torch.Tensor:
    """x^{(x)p} flattened: phi(q) . phi(k) = (q . k)^p exactly. (..., D) -> (..., D^p)."""
    out = x
    for _ in range(p - 1):
        out = (out[..., :, None] * x[..., None, :]).flatten(-2)
    return out


def multi_indices(dim: int, p: int) -> list[tuple[int, ...]]:
    """Sorted index tuples i_1 <= ... <= i_p: one per monomial of degree p in D variables."""
    return list(itertools.combinations_with_replacement(range(dim), p))


def symmetric_power_features(x: torch.Tensor, p: int) -> torch.Tensor:
    """sqrt(p!/alpha!) x^alpha over all multi-indices |alpha| = p: exact, C(D+p-1, p) features.

    (q . k)^p = sum_{|alpha|=p} (p! / alpha!) q^alpha k^alpha (multinomial theorem).
    (..., D) -> (..., C(D+p-1, p)).
    """
    index = multi_indices(x.shape[-1], p)
    weights = []
    for combo in index:
        counts = [combo.count(i) for i in set(combo)]
        weights.append(math.factorial(p) / math.prod(math.factorial(c) for c in counts))
    idx = torch.tensor(index, device=x.device)  # (M, p)
    monomials = x[..., idx].prod(-1)  # (..., M)
    return monomials * torch.tensor(weights, dtype=x.dtype, device=x.device).sqrt()


def gaussian_projections(p: int, m: int, dim: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """p independent sets of m standard Gaussian vectors in R^D -> (p, M, D)."""
    return torch.randn(p, m, dim, generator=generator, dtype=dtype)


def rademacher_projections(p: int, m: int, dim: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """p independent sets of m random sign vectors in R^D -> (p, M, D)."""
    return torch.randint(0, 2, (p, m, dim), generator=generator).to(dtype) * 2 - 1


def random_product_features(x: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
    """M^{-1/2} prod_t (w_{t,j} . x): an unbiased estimate of (q . k)^p as phi(q) . phi(k).

    Unbiased because the p factors are independent and E[(w . q)(w . k)] = q . k
    when E[w w^T] = I. x (..., D), projections (p, M, D) -> (..., M).
    """
    m = projections.shape[1]
    return torch.einsum("...d,tmd->...tm", x, projections).prod(-2) / math.sqrt(m)


def product_feature_variance(q: torch.Tensor, k: torch.Tensor, p: int, m: int, distribution: str) -> torch.Tensor:
    """Exact variance of phi(q) . phi(k) with M random product features.

    One factor: E[(w.q)^2 (w.k)^2] = |q|^2 |k|^2 + 2 (q.k)^2 for Gaussian w (Isserlis),
    minus 2 sum_i q_i^2 k_i^2 for Rademacher w (w_i^4 = 1 instead of 3). The p factors
    are independent, so Var = (E[...]^p - (q.k)^{2p}) / M.
    q (..., D), k (..., D) -> (...).
    """
    dot = (q * k).sum(-1)
    second = (q * q).sum(-1) * (k * k).sum(-1) + 2 * dot**2
    if distribution == "rademacher":
        second = second - 2 * (q * q * k * k).sum(-1)
    elif distribution != "gaussian":
        raise ValueError(f"distribution must be 'gaussian' or 'rademacher', got {distribution!r}")
    return (second**p - dot ** (2 * p)) / m


# --- the smoothed local kernel of Problem 4: overlap of two balls in R^3 ---------------------------


def ball_overlap_kernel(distance: torch.Tensor, delta: float) -> torch.Tensor:
    """vol(B(q, delta/2) and B(k, delta/2)) / vol(B(delta/2)) as a function of t = |q - k| in R^3.

    With r = delta/2 the lens volume is (pi/12)(4r + t)(2r - t)^2 for t <= 2r, so the
    normalised overlap is (2 delta + t)(delta - t)^2 / (2 delta^3): 1 at t = 0, 0 for t >= delta.
    distance (...) -> (...).
    """
    t = distance.clamp(max=delta)
    return (2 * delta + t) * (delta - t) ** 2 / (2 * delta**3)


def uniform_centres(low: torch.Tensor, high: torch.Tensor, m: int, radius: float,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """m centres uniform in the box [low - r, high + r]^3 and their weights |box| / vol(B(r)).

    low, high (3,) -> centres (M, 3), weights (M,).
    """
    lo, hi = low - radius, high + radius
    centres = lo + (hi - lo) * torch.rand(m, 3, generator=generator, dtype=low.dtype)
    ball = 4 / 3 * math.pi * radius**3
    return centres, torch.full((m,), float((hi - lo).prod()) / ball, dtype=low.dtype)


def importance_centres(points: torch.Tensor, m: int, radius: float,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """m centres from the mixture of uniform balls B(x_i, r) around the L points, with weights L / n(c).

    n(c) is the number of points within r of c (at least 1, the ball it came from),
    so weight = 1 / (vol(B(r)) p(c)) for the mixture density p. points (L, 3) -> centres (M, 3), weights (M,).
    """
    L = len(points)
    owner = torch.randint(0, L, (m,), generator=generator)
    direction = torch.randn(m, 3, generator=generator, dtype=points.dtype)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    length = radius * torch.rand(m, 1, generator=generator, dtype=points.dtype) ** (1 / 3)  # uniform in the ball
    centres = points[owner] + direction * length
    covering = (torch.cdist(centres, points) <= radius).sum(-1).to(points.dtype)  # n(c) >= 1
    return centres, L / covering


def ball_features(x: torch.Tensor, centres: torch.Tensor, weights: torch.Tensor, radius: float) -> torch.Tensor:
    """phi(x)_l = 1[|x - c_l| <= r] sqrt(w_l / M): phi(q) . phi(k) estimates the ball-overlap kernel.

    Unbiased for weights w = 1 / (vol(B(r)) p(c)) of the centre density p; exactly zero when
    |q - k| > 2r, since no centre lies within r of both. x (L, 3) -> (L, M).
    """
    inside = (torch.cdist(x, centres) <= radius).to(x.dtype)  # (L, M)
    return inside * (weights / len(centres)).sqrt()
