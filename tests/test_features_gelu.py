import math

import torch

import itertools

from lib.features.gelu import (gelu_maclaurin_coefficient, maclaurin_degrees,
                               maclaurin_log_second_moment,
                               maclaurin_probability, maclaurin_variance,
                               power_features, rademacher_second_moment,
                               random_maclaurin_features,
                               weighted_power_features)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def wx(n=4, d=3, seed=0):
    g = gen(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randn(n, d, generator=g, dtype=torch.float64))


def test_gelu_maclaurin_series_matches_gelu():
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)
    series = sum(gelu_maclaurin_coefficient(k) * z**k for k in range(0, 80))
    torch.testing.assert_close(series, torch.nn.functional.gelu(z),
                               atol=1e-10, rtol=0)


def test_weighted_power_features_reproduce_a_polynomial_of_the_dot():
    w, x = wx(n=4, d=3, seed=7)
    coefficients = [0.3, -1.0, 0.5, 0.0, 0.25]
    lhs = weighted_power_features(w, coefficients) @ power_features(x, 4).T
    dot = w @ x.T
    rhs = sum(c * dot**k for k, c in enumerate(coefficients))
    torch.testing.assert_close(lhs, rhs)
    assert power_features(x, 4).shape[-1] == math.comb(3 + 4, 4)


def test_maclaurin_degrees_follow_their_law_whatever_the_default_dtype():
    degrees = maclaurin_degrees(200_000, 0.5, gen(1))
    for k in (1, 2, 4, 6):
        share = (degrees == k).double().mean().item()
        assert abs(share - maclaurin_probability(k, 0.5)) < 0.005, k
    assert set(degrees.unique().tolist()) <= {1} | set(range(2, 200, 2))
    default = torch.get_default_dtype()
    try:  # the draw does not depend on torch's default dtype
        torch.set_default_dtype(torch.float64)
        again = maclaurin_degrees(200_000, 0.5, gen(1))
    finally:
        torch.set_default_dtype(default)
    assert torch.equal(degrees, again)


def test_random_maclaurin_features_are_unbiased_with_predicted_variance():
    w, x = wx(n=2, d=4, seed=8)
    w = 0.6 * w / w.norm(dim=-1, keepdim=True)
    x = 0.9 * x / x.norm(dim=-1, keepdim=True)
    draws = []
    g = gen(9)
    for _ in range(4000):
        fw, fx = random_maclaurin_features(w, x, 16, 0.5, g)
        draws.append(fw @ fx.T)
    draws = torch.stack(draws)
    target = torch.nn.functional.gelu(w @ x.T)
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - target).abs() <= 4 * se).all()
    predicted = maclaurin_variance(w[:, None], x[None], 16, 0.5)
    torch.testing.assert_close(draws.var(0), predicted, rtol=0.15, atol=1e-6)


def test_rademacher_second_moment_by_enumeration_and_jensen():
    for d in (2, 5, 9):
        w, x = wx(n=6, d=d, seed=d)
        signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)),
                             dtype=torch.float64)  # (2^d, d)
        enumerated = ((signs @ w.T) ** 2 * (signs @ x.T) ** 2).mean(0)
        s = rademacher_second_moment(w, x)
        torch.testing.assert_close(enumerated, s)
        assert (s >= (w * x).sum(-1) ** 2 - 1e-12).all()
    # s vanishes for w = (1, 1), x = (1, -1): (omega . w)(omega . x) = 0
    s0 = rademacher_second_moment(torch.tensor([1.0, 1.0]),
                                  torch.tensor([1.0, -1.0]))
    assert s0.abs() < 1e-12


def test_log_second_moment_matches_the_direct_series_and_its_growth():
    s = torch.tensor([0.1, 1.0, 4.0, 20.0], dtype=torch.float64)
    direct = sum(gelu_maclaurin_coefficient(k) ** 2
                 / maclaurin_probability(k, 0.5) * s**k
                 for k in range(1, 120) if gelu_maclaurin_coefficient(k))
    torch.testing.assert_close(maclaurin_log_second_moment(s, 0.5),
                               direct.log())
    # like log I_0(s / sqrt(rho)): log E[X^2] / s -> 1 / sqrt(rho)
    for rho in (0.5, 0.7):
        big = torch.tensor(5000.0, dtype=torch.float64)
        slope = maclaurin_log_second_moment(big, rho).item() / 5000.0
        assert abs(slope - 1 / math.sqrt(rho)) < 0.005, (rho, slope)
