"""A fast CPU forward for mambapy's MambaBlock: the same function, the same parameters.

``FastMambaBlock`` subclasses ``mambapy.mamba.MambaBlock`` and keeps its ``__init__``, so its
parameters, their names and their initialisation (from the same RNG stream) are mambapy's;
only ``forward`` differs. The selective scan is an ``autograd.Function`` with a hand-written
backward (a plain loop over time, in place, on preallocated buffers) instead of mambapy's
padded Blelloch scan under autograd.

Shapes: B batch, L length, D model width, E = expand * D inner width, N state size, R dt rank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from mambapy.mamba import MambaBlock
from torch import Tensor

LOG2E = math.log2(math.e)


class SelectiveScan(torch.autograd.Function):
    """y_t = sum_n C_t[n] h_t[n],  h_t = exp(delta_t A) * h_{t-1} + B_t u_t,  h_{-1} = 0.

    Inputs: delta, u (B, L, E); A (E, N); Bm, C (B, L, N). Output y (B, L, E).
    The states are kept as (B, L, N, E), E innermost, so every product below is a
    vectorised loop over E. Both passes are plain loops over time whose per-step work
    (B, N, E) stays in cache; the only full-size tensors are the saved exp(delta A) and h.
    """

    @staticmethod
    def forward(ctx, delta: Tensor, A: Tensor, u: Tensor, Bm: Tensor, C: Tensor) -> Tensor:
        b, L, e = u.shape
        At2 = A.t() * LOG2E  # (N, E); exp(delta A) = 2^(delta A log2 e), exp2 is faster
        dA = torch.empty(b, L, A.shape[1], e, dtype=u.dtype)  # exp(delta_t A)
        h = torch.empty_like(dA)  # h_t
        y = torch.empty_like(u)
        for t in range(L):
            torch.mul(delta[:, t, None, :], At2, out=dA[:, t]).exp2_()
            torch.mul(Bm[:, t, :, None], u[:, t, None, :], out=h[:, t])  # B_t u_t  (B, N, E)
            if t > 0:
                h[:, t].addcmul_(dA[:, t], h[:, t - 1])
            torch.matmul(C[:, t, None, :], h[:, t], out=y[:, t, None, :])  # (B, 1, N) @ (B, N, E)
        ctx.save_for_backward(delta, A, u, Bm, C, dA, h)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        """With g_t = dLoss/dh_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1} (a reverse scan):
        du_t = sum_n B_t g_t, dB_t = sum_e u_t g_t, dC_t = sum_e h_t dy_t, and with
        P_t = g_t h_{t-1} exp(delta_t A): ddelta_t = sum_n A P_t, dA = sum_{b,t} delta_t P_t."""
        delta, A, u, Bm, C, dA, h = ctx.saved_tensors
        b, L, n, e = h.shape
        At = A.t()  # (N, E)
        dy = dy.contiguous()
        ddelta, du = torch.zeros_like(delta), torch.empty_like(u)
        dB, dC = torch.empty_like(Bm), torch.empty_like(C)
        dAt = torch.zeros_like(At)
        g = torch.zeros(b, n, e, dtype=h.dtype)  # g_t
        P = torch.empty_like(g)
        for t in range(L - 1, -1, -1):
            if t < L - 1:
                g.mul_(dA[:, t + 1])
            g.addcmul_(C[:, t, :, None], dy[:, t, None, :])
            torch.matmul(h[:, t], dy[:, t, :, None], out=dC[:, t, :, None])  # (B, N, E) @ (B, E, 1)
            torch.matmul(Bm[:, t, None, :], g, out=du[:, t, None, :])  # (B, 1, N) @ (B, N, E)
            torch.matmul(g, u[:, t, :, None], out=dB[:, t, :, None])
            if t > 0:
                torch.mul(g, h[:, t - 1], out=P).mul_(dA[:, t])
                dAt.add_((P * delta[:, t, None, :]).sum(0))
                torch.sum(P.mul_(At), 1, out=ddelta[:, t])
        return ddelta, dAt.t(), du, dB, dC


def selective_scan(delta: Tensor, A: Tensor, u: Tensor, Bm: Tensor, C: Tensor) -> Tensor:
    """See :class:`SelectiveScan`; under ``no_grad`` the states are never all stored."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (delta, A, u, Bm, C)):
        return SelectiveScan.apply(delta, A, u, Bm, C)
    return _scan_no_grad(delta, A, u, Bm, C)


def _scan_no_grad(delta: Tensor, A: Tensor, u: Tensor, Bm: Tensor, C: Tensor) -> Tensor:
    """The same recurrence one step at a time, keeping only h_t (B, N, E)."""
    b, L, e = u.shape
    At2 = A.t() * LOG2E  # (N, E)
    h = torch.zeros(b, A.shape[1], e, dtype=u.dtype)
    dA = torch.empty_like(h)
    y = torch.empty(b, L, e, dtype=u.dtype)
    for t in range(L):
        torch.mul(delta[:, t, None, :], At2, out=dA).exp2_()
        h.mul_(dA).add_(Bm[:, t, :, None] * u[:, t, None, :])
        torch.matmul(C[:, t, None, :], h, out=y[:, t, None, :])
    return y


def causal_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Depthwise causal conv over time: out_t = bias + sum_k weight[:, k] x_{t-K+1+k}.
    x (B, L, E), weight (E, 1, K) as in ``nn.Conv1d`` -> (B, L, E)."""
    L, K = x.shape[1], weight.shape[-1]
    xp = F.pad(x, (0, 0, K - 1, 0))  # (B, L+K-1, E), zeros before t = 0
    out = xp[:, K - 1:] * weight[:, 0, K - 1]
    for k in range(K - 1):
        out = out + xp[:, k:k + L] * weight[:, 0, k]
    return out if bias is None else out + bias


class FastMambaBlock(MambaBlock):
    """mambapy's MambaBlock (same __init__, parameters and state_dict) with a faster forward.

    x (B, L, D) -> in_proj -> (x, z) (B, L, E) each
    x = silu(causal_conv(x));  (dt, B, C) = x_proj(x);  delta = softplus(dt_proj(dt))  (B, L, E)
    y = selective_scan(delta, A = -exp(A_log), u = delta x, B, C) + D x
    out = out_proj(y silu(z))  (B, L, D)
    """

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.config
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        x = F.silu(causal_conv(x, self.conv1d.weight, self.conv1d.bias))
        dt, Bm, C = self.x_proj(x).split([cfg.dt_rank, cfg.d_state, cfg.d_state], dim=-1)
        dt, Bm, C = self._apply_layernorms(dt, Bm, C)
        delta = F.softplus(self.dt_proj(dt))  # (B, L, E)
        A = -torch.exp(self.A_log.float())  # (E, N)
        y = selective_scan(delta, A, delta * x, Bm.contiguous(), C.contiguous()) + self.D * x
        return self.out_proj(y * F.silu(z))
