import math

import pytest
import torch

from lib.features.polynomial import (gaussian_projections, multi_indices,
                                     product_feature_variance,
                                     rademacher_projections,
                                     random_product_features,
                                     symmetric_power_features,
                                     tensor_power_features)
from lib.linear_attention import linear_attention, quadratic_attention


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def qk(n=7, d=5, seed=0, dtype=torch.float64):
    g = gen(seed)
    return (torch.randn(n, d, generator=g, dtype=dtype),
            torch.randn(n, d, generator=g, dtype=dtype))


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_exact_features_reproduce_the_polynomial_kernel(p):
    q, k = qk()
    target = (q @ k.T) ** p
    full = tensor_power_features(q, p) @ tensor_power_features(k, p).T
    torch.testing.assert_close(full, target, rtol=1e-12, atol=1e-10)
    sym_q = symmetric_power_features(q, p)
    sym_k = symmetric_power_features(k, p)
    size = math.comb(5 + p - 1, p)
    assert sym_q.shape[-1] == size == len(multi_indices(5, p))
    torch.testing.assert_close(sym_q @ sym_k.T, target, rtol=1e-12, atol=1e-10)


def single_feature_estimates(q, k, p, draws, distribution):
    """Independent one-feature estimates of (q_i . k_j)^p -> (n, n, draws)."""
    if distribution == "gaussian":
        draw = gaussian_projections
    else:
        draw = rademacher_projections
    out = []
    for seed in range(draws // 5000):
        W = draw(p, 5000, q.shape[-1], gen(seed), dtype=torch.float64)
        fq = torch.einsum("nd,tmd->ntm", q, W).prod(1)  # (n, 5000)
        fk = torch.einsum("nd,tmd->ntm", k, W).prod(1)
        out.append(fq[:, None, :] * fk[None, :, :])
    return torch.cat(out, -1)


def unit_rows(x):
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_random_product_features_are_unbiased(distribution):
    q, k = map(unit_rows, qk(n=3, d=4, seed=1))
    estimates = single_feature_estimates(q, k, 4, 40_000, distribution)
    se = estimates.std(-1) / math.sqrt(estimates.shape[-1])
    error = (estimates.mean(-1) - (q @ k.T) ** 4).abs()
    assert (error <= 4 * se).all(), "mean within 4 standard errors"


@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
@pytest.mark.parametrize("p", [1, 2])
def test_product_feature_variance_formula(distribution, p):
    # degree 1 and 2 have light enough tails for a tight Monte Carlo check;
    # the formula's degree-p form then follows from the independence of the
    # p factors
    q, k = map(unit_rows, qk(n=3, d=4, seed=2))
    estimates = single_feature_estimates(q, k, p, 200_000, distribution)
    predicted = product_feature_variance(q[:, None, :], k[None, :, :], p, 1,
                                         distribution)
    torch.testing.assert_close(estimates.var(-1), predicted, rtol=0.06,
                               atol=1e-3)
    assert torch.allclose(
        product_feature_variance(q, k, p, 10, distribution) * 10,
        product_feature_variance(q, k, p, 1, distribution))


def test_random_product_features_shape_and_scaling():
    q, k = qk(n=6, d=3)
    W = gaussian_projections(4, 128, 3, gen())
    fq = random_product_features(q.float(), W)
    assert fq.shape == (6, 128)
    q0 = q[0].float()
    manual = torch.stack([torch.stack([W[t, j] @ q0 for t in range(4)]).prod()
                          for j in range(128)]) / math.sqrt(128)
    torch.testing.assert_close(fq[0], manual, rtol=1e-5, atol=1e-6)


def test_rademacher_variance_never_exceeds_gaussian():
    q, k = qk(n=50, d=6, seed=3)
    vg = product_feature_variance(q, k, 4, 1, "gaussian")
    vr = product_feature_variance(q, k, 4, 1, "rademacher")
    assert (vr <= vg + 1e-9).all()


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_with_exact_features_equals_quadratic(causal):
    q, k = qk(n=9, d=3, seed=4)
    v = torch.randn(9, 2, generator=gen(5), dtype=torch.float64)
    exact = quadratic_attention((q @ k.T) ** 4, v, causal=causal)
    fq, fk = symmetric_power_features(q, 4), symmetric_power_features(k, 4)
    linear, denominator = linear_attention(fq, fk, v, causal=causal)
    torch.testing.assert_close(linear, exact, rtol=1e-9, atol=1e-9)
    scores = (q @ k.T) ** 4
    row_sums = (scores.tril() if causal else scores).sum(-1)
    torch.testing.assert_close(denominator, row_sums)


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
