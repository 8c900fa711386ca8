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


# --- linearising y = f(w . x) (Problem 3): f(w . x) ~ Phi(w) . Psi(x) -------------------------------


def gelu_maclaurin_coefficient(k: int) -> float:
    """Coefficient a_k of z^k in GELU(z) = z Phi(z) = z/2 + (2 pi)^{-1/2} sum_n (-1)^n z^{2n+2} / (2^n n! (2n+1))."""
    if k == 1:
        return 0.5
    if k < 2 or k % 2:
        return 0.0
    n = (k - 2) // 2
    return (-1) ** n / (math.sqrt(2 * math.pi) * 2**n * math.factorial(n) * (2 * n + 1))


def power_features(x: torch.Tensor, degree: int) -> torch.Tensor:
    """[1, sym_1(x), ..., sym_p(x)]: all monomials up to degree p, so that
    sum_k c_k (w . x)^k = (c-weighted power_features(w)) . power_features(x).
    (..., D) -> (..., C(D+p, p)).
    """
    parts = [torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)]
    parts += [symmetric_power_features(x, k) for k in range(1, degree + 1)]
    return torch.cat(parts, dim=-1)


def weighted_power_features(w: torch.Tensor, coefficients: list[float]) -> torch.Tensor:
    """power_features(w) with the degree-k block multiplied by c_k. (..., D) -> (..., C(D+p, p))."""
    dim, parts = w.shape[-1], []
    feats = power_features(w, len(coefficients) - 1)
    start = 0
    for k, c in enumerate(coefficients):
        size = math.comb(dim + k - 1, k) if k else 1
        parts.append(c * feats[..., start:start + size])
        start += size
    return torch.cat(parts, dim=-1)


def maclaurin_degrees(m: int, rho: float, generator: torch.Generator) -> torch.Tensor:
    """Degrees of m random Maclaurin features for GELU: 1 with prob. 1 - rho, else 2j with prob. (1 - rho) rho^j.

    Every degree with a non-zero coefficient has positive probability, so the estimator is unbiased.
    -> (M,) int64.
    """
    j = torch.floor(torch.log(torch.rand(m, generator=generator)) / math.log(rho)).long()  # geometric, P(j) = (1-rho) rho^j
    return torch.where(j == 0, torch.ones_like(j), 2 * j)


def maclaurin_probability(k: int, rho: float) -> float:
    """P(degree = k) under :func:`maclaurin_degrees`."""
    j = 0 if k == 1 else k // 2
    return (1 - rho) * rho**j


def random_maclaurin_features(
    w: torch.Tensor, x: torch.Tensor, m: int, rho: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased random Maclaurin features (Kar and Karnick, 2012) for GELU(w . x), signed coefficients.

    Feature l draws a degree N_l and N_l independent Rademacher vectors; then
    phi(w)_l = sign(a_N) sqrt(|a_N| / (M q_N)) prod_t (omega_t . w) and psi(x)_l likewise without the
    sign, so E[phi(w) . psi(x)] = sum_k a_k (w . x)^k = GELU(w . x).
    w (R, D), x (B, D) -> phi (R, M), psi (B, M).
    """
    degrees = maclaurin_degrees(m, rho, generator)
    dim, top = w.shape[-1], int(degrees.max())
    omega = (torch.randint(0, 2, (top, m, dim), generator=generator) * 2 - 1).to(w.dtype)  # (top, M, D)

    def products(z: torch.Tensor) -> torch.Tensor:
        out = torch.ones(len(z), m, dtype=z.dtype)
        for t in range(top):  # factor t multiplies the features whose degree exceeds t
            used = degrees > t
            out[:, used] *= z @ omega[t, used].T
        return out  # (n, M)

    coef = torch.tensor([gelu_maclaurin_coefficient(int(k)) for k in degrees], dtype=w.dtype)
    prob = torch.tensor([maclaurin_probability(int(k), rho) for k in degrees], dtype=w.dtype)
    scale = (coef.abs() / (m * prob)).sqrt()
    return products(w) * scale * coef.sign(), products(x) * scale


def maclaurin_variance(w: torch.Tensor, x: torch.Tensor, m: int, rho: float, max_degree: int = 600) -> torch.Tensor:
    """Exact variance of phi(w) . psi(x) from :func:`random_maclaurin_features` (series truncated at max_degree).

    Var = (sum_k a_k^2 / q_k * s^k - GELU(w.x)^2) / M with s = |w|^2|x|^2 + 2(w.x)^2 - 2 sum_i w_i^2 x_i^2
    (the Rademacher second moment of one factor); the series is summed in log space, since its
    terms overflow float64 for large s. w (..., D), x (..., D) -> (...).
    """
    dot = (w * x).sum(-1)
    s = (w * w).sum(-1) * (x * x).sum(-1) + 2 * dot**2 - 2 * (w * w * x * x).sum(-1)
    log_terms = []
    for k in range(1, max_degree + 1):
        n = (k - 2) // 2
        if k == 1:
            log_a = math.log(0.5)
        elif k % 2:
            continue
        else:  # log |a_k| without evaluating the factorial
            log_a = -0.5 * math.log(2 * math.pi) - n * math.log(2) - math.lgamma(n + 1) - math.log(2 * n + 1)
        log_q = math.log(maclaurin_probability(k, rho))
        log_terms.append(2 * log_a - log_q + k * torch.log(s))
    second = torch.logsumexp(torch.stack(log_terms), dim=0).exp()
    return (second - torch.nn.functional.gelu(dot) ** 2) / m
