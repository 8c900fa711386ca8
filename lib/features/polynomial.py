"""Features phi with phi(q) . phi(k) equal to, or estimating, (q . k)^p.

A Performer (Choromanski et al., "Rethinking Attention with Performers",
ICLR 2021) replaces the N x N matrix A_ij = K(q_i, k_j) by phi(Q) phi(K)^T
with phi: R^D -> R^M, so that attention costs O(N M) instead of O(N^2).
For the polynomial kernel K(q, k) = (q . k)^p (Data Mining Problem 2, p = 4):

    exact, D^p features:         phi(x) = x^{(x)p}
    exact, C(D+p-1, p) features:  phi(x)_alpha = sqrt(p! / alpha!) x^alpha,
                                  |alpha| = p (multinomial theorem)
    random, M features:           phi(x)_j = M^{-1/2} prod_{t=1}^p (w_tj . x),
                                  E[w w^T] = I (Gaussian or Rademacher w)

The random features are unbiased, E[phi(q) . phi(k)] = (q . k)^p, with

    Var = (s^p - (q . k)^{2p}) / M,
    s = |q|^2 |k|^2 + 2 (q . k)^2 - 2 eps sum_i q_i^2 k_i^2,

eps = 0 for Gaussian and 1 for Rademacher projections.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..config import require, require_int


def tensor_power_features(x: torch.Tensor, p: int) -> torch.Tensor:
    """x^{(x)p} flattened: phi(q) . phi(k) = (q . k)^p exactly.

    (..., D) -> (..., D^p).
    """
    require_int("p", p, 1, "the degree")
    out = x
    for _ in range(p - 1):
        out = (out[..., :, None] * x[..., None, :]).flatten(-2)
    return out


def multi_indices(dim: int, p: int) -> list[tuple[int, ...]]:
    """Sorted index tuples i_1 <= ... <= i_p, one per monomial of degree p.

    D = dim -> C(D+p-1, p) tuples of length p.
    """
    require_int("dim", dim, 1, "the width D")
    require_int("p", p, 0, "the degree")
    return list(itertools.combinations_with_replacement(range(dim), p))


def symmetric_power_features(x: torch.Tensor, p: int) -> torch.Tensor:
    """sqrt(p!/alpha!) x^alpha over all multi-indices |alpha| = p: exact.

    (q . k)^p = sum_{|alpha|=p} (p! / alpha!) q^alpha k^alpha (multinomial
    theorem), with C(D+p-1, p) terms instead of D^p.
    (..., D) -> (..., C(D+p-1, p)).
    """
    require_int("p", p, 1, "the degree")
    index = multi_indices(x.shape[-1], p)
    weights = []
    for combo in index:
        counts = [combo.count(i) for i in set(combo)]
        alpha_factorial = math.prod(math.factorial(c) for c in counts)
        weights.append(math.factorial(p) / alpha_factorial)
    idx = torch.tensor(index, device=x.device)  # (M, p)
    monomials = x[..., idx].prod(-1)  # (..., M)
    weights = torch.tensor(weights, dtype=x.dtype, device=x.device)
    return monomials * weights.sqrt()


def _check_sizes(p: int, m: int, dim: int) -> None:
    require_int("p", p, 1, "the degree, one set per factor")
    require_int("m", m, 1, "the number of features")
    require_int("dim", dim, 1, "the width D")


def gaussian_projections(p: int, m: int, dim: int, generator: torch.Generator,
                         dtype=torch.float32) -> torch.Tensor:
    """p independent sets of m standard Gaussian vectors in R^D.

    -> (p, M, D).
    """
    _check_sizes(p, m, dim)
    return torch.randn(p, m, dim, generator=generator, dtype=dtype)


def rademacher_projections(p: int, m: int, dim: int,
                           generator: torch.Generator,
                           dtype=torch.float32) -> torch.Tensor:
    """p independent sets of m random sign vectors in R^D.

    -> (p, M, D).
    """
    _check_sizes(p, m, dim)
    signs = torch.randint(0, 2, (p, m, dim), generator=generator)
    return signs.to(dtype) * 2 - 1


def random_product_features(x: torch.Tensor,
                            projections: torch.Tensor) -> torch.Tensor:
    """phi(x)_j = M^{-1/2} prod_t (w_tj . x): phi(q) . phi(k) estimates (q.k)^p.

    Unbiased because the p factors are independent and
    E[(w . q)(w . k)] = q . k when E[w w^T] = I.
    x (..., D), projections (p, M, D) -> (..., M).
    """
    width = x.shape[-1]
    require(projections.ndim == 3 and projections.shape[-1] == width,
            "projections", tuple(projections.shape),
            f"(p, M, D) with D={width}, the width of x")
    m = projections.shape[1]
    products = torch.einsum("...d,tmd->...tm", x, projections).prod(-2)
    return products / math.sqrt(m)


def product_feature_variance(q: torch.Tensor, k: torch.Tensor, p: int,
                             m: int, distribution: str) -> torch.Tensor:
    """Exact variance of phi(q) . phi(k) with M random product features.

    One factor: E[(w.q)^2 (w.k)^2] = |q|^2 |k|^2 + 2 (q.k)^2 for Gaussian w
    (Isserlis), minus 2 sum_i q_i^2 k_i^2 for Rademacher w (w_i^4 = 1
    instead of 3). The p factors are independent, so
    Var = (E[...]^p - (q.k)^{2p}) / M.
    q (..., D), k (..., D) -> (...).
    """
    require_int("p", p, 1, "the degree")
    require_int("m", m, 1, "the number of features")
    dot = (q * k).sum(-1)
    second = (q * q).sum(-1) * (k * k).sum(-1) + 2 * dot**2
    if distribution == "rademacher":
        second = second - 2 * (q * q * k * k).sum(-1)
    elif distribution != "gaussian":
        raise ValueError("distribution must be 'gaussian' or 'rademacher', "
                         f"got {distribution!r}")
    return (second**p - dot ** (2 * p)) / m
