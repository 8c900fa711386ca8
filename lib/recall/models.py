"""Models for associative recall: a 2-layer attention-only Transformer (learned PE, RoPE or NoPE),
a 2-layer Mamba, and a hybrid (one Mamba layer, then one attention layer, no PE).

All read the fixed token embeddings (K, d) of :mod:`lib.recall.task`, map them to the
model width, and predict the value token from the last position. Attention is
causal (a decoder, as in the Mamba paper's synthetic tasks); without a causal
mask a NoPE model would see a set and could not tell which token follows q.

Mamba layers use the CUDA package ``mamba_ssm`` when it imports and a GPU is
present, else the pure-PyTorch ``mambapy`` (Gu and Dao's selective scan in
PyTorch); :func:`mamba_backend` says which. On the CPU, ``fast_scan=True``
swaps mambapy's block for :class:`lib.recall.fast_mamba_c.CMambaBlock` (a C
kernel for the scan, compiled on first use) or, without a C compiler,
:class:`lib.recall.fast_mamba.FastMambaBlock` (the scan in PyTorch with a
hand-written backward): the same parameters and function, tested against
mambapy in ``tests/test_fast_mamba.py``. A layer's ``backend`` says which ran. All are wrapped the same way,
x + Mamba(RMSNorm(x)), with d_state 16, d_conv 4 and expansion 2.
Shapes: B batch, N tokens, W model width, K vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..positions import rotate_pairs

KINDS = ("transformer", "mamba", "hybrid")
POSITIONS = ("learned", "rope", "none")


def mamba_backend() -> str:
    """``"mamba_ssm"`` when its CUDA kernels can run here, else ``"mambapy"``."""
    if torch.cuda.is_available():
        try:
            import mamba_ssm  # noqa: F401

            return "mamba_ssm"
        except ImportError:
            pass
    return "mambapy"


class MambaLayer(nn.Module):
    """x + Mamba(RMSNorm(x)) with the backend of :func:`mamba_backend`. (B, N, W) -> (B, N, W)."""

    def __init__(self, width: int, backend: str | None = None, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 fast_scan: bool = False):
        super().__init__()
        self.backend = backend or mamba_backend()
        self.d_inner, self.d_state, self.d_conv = expand * width, d_state, d_conv
        if self.backend == "mamba_ssm":
            from mamba_ssm import Mamba

            self.norm = nn.RMSNorm(width)
            self.mixer = Mamba(d_model=width, d_state=d_state, d_conv=d_conv, expand=expand)
        else:
            from mambapy.mamba import MambaBlock, MambaConfig, RMSNorm

            config = MambaConfig(d_model=width, n_layers=1, d_state=d_state, d_conv=d_conv, expand_factor=expand)
            if fast_scan:  # same __init__ and parameters, faster forward
                from . import fast_mamba_c

                if fast_mamba_c.available():
                    MambaBlock, self.backend = fast_mamba_c.CMambaBlock, "fast-c"
                else:
                    from .fast_mamba import FastMambaBlock as MambaBlock
                    self.backend = "fast-torch"
            self.norm, self.mixer = RMSNorm(width), MambaBlock(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))


def rope_1d(x: torch.Tensor, base: float = 10_000.0) -> torch.Tensor:
    """1-D RoPE: pair p of position n turns by n base^(-2p/Dh). x (B, H, N, Dh) -> (B, H, N, Dh)."""
    n, dh = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(dh // 2, device=x.device, dtype=x.dtype) * 2 / dh)
    return rotate_pairs(x, torch.arange(n, device=x.device, dtype=x.dtype)[:, None] * theta)


def mamba_state_floats(model: nn.Module) -> dict[str, int]:
    """The recurrent state a model with Mamba layers carries from token to token, in floats,
    summed over its Mamba layers: ``"ssm"``, the selective state (d_inner x d_state per
    layer), and ``"conv"``, the last d_conv - 1 inputs of the causal convolution
    (d_inner x (d_conv - 1) per layer). Zero for attention-only models, whose cache
    grows with the sequence instead."""
    layers = [m for m in model.modules() if isinstance(m, MambaLayer)]
    return {"ssm": sum(m.d_inner * m.d_state for m in layers),
            "conv": sum(m.d_inner * (m.d_conv - 1) for m in layers)}


def set_mamba_scan(model: nn.Module, parallel: bool) -> nn.Module:
    """Switch every mambapy layer of ``model`` between its parallel scan (``True``, the
    default: a Blelloch scan over the sequence, padded to a power of two) and the
    sequential loop (``False``); the two compute the same function. Returns ``model``."""
    for layer in model.modules():
        if isinstance(layer, MambaLayer) and layer.backend != "mamba_ssm":
            layer.mixer.config.pscan = parallel
    return model


class CausalAttentionLayer(nn.Module):
    """x + causal multi-head attention(LayerNorm(x)), optionally with 1-D RoPE. (B, N, W) -> (B, N, W)."""

    def __init__(self, width: int, heads: int, rope: bool = False):
        super().__init__()
        self.heads, self.rope = heads, rope
        self.norm = nn.LayerNorm(width)
        self.to_qkv = nn.Linear(width, 3 * width)
        self.to_out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.to_qkv(self.norm(x)), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if self.rope:
            q, k = rope_1d(q), rope_1d(k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return x + self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class RecallModel(nn.Module):
    """Embeddings -> read-in -> layers -> norm -> logits over K at the last position.

    ``kind`` is ``"transformer"`` (two attention layers; ``position`` in :data:`POSITIONS`),
    ``"mamba"`` (two Mamba layers) or ``"hybrid"`` (Mamba then attention, no PE).
    A learned position table has ``max_len`` rows; only the first L are trained,
    and longer test sequences use the untrained rows as they are.
    """

    def __init__(self, embeddings: torch.Tensor, kind: str, position: str = "none", width: int = 64,
                 heads: int = 2, max_len: int = 192, backend: str | None = None, fast_scan: bool = False):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be transformer, mamba or hybrid, got {kind!r}")
        if position not in POSITIONS or (kind != "transformer" and position != "none"):
            raise ValueError(f"position {position!r} is not valid for {kind}; transformers take {POSITIONS}")
        K, d = embeddings.shape
        self.register_buffer("embeddings", embeddings)
        self.read_in = nn.Linear(d, width)
        self.position = nn.Parameter(0.02 * torch.randn(max_len, width)) if position == "learned" else None
        if kind == "transformer":
            self.layers = nn.ModuleList(CausalAttentionLayer(width, heads, rope=position == "rope") for _ in range(2))
        elif kind == "mamba":
            self.layers = nn.ModuleList(MambaLayer(width, backend, fast_scan=fast_scan) for _ in range(2))
        else:
            self.layers = nn.ModuleList([MambaLayer(width, backend, fast_scan=fast_scan),
                                         CausalAttentionLayer(width, heads)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, K)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N) int64 -> logits (B, K) for the token after the last position."""
        x = self.read_in(self.embeddings[tokens])  # (B, N, W)
        if self.position is not None:
            if tokens.shape[1] > len(self.position):
                raise ValueError(f"sequence of {tokens.shape[1]} tokens; the position table has {len(self.position)} rows")
            x = x + self.position[: tokens.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x[:, -1]))
