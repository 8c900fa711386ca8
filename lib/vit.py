"""A compact Vision Transformer whose position scheme is one constructor argument.

Dosovitskiy et al. (ICLR 2021): cut the image into patches, embed each linearly,
prepend a CLS token (or pool the patch tokens), run pre-norm Transformer blocks,
classify with an MLP head:

    z_0 = [x_cls; x_1 E; ...; x_L E] (+ APE)
    z'_l = z_{l-1} + MSA(LN(z_{l-1}))       MSA with the layer's bias or RoPE
    z_l  = z'_l + MLP(LN(z'_l))
    y    = head(LN(z_L)[cls])  or  head(mean of LN(z_L) over patches)

``position`` is a key of :data:`POSITION_SCHEMES`, which maps each name to its
class in :mod:`lib.positions` (the formula is in the class's docstring):

- ``"none"``: no position information (NoPE);
- ``"ape"``: learned absolute embeddings added once to the tokens;
- ``"rpe-1d"``: per layer, 2L-1 learnable scalars per head indexed by j - i;
- ``"rpe-manhattan"``: per layer, a learnable polynomial of the grid L1 distance;
- ``"rope-axial"`` / ``"rope-mixed"``: per layer, rotary embeddings of Heo et al. (2024).

``seed`` makes the whole initialisation deterministic (every parameter is drawn
inside :func:`lib.seeding.seeded`, which leaves the caller's generator alone);
``seed=None`` draws from torch's global generator like any ``nn.Module``.

``patch`` is (height, width): (4, 4) squares or (1, 28) row stripes on MNIST.
Attention runs through the fused ``F.scaled_dot_product_attention`` (the bias
as a float mask), except on a CPU for the bias schemes, where the explicit
softmax(q k^T / sqrt(Dh) + bias) v is faster at these sizes
(``scripts/benchmark_vit.py``), and whenever ``forward(x, return_attention=True)``
asks for every layer's weights (B, Hh, N, N). A test checks the two agree. Shapes: B batch, C channels,
N tokens, D width, Hh heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn

from .positions import (Geometry, LearnedAbsolute, ManhattanBias, NoPosition, RelativeBias1D, RoPEAxial,
                        RoPEMixed)
from .seeding import seeded

POSITION_SCHEMES: dict[str, type[nn.Module]] = {
    "none": NoPosition,
    "ape": LearnedAbsolute,
    "rpe-1d": RelativeBias1D,
    "rpe-manhattan": ManhattanBias,
    "rope-axial": RoPEAxial,
    "rope-mixed": RoPEMixed,
}
"""Scheme name -> class. A class with ``per_layer = True`` is built once per attention layer and
maps (q, k, grid) to (q, k, bias); otherwise it is built once and acts on the tokens."""


class Attention(nn.Module):
    """Multi-head self-attention; ``position`` maps (q, k, grid) to (q, k, bias) (RoPE or a bias)."""

    def __init__(self, dim: int, heads: int, position: nn.Module):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_out = nn.Linear(dim, dim)
        self.position = position
        self.fused: bool | None = None  # None: the rule in forward; True / False force a path (tests, benchmark)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], return_attention: bool = False):
        """x (B, N, D) -> (B, N, D), and the weights (B, Hh, N, N) when asked."""
        q, k, v = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        q, k, bias = self.position(q, k, grid)  # bias (Hh, N, N) or None, broadcast over the batch
        rule = bias is not None and not q.is_cuda  # explicit with a bias on a CPU
        explicit = return_attention or (not self.fused if self.fused is not None else rule)
        if explicit:  # softmax(q k^T / sqrt(Dh) + bias) v; on CPU faster than the fused kernel with a bias
            logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # scaling q is cheaper than the logits
            weights = (logits if bias is None else logits + bias).softmax(dim=-1)
            out = weights @ v
        else:  # fused kernel (flash attention on CPU too): faster without a bias (scripts/benchmark_vit.py)
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=bias), None
        return self.to_out(rearrange(out, "b h n d -> b n (h d)")), weights if return_attention else None


class Block(nn.Module):
    """Pre-norm Transformer block: x + MSA(LN(x)), then + MLP(LN(.))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float, position: nn.Module):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, position)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, grid: tuple[int, int], return_attention: bool = False):
        """x (B, N, D) -> (B, N, D), weights or None."""
        out, weights = self.attention(self.norm1(x), grid, return_attention)
        x = x + out
        return x + self.mlp(self.norm2(x)), weights


