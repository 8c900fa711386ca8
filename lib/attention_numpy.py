"""Multi-head self-attention in plain NumPy.

NNDL 2024 session 4, computer assignment.

"QKV attention", row convention: the N input vectors are the rows of
X (N, D); a weight matrix W (d, D) maps a token x to W x, so Q = X W_q^T,
K = X W_k^T, V = X W_v^T and

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V,

the softmax taken over each row (over keys). The multi-head version with H
heads uses rows h*D/H .. (h+1)*D/H - 1 of W_q, W_k, W_v for head h, runs the
single-head function on each, concatenates the H outputs along features and
applies the output map W_o (identity when omitted).
"""

from __future__ import annotations

import numpy as np


def _check_matrix(name: str, value: object) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a NumPy array, got {type(value).__name__}")
    if value.ndim != 2 or 0 in value.shape:
        raise ValueError(f"{name} has shape {value.shape}; "
                         "it must be a non-empty matrix (2-D)")


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``.

    The max is subtracted first. Same shape in and out.
    """
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def self_attention(
    X: np.ndarray, W_q: np.ndarray, W_k: np.ndarray, W_v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Single-head scaled dot-product self-attention.

    X (N, D); W_q, W_k (d_k, D); W_v (d_v, D)
    ->  output (N, d_v), weights A (N, N) with rows summing to 1.
    """
    _check_matrix("X", X)
    D = X.shape[1]
    for name, W in (("W_q", W_q), ("W_k", W_k), ("W_v", W_v)):
        _check_matrix(name, W)
        if W.shape[1] != D:
            raise ValueError(
                f"{name} has shape {W.shape}; it must be (d, D) with "
                f"D={D}, the width of X {X.shape}")
    if W_q.shape != W_k.shape:
        raise ValueError(f"W_q {W_q.shape} and W_k {W_k.shape} must have "
                         "the same shape (d_k, D)")
    Q, K, V = X @ W_q.T, X @ W_k.T, X @ W_v.T  # (N, d_k), (N, d_k), (N, d_v)
    # (N, N): A[i, j] is the weight of key j for query i
    A = softmax(Q @ K.T / np.sqrt(Q.shape[-1]), axis=-1)
    return A @ V, A


def multi_head_self_attention(
    X: np.ndarray, W_q: np.ndarray, W_k: np.ndarray, W_v: np.ndarray, H: int,
    W_o: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """H heads of :func:`self_attention`; head h uses the h-th block of D/H
    rows of each W.

    X (N, D); W_q, W_k, W_v (D, D); W_o (D, D) or None for identity
    ->  output (N, D), weights (H, N, N).
    """
    _check_matrix("X", X)
    N, D = X.shape
    if not isinstance(H, (int, np.integer)) or isinstance(H, bool) or H < 1:
        raise ValueError(f"H={H!r} is not allowed: H must be an integer "
                         ">= 1 (the number of heads)")
    if D % H != 0:
        raise ValueError(f"D={D} is not divisible by H={H}: "
                         "H must divide the width D of X")
    if W_o is not None:
        _check_matrix("W_o", W_o)
        if W_o.shape != (D, D):
            raise ValueError(
                f"W_o has shape {W_o.shape}; expected {(D, D)} or None")
    for name, W in (("W_q", W_q), ("W_k", W_k), ("W_v", W_v)):
        if W.shape != (D, D):
            raise ValueError(f"{name} has shape {W.shape}; expected {(D, D)}")
    d = D // H
    rows = [slice(h * d, (h + 1) * d) for h in range(H)]  # head h's rows
    heads = [self_attention(X, W_q[r], W_k[r], W_v[r]) for r in rows]
    Y = np.concatenate([out for out, _ in heads], axis=-1)  # (N, D)
    A = np.stack([weights for _, weights in heads])  # (H, N, N)
    return (Y if W_o is None else Y @ W_o.T), A
