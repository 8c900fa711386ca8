"""The smoothed local kernel of Data Mining Problem 4 and its ball features.

Tokens are points of R^3. The smoothed local attention matrix is the
normalised overlap of two balls of radius r = delta/2 around them, for
t = |q - k|:

    kappa(t) = vol(B(q, r) and B(k, r)) / vol(B(r))
             = (2 delta + t) (delta - t)^2 / (2 delta^3)   (t <= delta),

and 0 for t > delta. As in a Performer (Choromanski et al., ICLR 2021),
the kernel is written as an expectation of feature products, here with
indicator features: draw centres c_1..c_M with density p and set

    phi(x)_l = 1[|x - c_l| <= r] sqrt(w(c_l) / M),
    w(c) = 1 / (vol(B(r)) p(c)),

so that E[phi(q) . phi(k)] = kappa(|q - k|), phi >= 0, and
phi(q) . phi(k) = 0 exactly when |q - k| > delta. Centres come uniform in
a box (:func:`uniform_centres`) or from the mixture of balls around the
tokens (:func:`importance_centres`, w(c) = N / n(c)).

With two different factors any N x N matrix A has an unbiased estimate of
the form Q' K'^T (:func:`landmark_factors`, column sampling as in Nystrom
methods, Williams and Seeger, NIPS 2000): draw landmark columns
J_1..J_M uniformly and independently, and set

    Q' = (N / M) A[:, J],   K' = one_hot(J)   (N x M each),

so that E[Q' K'^T] = A, entries are >= 0 where A is, zeros of A stay exact,
and Var (Q' K'^T)_ik = A_ik^2 (N / M) (1 - 1 / N).
"""

from __future__ import annotations

import math

import torch

from ..config import require, require_int, require_positive


def ball_overlap_kernel(distance: torch.Tensor, delta: float) -> torch.Tensor:
    """kappa(t), the normalised overlap volume of two balls of diameter delta.

    With r = delta/2 the lens volume is (pi/12)(4r + t)(2r - t)^2 for
    t <= 2r, so kappa(t) = (2 delta + t)(delta - t)^2 / (2 delta^3): 1 at
    t = 0, 0 for t >= delta.
    distance (...) -> (...).
    """
    require_positive("delta", delta, "the ball diameter")
    t = distance.clamp(max=delta)
    return (2 * delta + t) * (delta - t) ** 2 / (2 * delta**3)


def uniform_centres(low: torch.Tensor, high: torch.Tensor, m: int,
                    radius: float, generator: torch.Generator,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """m centres uniform in the box [low - r, high + r] and their weights.

    Every centre weighs |box| / vol(B(r)), since p = 1 / |box|.

    low, high (3,) -> centres (M, 3), weights (M,).
    """
    require_int("m", m, 1, "the number of centres")
    require_positive("radius", radius)
    require(bool((high >= low).all()), "high", high.tolist(),
            f"at least low={low.tolist()} in every coordinate")
    lo, hi = low - radius, high + radius
    u = torch.rand(m, 3, generator=generator, dtype=low.dtype)
    centres = lo + (hi - lo) * u
    ball = 4 / 3 * math.pi * radius**3
    weight = float((hi - lo).prod()) / ball
    return centres, torch.full((m,), weight, dtype=low.dtype)


def importance_centres(points: torch.Tensor, m: int, radius: float,
                       generator: torch.Generator,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """m centres from the mixture of uniform balls B(x_i, r) around N points.

    The weight of centre c is N / n(c), with n(c) the number of points
    within r of c (at least 1, the ball it came from): that is
    1 / (vol(B(r)) p(c)) for the mixture density p.
    points (N, 3) -> centres (M, 3), weights (M,).
    """
    require_int("m", m, 1, "the number of centres")
    require_positive("radius", radius)
    require(points.ndim == 2 and len(points) >= 1, "points",
            tuple(points.shape), "(N, 3) with N >= 1")
    n_points = len(points)
    owner = torch.randint(0, n_points, (m,), generator=generator)
    direction = torch.randn(m, 3, generator=generator, dtype=points.dtype)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    u = torch.rand(m, 1, generator=generator, dtype=points.dtype)
    length = radius * u ** (1 / 3)  # uniform in the ball
    centres = points[owner] + direction * length
    inside = torch.cdist(centres, points) <= radius
    covering = inside.sum(-1).to(points.dtype)  # n(c) >= 1
    return centres, n_points / covering


def ball_features(x: torch.Tensor, centres: torch.Tensor, weights: torch.Tensor,
                  radius: float) -> torch.Tensor:
    """phi(x)_l = 1[|x - c_l| <= r] sqrt(w_l / M), non-negative features.

    phi(q) . phi(k) is unbiased for the ball-overlap kernel when
    w = 1 / (vol(B(r)) p(c)) for the centre density p, and exactly zero when
    |q - k| > 2r, since no centre lies within r of both.
    x (N, 3), centres (M, 3), weights (M,) -> (N, M).
    """
    require_positive("radius", radius)
    shapes = (tuple(centres.shape), tuple(weights.shape))
    require(len(centres) >= 1 and weights.shape == centres.shape[:1],
            "centres, weights", shapes, "(M, 3) and (M,) with M >= 1")
    inside = (torch.cdist(x, centres) <= radius).to(x.dtype)  # (N, M)
    return inside * (weights / len(centres)).sqrt()


def landmark_factors(x: torch.Tensor, kernel, m: int,
                     generator: torch.Generator,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Q' = (N / M) kernel(|x - x_J|) and K' = one_hot(J), M landmarks J.

    The landmarks J_1..J_M are uniform and independent over the N tokens;
    (Q' K'^T)_ik = (N / M) A_ik #{l : J_l = k}, whose count is
    Binomial(M, 1 / N), so E[Q' K'^T] = A for any kernel, and
    Var = A_ik^2 (N / M)(1 - 1 / N). Costs N M kernel evaluations.
    x (N, 3), kernel: distances (N, M) -> values (N, M); -> (N, M), (N, M).
    """
    n_points = len(x)
    index = torch.randint(0, n_points, (m,), generator=generator)
    columns = kernel(torch.cdist(x, x[index]))  # A[:, J], (N, M)
    q = columns * (n_points / m)
    k = torch.zeros(n_points, m, dtype=x.dtype)
    k[index, torch.arange(m)] = 1.0
    return q, k

