"""Linearising y = GELU(w . x) as phi(w) . psi(x) (Data Mining Problem 3).

GELU is entire, with the Maclaurin series

    GELU(z) = z Phi(z) = sum_k a_k z^k,   a_1 = 1/2,
    a_{2n+2} = (-1)^n / (sqrt(2 pi) 2^n n! (2n+1))   (n >= 0),

and every other a_k = 0. Two ways to pull w and x apart, as in scalable
neural network kernels (Sehanobish, Choromanski et al., ICLR 2024):

- biased: fit GELU(z) ~ sum_{k<=p} c_k z^k on a range, then
  sum_k c_k (w . x)^k = phi(w) . psi(x) exactly with the symmetric power
  features of :mod:`lib.features.polynomial` up to degree p,
  C(D+p, p) features;
- unbiased: random Maclaurin features (Kar and Karnick, AISTATS 2012).
  Feature l draws a degree N_l = k with probability q_k and N_l Rademacher
  vectors omega_t; then

      phi(w)_l = sign(a_k) sqrt(|a_k| / (M q_k)) prod_t (omega_t . w),
      psi(x)_l =           sqrt(|a_k| / (M q_k)) prod_t (omega_t . x),

  E[phi(w) . psi(x)] = GELU(w . x) and
  Var = (sum_k a_k^2 / q_k s^k - GELU(w . x)^2) / M with
  s = |w|^2 |x|^2 + 2 (w . x)^2 - 2 sum_i w_i^2 x_i^2.

Here q_1 = 1 - rho and q_{2j} = (1 - rho) rho^j.
"""

from __future__ import annotations

import math

import torch

from ..config import real, require, require_int
from .polynomial import symmetric_power_features


def _check_rho(rho: float) -> None:
    require(real(rho) and 0 < rho < 1, "rho", rho,
            "a number in (0, 1), the parameter of the degree law")


def gelu_maclaurin_coefficient(k: int) -> float:
    """a_k, the coefficient of z^k in GELU(z).

    GELU(z) = z/2 + (2 pi)^{-1/2} sum_n (-1)^n z^{2n+2} / (2^n n! (2n+1)).
    k -> float.
    """
    if k == 1:
        return 0.5
    if k < 2 or k % 2:
        return 0.0
    n = (k - 2) // 2
    denominator = math.sqrt(2 * math.pi) * 2**n * math.factorial(n)
    return (-1) ** n / (denominator * (2 * n + 1))


def power_features(x: torch.Tensor, degree: int) -> torch.Tensor:
    """[1, sym_1(x), ..., sym_p(x)]: all monomials up to degree p.

    sum_k c_k (w . x)^k = weighted_power_features(w, c) . power_features(x).
    (..., D) -> (..., C(D+p, p)).
    """
    require_int("degree", degree, 0)
    parts = [torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)]
    parts += [symmetric_power_features(x, k) for k in range(1, degree + 1)]
    return torch.cat(parts, dim=-1)


def weighted_power_features(w: torch.Tensor,
                            coefficients: list[float]) -> torch.Tensor:
    """power_features(w) with the degree-k block multiplied by c_k.

    (..., D) -> (..., C(D+p, p)) for p + 1 coefficients.
    """
    require(len(coefficients) >= 1, "coefficients", coefficients,
            "a list of p + 1 >= 1 numbers c_0 .. c_p")
    dim, parts = w.shape[-1], []
    feats = power_features(w, len(coefficients) - 1)
    start = 0
    for k, c in enumerate(coefficients):
        size = math.comb(dim + k - 1, k) if k else 1
        parts.append(c * feats[..., start:start + size])
        start += size
    return torch.cat(parts, dim=-1)


def maclaurin_degrees(m: int, rho: float,
                      generator: torch.Generator) -> torch.Tensor:
    """Degrees of m random Maclaurin features for GELU.

    Degree 1 with probability 1 - rho, else 2j with probability
    (1 - rho) rho^j: every degree with a non-zero coefficient has positive
    probability, so the estimator is unbiased. The geometric j comes from a
    float64 uniform, so the law's tail is not cut at float32 resolution.
    -> (M,) int64.
    """
    require_int("m", m, 1, "the number of features")
    _check_rho(rho)
    u = torch.rand(m, generator=generator, dtype=torch.float64)
    j = torch.floor(torch.log(u) / math.log(rho)).long()  # P(j) = (1-rho) rho^j
    return torch.where(j == 0, torch.ones_like(j), 2 * j)


def maclaurin_probability(k: int, rho: float) -> float:
    """q_k = P(degree = k) under :func:`maclaurin_degrees`.

    k -> float.
    """
    _check_rho(rho)
    j = 0 if k == 1 else k // 2
    return (1 - rho) * rho**j


