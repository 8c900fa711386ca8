import math

import pytest
import torch

from lib.features import (gaussian_projections, multi_indices, product_feature_variance, rademacher_projections,
                          random_product_features, symmetric_power_features, tensor_power_features)
from lib.linear_attention import linear_attention, quadratic_attention

GEN = lambda seed=0: torch.Generator().manual_seed(seed)


def qk(n=7, d=5, seed=0, dtype=torch.float64):
    g = GEN(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_exact_features_reproduce_the_polynomial_kernel(p):
    q, k = qk()
    target = (q @ k.T) ** p
    torch.testing.assert_close(tensor_power_features(q, p) @ tensor_power_features(k, p).T, target, rtol=1e-12, atol=1e-10)
    sym_q, sym_k = symmetric_power_features(q, p), symmetric_power_features(k, p)
    assert sym_q.shape[-1] == math.comb(5 + p - 1, p) == len(multi_indices(5, p))
    torch.testing.assert_close(sym_q @ sym_k.T, target, rtol=1e-12, atol=1e-10)


def single_feature_estimates(q, k, p, draws, distribution):
    """draws independent one-feature estimates of (q_i . k_j)^p -> (n, n, draws)."""
    draw = gaussian_projections if distribution == "gaussian" else rademacher_projections
    out = []
    for seed in range(draws // 5000):
        W = draw(p, 5000, q.shape[-1], GEN(seed), dtype=torch.float64)
        fq = torch.einsum("nd,tmd->ntm", q, W).prod(1)  # (n, 5000)
        fk = torch.einsum("nd,tmd->ntm", k, W).prod(1)
        out.append(fq[:, None, :] * fk[None, :, :])
    return torch.cat(out, -1)


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_random_product_features_are_unbiased(distribution):
    q, k = qk(n=3, d=4, seed=1)
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    estimates = single_feature_estimates(q, k, 4, 40_000, distribution)
    se = estimates.std(-1) / math.sqrt(estimates.shape[-1])
    assert ((estimates.mean(-1) - (q @ k.T) ** 4).abs() <= 4 * se).all(), "mean within 4 standard errors"


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.parametrize("p", [1, 2])
def test_product_feature_variance_formula(distribution, p):
    # degree 1 and 2 have light enough tails for a tight Monte Carlo check; the formula's
    # degree-p form then follows from the independence of the p factors
    q, k = qk(n=3, d=4, seed=2)
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    estimates = single_feature_estimates(q, k, p, 200_000, distribution)
    predicted = product_feature_variance(q[:, None, :], k[None, :, :], p, 1, distribution)
    torch.testing.assert_close(estimates.var(-1), predicted, rtol=0.06, atol=1e-3)
    assert torch.allclose(product_feature_variance(q, k, p, 10, distribution) * 10,
                          product_feature_variance(q, k, p, 1, distribution))


def test_random_product_features_shape_and_scaling():
    q, k = qk(n=6, d=3)
    W = gaussian_projections(4, 128, 3, GEN())
    fq = random_product_features(q.float(), W)
    assert fq.shape == (6, 128)
    manual = torch.stack([torch.stack([(W[t, j] @ q[0].float()) for t in range(4)]).prod() for j in range(128)]) / math.sqrt(128)
    torch.testing.assert_close(fq[0], manual, rtol=1e-5, atol=1e-6)


def test_rademacher_variance_never_exceeds_gaussian():
    q, k = qk(n=50, d=6, seed=3)
    vg = product_feature_variance(q, k, 4, 1, "gaussian")
    vr = product_feature_variance(q, k, 4, 1, "rademacher")
    assert (vr <= vg + 1e-9).all()


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_with_exact_features_equals_quadratic_attention(causal):
    q, k = qk(n=9, d=3, seed=4)
    v = torch.randn(9, 2, generator=GEN(5), dtype=torch.float64)
    exact = quadratic_attention((q @ k.T) ** 4, v, causal=causal)
    fq, fk = symmetric_power_features(q, 4), symmetric_power_features(k, 4)
    linear, denominator = linear_attention(fq, fk, v, causal=causal)
    torch.testing.assert_close(linear, exact, rtol=1e-9, atol=1e-9)
    scores = (q @ k.T) ** 4
    torch.testing.assert_close(denominator, (scores.tril() if causal else scores).sum(-1))


def test_linear_attention_accepts_an_exact_normaliser_and_batches():
    q, k = qk(n=8, d=3, seed=6)
    q, k = q.expand(2, 3, 8, 3), k.expand(2, 3, 8, 3)
    v = torch.randn(2, 3, 8, 4, dtype=torch.float64)
    fq, fk = symmetric_power_features(q, 4), symmetric_power_features(k, 4)
    out, den = linear_attention(fq, fk, v)
    out2, den2 = linear_attention(fq, fk, v, normaliser=den)
    torch.testing.assert_close(out, out2)
    assert out.shape == (2, 3, 8, 4)
    with pytest.raises(ValueError):
        product_feature_variance(q, k, 4, 1, "uniform")


from lib.features import ball_features, ball_overlap_kernel, importance_centres, uniform_centres


def test_ball_overlap_kernel_matches_a_monte_carlo_volume():
    delta, r = 1.0, 0.5
    g = GEN(0)
    points = (torch.rand(400_000, 3, generator=g, dtype=torch.float64) * 2 - 1) * r  # cube around B(0, r)
    in_first = points.norm(dim=-1) <= r
    ball_fraction = in_first.double().mean()
    for t in [0.0, 0.3, 0.7, 0.95, 1.2]:
        shifted = points - torch.tensor([t, 0.0, 0.0], dtype=torch.float64)
        overlap = (in_first & (shifted.norm(dim=-1) <= r)).double().mean() / ball_fraction
        assert abs(overlap - ball_overlap_kernel(torch.tensor(t), delta)) < 0.01
    assert ball_overlap_kernel(torch.tensor(0.0), delta) == 1 and ball_overlap_kernel(torch.tensor(1.5), delta) == 0


def test_smoothed_kernel_is_positive_semidefinite_and_indicator_is_not():
    g = GEN(1)
    x = torch.rand(300, 3, generator=g, dtype=torch.float64) * 3
    distance = torch.cdist(x, x)
    assert torch.linalg.eigvalsh(ball_overlap_kernel(distance, 1.0)).min() > -1e-9
    assert torch.linalg.eigvalsh((distance <= 1.0).double()).min() < -1e-3


@pytest.mark.parametrize("sampler", ["uniform", "importance"])
def test_ball_features_are_unbiased_nonnegative_and_exactly_local(sampler):
    delta, r = 1.0, 0.5
    g = GEN(2)
    x = torch.rand(12, 3, generator=g, dtype=torch.float64) * 2
    target = ball_overlap_kernel(torch.cdist(x, x), delta)
    draws = []
    for _ in range(400):
        if sampler == "uniform":
            centres, w = uniform_centres(x.min(0).values, x.max(0).values, 200, r, g)
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


from lib.features import (gelu_maclaurin_coefficient, maclaurin_variance, power_features, random_maclaurin_features,
                          weighted_power_features)


def test_gelu_maclaurin_series_matches_gelu():
    z = torch.linspace(-3, 3, 61, dtype=torch.float64)
    series = sum(gelu_maclaurin_coefficient(k) * z**k for k in range(0, 80))
    torch.testing.assert_close(series, torch.nn.functional.gelu(z), atol=1e-10, rtol=0)


def test_weighted_power_features_reproduce_a_polynomial_of_the_dot_product():
    w, x = qk(n=4, d=3, seed=7)
    coefficients = [0.3, -1.0, 0.5, 0.0, 0.25]
    lhs = weighted_power_features(w, coefficients) @ power_features(x, 4).T
    dot = w @ x.T
    torch.testing.assert_close(lhs, sum(c * dot**k for k, c in enumerate(coefficients)))
    assert power_features(x, 4).shape[-1] == math.comb(3 + 4, 4)


def test_random_maclaurin_features_are_unbiased_with_the_predicted_variance():
    w, x = qk(n=2, d=4, seed=8)
    w, x = 0.6 * w / w.norm(dim=-1, keepdim=True), 0.9 * x / x.norm(dim=-1, keepdim=True)
    draws = []
    g = GEN(9)
    for _ in range(4000):
        fw, fx = random_maclaurin_features(w, x, 16, 0.5, g)
        draws.append(fw @ fx.T)
    draws = torch.stack(draws)
    target = torch.nn.functional.gelu(w @ x.T)
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - target).abs() <= 4 * se).all()
    predicted = maclaurin_variance(w[:, None], x[None], 16, 0.5)
    torch.testing.assert_close(draws.var(0), predicted, rtol=0.15, atol=1e-6)
