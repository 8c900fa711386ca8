"""Kernel attention, quadratic and linear.

For a non-negative kernel with attention matrix A_ij = K(q_i, k_j), attention
is D^{-1} A V with D = diag(A 1). When K(q, k) = phi(q) . phi(k):

    bidirectional:  out = D^{-1} phi(Q) (phi(K)^T V),        D = diag(phi(Q) (phi(K)^T 1))
    causal:         out_i = phi(q_i)^T S_i / phi(q_i)^T z_i,  S_i = sum_{j<=i} phi(k_j) v_j^T, z_i = sum_{j<=i} phi(k_j)

costing O(N M D_v) instead of O(N^2 (D + D_v)) (Katharopoulos et al., 2020;
Choromanski et al., 2021). With signed random features the estimated
normaliser can be near zero or negative; ``normaliser`` lets a caller pass an
exact one instead. Shapes: (..., N, M) features, (..., N, D_v) values.
"""

from __future__ import annotations

import torch


def quadratic_attention(scores: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """D^{-1} A V for an explicit non-negative A (..., N, N); causal keeps j <= i. -> (..., N, D_v)."""
    if scores.ndim < 2 or scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f"scores has shape {tuple(scores.shape)}; it must be (..., N, N)")
    if v.ndim < 2 or v.shape[-2] != scores.shape[-1]:
        raise ValueError(f"v has shape {tuple(v.shape)}; it must be (..., N, D_v) with N={scores.shape[-1]}")
    if causal:
        scores = scores.tril()
    return (scores @ v) / scores.sum(-1, keepdim=True)


def linear_attention(
    q_features: torch.Tensor,
    k_features: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    normaliser: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with A = phi(Q) phi(K)^T without forming A.

    q_features, k_features (..., N, M); v (..., N, D_v); normaliser (..., N) or None
    -> output (..., N, D_v) and the normaliser used (..., N).
    """
    for name, x in (("q_features", q_features), ("k_features", k_features), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise ValueError(f"{name} must be a tensor (..., N, last), got {getattr(x, 'shape', type(x).__name__)}")
    if q_features.shape[-1] != k_features.shape[-1]:
        raise ValueError(f"q_features {tuple(q_features.shape)} and k_features {tuple(k_features.shape)} must have "
                         "the same number of features M (last axis)")
    if k_features.shape[-2] != v.shape[-2] or (causal and q_features.shape[-2] != k_features.shape[-2]):
        raise ValueError(f"k_features {tuple(k_features.shape)} and v {tuple(v.shape)} must have the same number "
                         "of tokens N (second-to-last axis), and so must q_features when causal")
    if normaliser is not None and normaliser.shape != q_features.shape[:-1]:
        raise ValueError(f"normaliser has shape {tuple(normaliser.shape)}; it must be {tuple(q_features.shape[:-1])}"
                         " (..., N), one value per query")
    if causal:
        state = torch.cumsum(k_features[..., :, :, None] * v[..., :, None, :], dim=-3)  # (..., N, M, D_v)
        numerator = torch.einsum("...nm,...nmv->...nv", q_features, state)
        estimated = (q_features * torch.cumsum(k_features, dim=-2)).sum(-1)
    else:
        numerator = q_features @ (k_features.transpose(-1, -2) @ v)  # (..., N, D_v), never N x N
        estimated = q_features @ k_features.sum(-2)[..., None]  # (..., N, 1)
        estimated = estimated[..., 0]
    denominator = estimated if normaliser is None else normaliser
    return numerator / denominator[..., None], denominator