def random_maclaurin_features(
    w: torch.Tensor, x: torch.Tensor, m: int, rho: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased random Maclaurin features for GELU(w . x).

    Feature l draws a degree N_l and N_l independent Rademacher vectors;
    phi(w)_l = sign(a_N) sqrt(|a_N| / (M q_N)) prod_t (omega_t . w) and
    psi(x)_l likewise without the sign (the signed coefficients ride on
    phi), so E[phi(w) . psi(x)] = sum_k a_k (w . x)^k = GELU(w . x).
    w (R, D) rows of W, x (B, D) -> phi (R, M), psi (B, M).
    """
    shapes = (tuple(w.shape), tuple(x.shape))
    require(w.ndim == 2 and x.ndim == 2 and w.shape[-1] == x.shape[-1],
            "shapes of w and x", shapes, "(R, D) and (B, D), one D")
    degrees = maclaurin_degrees(m, rho, generator)
    dim, top = w.shape[-1], int(degrees.max())
    signs = torch.randint(0, 2, (top, m, dim), generator=generator)
    omega = (signs * 2 - 1).to(w.dtype)  # (top, M, D)

    def products(z: torch.Tensor) -> torch.Tensor:
        out = torch.ones(len(z), m, dtype=z.dtype)
        for t in range(top):  # factor t multiplies the features of degree > t
            used = degrees > t
            out[:, used] *= z @ omega[t, used].T
        return out  # (n, M)

    coef = [gelu_maclaurin_coefficient(int(k)) for k in degrees]
    prob = [maclaurin_probability(int(k), rho) for k in degrees]
    coef = torch.tensor(coef, dtype=w.dtype)
    prob = torch.tensor(prob, dtype=w.dtype)
    scale = (coef.abs() / (m * prob)).sqrt()
    return products(w) * scale * coef.sign(), products(x) * scale


def rademacher_second_moment(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """s = E[(omega . w)^2 (omega . x)^2] for a random sign vector omega.

    s = |w|^2 |x|^2 + 2 (w . x)^2 - 2 sum_i w_i^2 x_i^2 (the Gaussian value
    minus the correction for E[omega_i^4] = 1 instead of 3). Since
    E[(omega . w)(omega . x)] = w . x, Jensen gives s >= (w . x)^2.
    w (..., D), x (..., D) -> (...).
    """
    dot = (w * x).sum(-1)
    return ((w * w).sum(-1) * (x * x).sum(-1) + 2 * dot**2
            - 2 * (w * w * x * x).sum(-1))


def maclaurin_log_second_moment(s: torch.Tensor, rho: float,
                                max_degree: int | None = None,
                                ) -> torch.Tensor:
    """log E[X^2] = log sum_k a_k^2 / q_k s^k for one random Maclaurin feature.

    X is one feature's contribution (a_N / q_N) prod_t (omega_t . w)(omega_t . x);
    E[X^2 | N = k] = (a_k / q_k)^2 s^k. The even terms behave like the series
    of the Bessel function I_0(s / sqrt(rho)), which peaks near degree
    s / sqrt(rho); the default max_degree goes well past that peak, so the
    truncation error is negligible. Summed in log space (the terms overflow
    float64 for large s); s = 0 gives log(a_1^2 / q_1 * 0) = -inf only if
    every term vanishes, which cannot happen for s > 0.
    s (...) -> (...).
    """
    s = torch.as_tensor(s, dtype=torch.float64)
    if max_degree is None:
        top = float(s.max()) if s.numel() else 0.0
        max_degree = int(2 * top / math.sqrt(rho) + 20 * math.sqrt(top) + 200)
    log_s = torch.log(s)
    log_terms = []
    for k in range(1, max_degree + 1):
        n = (k - 2) // 2
        if k == 1:
            log_a = math.log(0.5)
        elif k % 2:
            continue
        else:  # log |a_k| without evaluating the factorial
            log_a = (-0.5 * math.log(2 * math.pi) - n * math.log(2)
                     - math.lgamma(n + 1) - math.log(2 * n + 1))
        j = 0 if k == 1 else k // 2  # log q_k, without underflow
        log_q = math.log(1 - rho) + j * math.log(rho)
        log_terms.append(2 * log_a - log_q + k * log_s)
    return torch.logsumexp(torch.stack(log_terms), dim=0)


def maclaurin_variance(w: torch.Tensor, x: torch.Tensor, m: int, rho: float,
                       max_degree: int | None = None) -> torch.Tensor:
    """Exact variance of phi(w) . psi(x) of :func:`random_maclaurin_features`.

    Var = (sum_k a_k^2 / q_k * s^k - GELU(w.x)^2) / M with
    s = |w|^2|x|^2 + 2(w.x)^2 - 2 sum_i w_i^2 x_i^2 (the Rademacher second
    moment of one factor, :func:`rademacher_second_moment`); the series is
    :func:`maclaurin_log_second_moment`.
    w (..., D), x (..., D) -> (...).
    """
    require_int("m", m, 1, "the number of features")
    _check_rho(rho)
    dot = (w * x).sum(-1)
    s = rademacher_second_moment(w, x)
    second = maclaurin_log_second_moment(s, rho, max_degree).exp()
    return (second - torch.nn.functional.gelu(dot) ** 2) / m
