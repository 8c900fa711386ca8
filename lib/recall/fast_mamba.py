"""A faster CPU forward for mambapy's MambaBlock: the same function, the same parameters.

``FastMambaBlock`` subclasses ``mambapy.mamba.MambaBlock`` and keeps its ``__init__``, so the
parameters, their names, their initialisation (the same RNG draws) and the state_dict are
mambapy's; only ``forward`` differs. The selective scan is an ``autograd.Function`` with a
hand-written backward: a plain loop over time, in place, with the state dimension N
outside the channel dimension E (E contiguous), instead of mambapy's power-of-two padded
Blelloch scan differentiated by autograd. Under ``no_grad`` the scan keeps one state.

Shapes: B batch, L length, D model width, E = expand * D inner width, N state size, R dt rank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from mambapy.mamba import MambaBlock
from torch import Tensor

LOG2E = math.log2(math.e)  # exp(x) = 2^(x log2 e); exp2 is the faster kernel on CPU


class SelectiveScan(torch.autograd.Function):
    """y_t = sum_n C_t[n] h_t[n],  h_t = exp(delta_t A) * h_{t-1} + B_t u_t,  h_{-1} = 0.

    delta, u (B, L, E); A (E, N); Bm, C (B, L, N)  ->  y (B, L, E).
    Saves dA_t = exp(delta_t A) and h_t as (B, L, N, E) for the backward pass.
    """

    @staticmethod
    def forward(ctx, delta: Tensor, A: Tensor, u: Tensor, Bm: Tensor, C: Tensor) -> Tensor:
        L = u.shape[1]
        At = A.t()  # (N, E)
        dA = torch.mul(delta[:, :, None, :], At * LOG2E).exp2_()  # (B, L, N, E)
        h = torch.mul(Bm[..., None], u[:, :, None, :])  # (B, L, N, E), B_t u_t, then h_t in place
        for t in range(1, L):
            h[:, t].addcmul_(dA[:, t], h[:, t - 1])  # h_t = dA_t h_{t-1} + B_t u_t
        y = (C[:, :, None, :] @ h).squeeze(2)  # (B, L, 1, N) @ (B, L, N, E) -> (B, L, E)
        ctx.save_for_backward(delta, At, u, Bm, C, dA, h)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """g_t = dLoss/dh_t = C_t dy_t + dA_{t+1} g_{t+1} (a reverse scan); then
        du_t = sum_n B_t g_t, dB_t = sum_e u_t g_t, dC_t = sum_e h_t dy_t, and with
        P_t = g_t h_{t-1} dA_t = dLoss/d(delta_t A): ddelta_t = sum_n A P_t, dA = sum_{b,t} delta_t P_t."""
        delta, At, u, Bm, C, dA, h = ctx.saved_tensors
        L = h.shape[1]
        dy = dy.contiguous()
        dC = (dy[:, :, None, :] @ h.transpose(-1, -2)).squeeze(2)  # (B, L, 1, E) @ (B, L, E, N) -> (B, L, N)
        g = torch.mul(C[..., None], dy[:, :, None, :])  # (B, L, N, E)
        for t in range(L - 2, -1, -1):
            g[:, t].addcmul_(dA[:, t + 1], g[:, t + 1])
        du = (Bm[:, :, None, :] @ g).squeeze(2)  # (B, L, 1, N) @ (B, L, N, E) -> (B, L, E)
        dB = (u[:, :, None, :] @ g.transpose(-1, -2)).squeeze(2)  # (B, L, 1, E) @ (B, L, E, N) -> (B, L, N)
        P = g  # P_t in g's buffer, P_0 = 0 since h_{-1} = 0
        P[:, 1:].mul_(h[:, :-1]).mul_(dA[:, 1:])
        P[:, 0] = 0
        ddelta = P.mul_(At).sum(2)  # (B, L, E)
        dAt = P.mul_(delta[:, :, None, :]).sum((0, 1)).div_(At)  # (N, E); A = -exp(A_log) is never 0
        return ddelta, dAt.t(), du, dB, dC


def selective_scan(delta: Tensor, A: Tensor, u: Tensor, Bm: Tensor, C: Tensor) -> Tensor:
    """:class:`SelectiveScan` when a gradient is needed, else the same loop keeping only h_t."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (delta, A, u, Bm, C)):
        return SelectiveScan.apply(delta, A, u, Bm, C)
    At2 = A.t() * LOG2E  # (N, E)
    h = torch.zeros(u.shape[0], *At2.shape, dtype=u.dtype, device=u.device)  # (B, N, E)
    dA, ys = torch.empty_like(h), []
    for t in range(u.shape[1]):
        torch.mul(delta[:, t, None, :], At2, out=dA).exp2_()
        h.mul_(dA).addcmul_(Bm[:, t, :, None], u[:, t, None, :])
        ys.append(torch.bmm(C[:, t, None, :], h))  # (B, 1, N) @ (B, N, E) -> (B, 1, E)
    return torch.cat(ys, dim=1)


class CausalConv(torch.autograd.Function):
    """Depthwise causal convolution over time, nn.Conv1d(E, E, K, groups=E, padding=K-1)[..., :L]
    on (B, L, E) without transposes or padding: out_t = bias + sum_s w[:, K-1-s] x_{t-s}.
    x (B, L, E), w (E, K), bias (E,) -> (B, L, E)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, bias: Tensor) -> Tensor:
        L, K = x.shape[1], w.shape[1]
        out = torch.addcmul(bias, x, w[:, K - 1])
        for s in range(1, min(K, L)):
            out[:, s:].addcmul_(x[:, :L - s], w[:, K - 1 - s])
        ctx.save_for_backward(x, w)
        return out

    @staticmethod
    def backward(ctx, dy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, w = ctx.saved_tensors
        L, K = x.shape[1], w.shape[1]
        dx, dw = dy * w[:, K - 1], torch.zeros_like(w)
        dw[:, K - 1] = (dy * x).sum((0, 1))
        for s in range(1, min(K, L)):
            dx[:, :L - s].addcmul_(dy[:, s:], w[:, K - 1 - s])
            dw[:, K - 1 - s] = (dy[:, s:] * x[:, :L - s]).sum((0, 1))
        return dx, dw, dy.sum((0, 1))


class FastMambaBlock(MambaBlock):
    """mambapy's MambaBlock (same __init__, parameters, state_dict) with a faster CPU forward.

    x (B, L, D) -> in_proj -> x, z (B, L, E)
    x <- silu(CausalConv(x));  dt, B, C = x_proj(x);  delta = softplus(dt_proj(dt))  (B, L, E)
    y = selective_scan(delta, A = -exp(A_log), u = delta x, B, C) + D x
    out = out_proj(y silu(z))  (B, L, D)
    """

    scan = staticmethod(selective_scan)  # (delta, A, u, B, C) -> y, without the D x term

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.config
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        bias = self.conv1d.bias if self.conv1d.bias is not None else x.new_zeros(x.shape[-1])
        x = F.silu(CausalConv.apply(x, self.conv1d.weight[:, 0], bias))
        dt, Bm, C = self.x_proj(x).split([cfg.dt_rank, cfg.d_state, cfg.d_state], dim=-1)
        dt, Bm, C = self._apply_layernorms(dt, Bm, C)
        delta = F.softplus(self.dt_proj(dt))  # (B, L, E)
        A = -torch.exp(self.A_log.float())  # (E, N)
        y = self.scan(delta, A, delta * x, Bm.contiguous(), C.contiguous()) + self.D * x
        return self.out_proj(y * F.silu(z))
