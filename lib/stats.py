"""Small statistics for the book's claims: intervals and two-sample tests.

- :func:`wilson_interval`: a binomial proportion k/n (a test-set accuracy) with
  its Wilson score interval (Wilson 1927),

      (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n),   p = k/n,

  which, unlike the normal approximation, stays inside [0, 1] and is not
  degenerate at k = 0 or k = n.
- :func:`mean_interval`: the mean of a few numbers (e.g. one per seed) with a
  Student-t interval, mean -+ t_{n-1} s / sqrt(n).
- :func:`welch_t`: Welch's unequal-variance t test of two samples
  (the same as ``scipy.stats.ttest_ind(a, b, equal_var=False)``), with the
  interval of the difference of the means.
- :func:`bootstrap_interval`: a percentile bootstrap interval of any statistic.

All take plain sequences or arrays and return floats.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(_st.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int | np.ndarray, n: int | np.ndarray,
                    confidence: float = 0.95) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Wilson score interval of the proportion ``successes / n``; arrays broadcast.

    Shapes: successes, n () or (T,) -> low, high of the same shape.
    """
    k, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= successes <= n and n >= 1")
    z = _z(confidence)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return (float(low), float(high)) if low.ndim == 0 else (low, high)


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95,
                  axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and Student-t interval along ``axis`` (n >= 2 values; n = 1 gives a
    zero-width interval, flagged by nothing: callers should say how many there are).

    Shapes: values (n,) or (n, T) -> mean, low, high () or (T,).
    """
    x = np.asarray(values, dtype=float)
    n = x.shape[axis]
    mean = x.mean(axis)
    if n < 2:
        return mean, mean.copy(), mean.copy()
    half = _st.t.ppf(0.5 + confidence / 2, n - 1) * x.std(axis, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Welch:
    """Result of :func:`welch_t`: the statistic, its degrees of freedom, the two-sided
    p-value, and the interval of mean(a) - mean(b)."""

    t: float
    df: float
    p: float
    difference: float
    low: float
    high: float


def welch_t(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Welch:
    """Welch's t test of mean(a) = mean(b) without assuming equal variances.

    t = (mean a - mean b) / sqrt(s_a^2/n_a + s_b^2/n_b), with the
    Welch-Satterthwaite degrees of freedom. Shapes: a (n_a,), b (n_b,), each >= 2.
    Two samples constant at the same value (e.g. every seed of both models at
    100%) show no difference: t = 0, p = 1, interval [0, 0], df undefined (nan).
    Constant at different values, the statistic is undefined and this raises.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t needs at least two values per sample")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    difference = a.mean() - b.mean()
    se = np.sqrt(va + vb)
    if se == 0 and difference == 0:
        return Welch(0.0, float("nan"), 1.0, 0.0, 0.0, 0.0)
    if se == 0:
        raise ValueError("both samples are constant, at different values: the t statistic is undefined")
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = difference / se
    p = 2 * _st.t.sf(abs(t), df)
    half = _st.t.ppf(0.5 + confidence / 2, df) * se
    return Welch(float(t), float(df), float(p), float(difference), float(difference - half),
                 float(difference + half))


def holm(p_values: Sequence[float], family_size: int | None = None) -> np.ndarray:
    """Holm's step-down adjustment of m p-values (family-wise error control):
    the k-th smallest is multiplied by m - k + 1, then the sequence is made
    non-decreasing in that order and capped at 1. Shapes: (m,) -> (m,).

    ``family_size`` (default: the number of p-values given) is the number of
    tests planned in the family; the tests not yet run count as p = 1. With
    the family fixed in advance, a test that is added later can only lower
    the others' adjusted values, never raise them.
    """
    p = np.asarray(p_values, dtype=float)
    m = len(p) if family_size is None else family_size
    if m < len(p):
        raise ValueError(f"family_size={family_size} is smaller than the {len(p)} p-values given")
    adjusted, running = np.empty_like(p), 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, (m - rank) * p[i])
        adjusted[i] = min(1.0, running)
    return adjusted


def bootstrap_interval(values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean,
                       confidence: float = 0.95, resamples: int = 10_000,
                       rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over resamples of ``values``.

    ``rng`` defaults to ``numpy.random.default_rng(0)`` (reproducible).
    Shapes: values (n,) -> (low, high).
    """
    x = np.asarray(values, dtype=float)
    rng = rng if rng is not None else np.random.default_rng(0)
    draws = x[rng.integers(0, len(x), size=(resamples, len(x)))]
    stats = np.array([statistic(row) for row in draws])
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
