import math

import pytest
import torch

from lib.features.ball import (ball_features, ball_overlap_kernel,
                               importance_centres, landmark_factors,
                               uniform_centres)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_ball_overlap_kernel_matches_a_monte_carlo_volume():
    delta, r = 1.0, 0.5
    g = gen(0)
    cube = torch.rand(400_000, 3, generator=g, dtype=torch.float64)
    points = (cube * 2 - 1) * r  # cube around B(0, r)
    in_first = points.norm(dim=-1) <= r
    ball_fraction = in_first.double().mean()
    for t in [0.0, 0.3, 0.7, 0.95, 1.2]:
        shifted = points - torch.tensor([t, 0.0, 0.0], dtype=torch.float64)
        in_both = in_first & (shifted.norm(dim=-1) <= r)
        overlap = in_both.double().mean() / ball_fraction
        assert abs(overlap - ball_overlap_kernel(torch.tensor(t), delta)) < 0.01
    assert ball_overlap_kernel(torch.tensor(0.0), delta) == 1
    assert ball_overlap_kernel(torch.tensor(1.5), delta) == 0


def test_smoothed_kernel_is_positive_semidefinite_and_indicator_is_not():
    g = gen(1)
    x = torch.rand(300, 3, generator=g, dtype=torch.float64) * 3
    distance = torch.cdist(x, x)
    smoothed = ball_overlap_kernel(distance, 1.0)
    assert torch.linalg.eigvalsh(smoothed).min() > -1e-9
    indicator = (distance <= 1.0).double()
    assert torch.linalg.eigvalsh(indicator).min() < -1e-3


@pytest.mark.parametrize("sampler", ["uniform", "importance"])
def test_ball_features_are_unbiased_nonnegative_and_local(sampler):
    delta, r = 1.0, 0.5
    g = gen(2)
    x = torch.rand(12, 3, generator=g, dtype=torch.float64) * 2
    target = ball_overlap_kernel(torch.cdist(x, x), delta)
    draws = []
    for _ in range(400):
        if sampler == "uniform":
            low, high = x.min(0).values, x.max(0).values
            centres, w = uniform_centres(low, high, 200, r, g)
        else:
            centres, w = importance_centres(x, 200, r, g)
        f = ball_features(x, centres, w, r)
        assert (f >= 0).all()
        estimate = f @ f.T
        assert torch.all(estimate[target == 0] == 0), "exact zeros beyond delta"
        draws.append(estimate)
    draws = torch.stack(draws)
    se = draws.std(0) / math.sqrt(len(draws)) + 1e-12
    assert ((draws.mean(0) - target).abs() <= 4.5 * se + 1e-9).all()


@pytest.mark.parametrize("kind", ["plain", "smoothed"])
def test_landmark_factors_mean_and_variance_exactly(kind):
    """With M = 1 the estimate has N equally likely values: average them."""
    g = gen(3)
    x = torch.rand(9, 3, generator=g, dtype=torch.float64) * 2
    if kind == "plain":
        def kernel(t):
            return (t <= 1.0).to(t.dtype)
    else:
        def kernel(t):
            return ball_overlap_kernel(t, 1.0)
    A = kernel(torch.cdist(x, x))
    outcomes = []
    for j in range(len(x)):  # every landmark, as the generator would draw it
        q = len(x) * A[:, [j]]
        k = torch.zeros(len(x), 1, dtype=x.dtype)
        k[j, 0] = 1
        outcomes.append(q @ k.T)
    outcomes = torch.stack(outcomes)
    torch.testing.assert_close(outcomes.mean(0), A)
    n = len(x)
    torch.testing.assert_close(outcomes.var(0, unbiased=False),
                               A**2 * n * (1 - 1 / n))
    # the function itself: zeros exact, non-negative, shapes; unbiased on
    # average over many draws of M = 16 landmarks
    draws = []
    for _ in range(3000):
        q, k = landmark_factors(x, kernel, 16, g)
        assert q.shape == k.shape == (9, 16) and (q >= 0).all()
        estimate = q @ k.T
        assert torch.all(estimate[A == 0] == 0)
        draws.append(estimate)
    draws = torch.stack(draws)
    se = (A**2 * n / 16 * (1 - 1 / n) / len(draws)).sqrt()
    assert ((draws.mean(0) - A).abs() <= 4.5 * se + 1e-12).all()
    torch.testing.assert_close(draws.var(0), A**2 * n / 16 * (1 - 1 / n),
                               rtol=0.15, atol=1e-9)
