import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.attention_numpy import multi_head_self_attention, self_attention, softmax


def random_problem(seed=0, N=5, D=6):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D))
    W_q, W_k, W_v = (rng.standard_normal((D, D)) for _ in range(3))
    return X, W_q, W_k, W_v


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    z = np.array([[1000.0, 1001.0, 999.0], [-5.0, 0.0, 5.0]])
    p = softmax(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p[0], softmax(z[0] - 1000.0))


@pytest.mark.parametrize("H", [1, 2, 3, 6])
def test_matches_torch_scaled_dot_product_attention(H):
    X, W_q, W_k, W_v = random_problem()
    ours, weights = multi_head_self_attention(X, W_q, W_k, W_v, H)
    N, D = X.shape
    to_heads = lambda W: torch.from_numpy(X @ W.T).reshape(N, H, D // H).transpose(0, 1)  # (H, N, D/H)
    ref = F.scaled_dot_product_attention(to_heads(W_q), to_heads(W_k), to_heads(W_v))  # (H, N, D/H)
    np.testing.assert_allclose(ours, ref.transpose(0, 1).reshape(N, D).numpy(), rtol=1e-10, atol=1e-12)
    assert weights.shape == (H, N, N)
    np.testing.assert_allclose(weights.sum(-1), 1.0)


def test_single_head_is_multi_head_with_one_head():
    X, W_q, W_k, W_v = random_problem(1)
    y1, a1 = self_attention(X, W_q, W_k, W_v)
    y, a = multi_head_self_attention(X, W_q, W_k, W_v, H=1)
    np.testing.assert_allclose(y, y1)
    np.testing.assert_allclose(a[0], a1)


def test_permutation_equivariance():
    X, W_q, W_k, W_v = random_problem(2)
    perm = np.array([1, 0, 2, 3, 4])
    for H in (1, 3):
        y, a = multi_head_self_attention(X, W_q, W_k, W_v, H)
        yp, ap = multi_head_self_attention(X[perm], W_q, W_k, W_v, H)
        np.testing.assert_allclose(yp, y[perm])
        np.testing.assert_allclose(ap, a[:, perm][:, :, perm])


def test_output_map_and_bad_shapes():
    X, W_q, W_k, W_v = random_problem(3)
    W_o = np.random.default_rng(0).standard_normal((6, 6))
    y, _ = multi_head_self_attention(X, W_q, W_k, W_v, 3)
    y_o, _ = multi_head_self_attention(X, W_q, W_k, W_v, 3, W_o)
    np.testing.assert_allclose(y_o, y @ W_o.T)
    with pytest.raises(ValueError, match="not divisible"):
        multi_head_self_attention(X, W_q, W_k, W_v, 4)
    with pytest.raises(ValueError, match="W_k has shape"):
        multi_head_self_attention(X, W_q, W_k[:3], W_v, 3)