class ViT(nn.Module):
    """Vision Transformer; see the module docstring.

    >>> model = ViT(image=(28, 28), patch=(4, 4), channels=1, classes=10, position="rope-mixed")
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        image: tuple[int, int],
        patch: tuple[int, int],
        channels: int,
        classes: int,
        position: str,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_dim: int = 128,
        pool: str = "cls",
        dropout: float = 0.0,
        manhattan_degree: int = 3,
        seed: int | None = None,
    ):
        super().__init__()
        if position not in POSITION_SCHEMES:
            raise ValueError(f"unknown position scheme {position!r}; valid: {', '.join(POSITION_SCHEMES)}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if min(patch) < 1 or image[0] % patch[0] or image[1] % patch[1]:
            raise ValueError(f"image {image} is not a whole number of {patch} patches")
        for name, value in (("dim", dim), ("depth", depth), ("heads", heads), ("mlp_dim", mlp_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not allowed: {name} must be an integer >= 1")
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.patch, self.pool, self.position = tuple(patch), pool, position
        self.grid = (image[0] // patch[0], image[1] // patch[1])
        generator = torch.Generator().manual_seed(seed) if seed is not None else None  # RoPE-Mixed directions
        geometry = Geometry(self.grid, dim, heads, num_prefix=1 if pool == "cls" else 0, generator=generator,
                            manhattan_degree=manhattan_degree)
        scheme = POSITION_SCHEMES[position]
        with seeded(seed):  # every parameter below is drawn from `seed` (or the global RNG for None)
            self.to_patch_embedding = nn.Sequential(
                Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch[0], p2=patch[1]),
                nn.LayerNorm(patch[0] * patch[1] * channels),
                nn.Linear(patch[0] * patch[1] * channels, dim),
                nn.LayerNorm(dim),
            )
            self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim)) if pool == "cls" else None
            self.absolute = None if scheme.per_layer else scheme.from_geometry(geometry)
            self.blocks = nn.ModuleList(
                Block(dim, heads, mlp_dim, dropout,
                      scheme.from_geometry(geometry) if scheme.per_layer else NoPosition())
                for _ in range(depth)
            )
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, classes)

    def forward(self, images: torch.Tensor, return_attention: bool = False):
        """images (B, C, H, W) -> logits (B, classes); with return_attention also a list of (B, Hh, N, N).

        Any image size that is a whole number of patches works; the grid follows it.
        """
        grid = (images.shape[-2] // self.patch[0], images.shape[-1] // self.patch[1])
        x = self.to_patch_embedding(images)  # (B, L, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)  # (B, 1 + L, D)
        if self.absolute is not None:
            x = self.absolute(x, grid)
        attention = []
        for block in self.blocks:
            x, weights = block(x, grid, return_attention)
            attention.append(weights)
        x = self.norm(x)
        logits = self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))
        return (logits, attention) if return_attention else logits


    def no_weight_decay(self) -> set[str]:
        """Names of the parameters AdamW should not decay (:func:`lib.train.parameter_groups`): the CLS
        token and every parameter of a position scheme (APE table, RPE tables and polynomials, RoPE
        frequencies), as in the reference code of Heo et al. (2024)."""
        names = {"cls_token"} if self.cls_token is not None else set()
        for prefix, module in self.named_modules():
            if isinstance(module, tuple(POSITION_SCHEMES.values())):
                names |= {f"{prefix}.{name}" for name, _ in module.named_parameters()}
        return names


def attention_rollout(attention: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema, 2020) of a list of per-layer weights (B, H, N, N), first layer first.

    Each layer's head-averaged matrix is mixed half-and-half with the identity (the
    residual connection) and re-normalised; the product over layers, (B, N, N), estimates
    how much each input token contributes to each output token (row i, column j).
    """
    n = attention[0].shape[-1]
    eye = torch.eye(n, dtype=attention[0].dtype, device=attention[0].device)
    joint = eye.expand(attention[0].shape[0], n, n)
    for weights in attention:
        a = 0.5 * weights.mean(1) + 0.5 * eye
        joint = (a / a.sum(-1, keepdim=True)) @ joint
    return joint


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
