"""Position schemes for a Vision Transformer on a grid of patches.

Patches are numbered in row-major order; patch n sits at row ``y = n // W`` and
column ``x = n % W`` of an (H, W) grid. An optional prefix of ``num_prefix``
tokens (the CLS token) carries no position: biases to and from it are 0 and
RoPE leaves it unrotated.

Three ways to tell attention where a token is:

- added to the tokens once, before the first block: :class:`LearnedAbsolute` (APE);
- added to the attention logits of every layer, as a float mask (H_heads, N, N):
  :class:`RelativeBias1D` (2L-1 learnable scalars per head, indexed by the 1-D
  offset j - i of the flattened sequence) and :class:`ManhattanBias` (a
  learnable polynomial of the L1 distance between the two patches on the grid);
- rotating queries and keys, so that q_i . k_j depends on positions only
  through their difference (RoPE, Heo, Park, Han, Yun, ECCV 2024):
  :class:`RoPEAxial` (fixed frequencies, half the channel pairs turn with x and
  half with y) and :class:`RoPEMixed` (learnable frequencies, every pair turns
  with theta_x x + theta_y y).

Every scheme is a class. Those that act in every attention layer share one
interface, ``forward(q, k, grid) -> (q, k, bias)``: the bias schemes return q
and k unchanged and a bias (Hh, N, N); the rotary ones return rotated q and k
and no bias; :class:`NoPosition` returns all three untouched. Each class has
``from_geometry(geometry)``, so that :data:`lib.vit.POSITION_SCHEMES` can map a
name straight to a class. Frequencies and angles are plain functions
(``axial_frequencies``, ``mixed_frequencies``, ``rope_angles``,
``rotate_pairs``) so they can be tested on their own. Shapes: N tokens,
Hh heads, Dh head width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

QKBias = tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]


@dataclass(frozen=True)
class Geometry:
    """What a position scheme needs to know about the model it sits in."""

    grid: tuple[int, int]  # training grid of patches (rows, columns)
    dim: int  # token width D
    heads: int  # attention heads Hh
    num_prefix: int  # tokens before the patches (1 for a CLS token)
    generator: torch.Generator | None = None  # random initialisations (RoPE-Mixed directions)
    manhattan_degree: int = 3

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


def grid_coordinates(grid: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """Integer (x, y) of each patch, row-major. grid (H, W) -> (H*W, 2) float."""
    h, w = grid
    n = torch.arange(h * w, device=device)
    return torch.stack([n % w, n // w], dim=-1).float()


def pad_prefix(bias: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Surround a patch-to-patch bias (Hh, L, L) with zeros for the prefix tokens -> (Hh, L+p, L+p)."""
    return F.pad(bias, (num_prefix, 0, num_prefix, 0))


class NoPosition(nn.Module):
    """NoPE: s_ij = q_i . k_j / sqrt(Dh); q, k pass through, no bias."""

    per_layer = True

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> "NoPosition":
        return cls()

    def forward(self, q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int]) -> QKBias:
        """q, k (B, Hh, N, Dh) -> q, k, None."""
        return q, k, None


class LearnedAbsolute(nn.Module):
    """APE: a learned vector per token position, added to the tokens once, x + E[pos].

    Trained for one grid; at another grid the patch table is resized by bicubic
    interpolation in 2-D (as ViT does when fine-tuning at a higher resolution).
    """

    per_layer = False  # acts on the tokens before the first block, not inside attention

    def __init__(self, grid: tuple[int, int], dim: int, num_prefix: int = 1):
        super().__init__()
        self.grid, self.num_prefix = grid, num_prefix
        self.table = nn.Parameter(0.02 * torch.randn(num_prefix + grid[0] * grid[1], dim))

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> "LearnedAbsolute":
        return cls(geometry.grid, geometry.dim, geometry.num_prefix)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """x (B, N, D) -> x + table (B, N, D)."""
        table = self.table
        if tuple(grid) != tuple(self.grid):
            prefix, patches = table[: self.num_prefix], table[self.num_prefix:]
            patches = patches.T.reshape(1, -1, *self.grid)  # (1, D, H, W)
            patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
            table = torch.cat([prefix, patches.reshape(patches.shape[1], -1).T])
        return x + table


class RelativeBias1D(nn.Module):
    """b_h(j - i): one learnable scalar per head and 1-D offset of the flattened patch sequence.

    For L patches the offsets j - i run over -(L-1) .. L-1, so the table holds
    exactly 2L - 1 scalars per head. The offset ignores the 2-D grid: the patch
    below patch i (offset W) and the patch W to the right of it on the same row
    would share a scalar if both existed. At a longer sequence, offsets beyond
    the trained range reuse the table's end entries (clamping).
    """

    per_layer = True

    def __init__(self, num_patches: int, heads: int, num_prefix: int = 1):
        super().__init__()
        self.num_patches, self.num_prefix = num_patches, num_prefix
        self.table = nn.Parameter(torch.zeros(heads, 2 * num_patches - 1))

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> "RelativeBias1D":
        return cls(geometry.grid[0] * geometry.grid[1], geometry.heads, geometry.num_prefix)

    def forward(self, q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int]) -> QKBias:
        """q, k (B, Hh, N, Dh) -> q, k unchanged and the bias (Hh, N, N)."""
        return q, k, self.bias(grid)

    def bias(self, grid: tuple[int, int]) -> torch.Tensor:
        """-> bias (Hh, N, N) with N = num_prefix + H*W."""
        n = torch.arange(grid[0] * grid[1], device=self.table.device)
        offset = (n[None, :] - n[:, None]).clamp(-(self.num_patches - 1), self.num_patches - 1)
        return pad_prefix(self.table[:, offset + self.num_patches - 1], self.num_prefix)


class ManhattanBias(nn.Module):
    """sum_k c_{h,k} (d_ij / s)^k: a learnable polynomial of the grid L1 distance d_ij = |x_i-x_j| + |y_i-y_j|.

    ``s`` is the largest distance of the training grid (H - 1 + W - 1), so the
    argument lies in [0, 1] during training and the coefficients are well
    scaled. Symmetric in i, j and invariant to translating both patches.
    Coefficients start at 0 (no bias).
    """

    per_layer = True

    def __init__(self, grid: tuple[int, int], heads: int, degree: int = 3, num_prefix: int = 1):
        super().__init__()
        if not isinstance(degree, int) or degree < 1:
            raise ValueError(f"degree={degree!r}: the Manhattan polynomial needs an integer degree >= 1")
        self.scale, self.num_prefix = max(1, grid[0] + grid[1] - 2), num_prefix
        self.coefficients = nn.Parameter(torch.zeros(heads, degree + 1))

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> "ManhattanBias":
        return cls(geometry.grid, geometry.heads, geometry.manhattan_degree, geometry.num_prefix)

    def forward(self, q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int]) -> QKBias:
        """q, k (B, Hh, N, Dh) -> q, k unchanged and the bias (Hh, N, N)."""
        return q, k, self.bias(grid)

    def bias(self, grid: tuple[int, int]) -> torch.Tensor:
        """-> bias (Hh, N, N) with N = num_prefix + H*W."""
        xy = grid_coordinates(grid, self.coefficients.device)
        distance = (xy[:, None, :] - xy[None, :, :]).abs().sum(-1) / self.scale  # (L, L)
        powers = distance[None] ** torch.arange(self.coefficients.shape[1], device=xy.device)[:, None, None]
        bias = torch.einsum("hk,kij->hij", self.coefficients, powers)
        return pad_prefix(bias, self.num_prefix)


def axial_frequencies(head_dim: int, base: float = 100.0) -> torch.Tensor:
    """RoPE-Axial frequencies base^(-t/(Dh/4)), t = 0 .. Dh/4 - 1 -> (Dh/4,)."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
    return base ** (-torch.arange(head_dim // 4).float() / (head_dim // 4))


def mixed_frequencies(head_dim: int, heads: int, generator: torch.Generator | None, base: float = 10.0) -> torch.Tensor:
    """RoPE-Mixed initial frequencies -> (2, Hh, Dh/2): [theta_x, theta_y] for every head and channel pair.

    Magnitudes base^(-t/(Dh/4)); head h points the first Dh/4 pairs in a random
    direction phi_h and the other Dh/4 pairs in the perpendicular direction
    phi_h + pi/2 (Heo et al., 2024).
    """
    magnitude = axial_frequencies(head_dim, base)  # (Dh/4,)
    phi = 2 * math.pi * torch.rand(heads, 1, generator=generator)  # (Hh, 1)
    directions = torch.cat([phi.expand(-1, head_dim // 4), (phi + math.pi / 2).expand(-1, head_dim // 4)], dim=-1)
    magnitudes = torch.cat([magnitude, magnitude])  # (Dh/2,)
    return torch.stack([magnitudes * torch.cos(directions), magnitudes * torch.sin(directions)])


def rope_angles(xy: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """Rotation angle of every channel pair: x theta_x + y theta_y.

    xy (L, 2) and frequencies (2, ..., Dh/2) -> angles (..., L, Dh/2).
    """
    fx, fy = frequencies[0], frequencies[1]
    return xy[:, 0, None] * fx[..., None, :] + xy[:, 1, None] * fy[..., None, :]


def rotate_pairs(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs (x_2p, x_2p+1) by angles[..., p]; returns a new tensor.

    x (..., L, Dh), angles broadcastable to (..., L, Dh/2) -> (..., L, Dh).
    """
    even, odd = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos(), angles.sin()
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def rotate_pairs_complex(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """:func:`rotate_pairs` as one complex product, (x_2p + i x_2p+1) e^(i angle_p): the fast path.

    The reference :func:`rotate_pairs` works on strided even and odd channels,
    which costs four times as long on a CPU; a test checks that the two agree.
    Computed in fp32 (complex bf16 does not exist) and returned in x's dtype.
    x (..., L, Dh), angles broadcastable to (..., L, Dh/2) -> (..., L, Dh).
    """
    z = torch.view_as_complex(x.float().contiguous().unflatten(-1, (-1, 2)))  # (..., L, Dh/2)
    turn = torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(z * turn).flatten(-2).to(x.dtype)


class _RoPE(nn.Module):
    """Shared forward of the two RoPE variants: rotate the patch tokens of q and k, never in place."""

    num_prefix: int
    per_layer = True

    def frequencies(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, q: torch.Tensor, k: torch.Tensor, grid: tuple[int, int]) -> QKBias:
        """q, k (B, Hh, N, Dh) -> rotated q, k (B, Hh, N, Dh), no bias; the first num_prefix tokens untouched.

        The prefix gets angle 0, a rotation by exactly 1 + 0i, so it comes out unchanged bit for bit.
        """
        angles = rope_angles(grid_coordinates(grid, q.device), self.frequencies())  # (L, Dh/2) or (Hh, L, Dh/2)
        angles = F.pad(angles, (0, 0, self.num_prefix, 0))  # (..., N, Dh/2): prefix rows are 0
        q, k = rotate_pairs_complex(torch.stack([q, k]), angles)  # one product for both: (2, B, Hh, N, Dh)
        return q, k, None


class RoPEAxial(_RoPE):
    """RoPE-Axial: pairs 0 .. Dh/4-1 turn by x theta_t, pairs Dh/4 .. Dh/2-1 by y theta_t; fixed theta."""

    def __init__(self, head_dim: int, num_prefix: int = 1, base: float = 100.0):
        super().__init__()
        self.num_prefix = num_prefix
        f = axial_frequencies(head_dim, base)
        zeros = torch.zeros_like(f)
        self.register_buffer("freqs", torch.stack([torch.cat([f, zeros]), torch.cat([zeros, f])]), persistent=False)

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> "RoPEAxial":
        return cls(geometry.head_dim, geometry.num_prefix)

    def frequencies(self) -> torch.Tensor:
        return self.freqs  # (2, Dh/2)


class RoPEMixed(_RoPE):
    """RoPE-Mixed: every pair turns by theta_x x + theta_y y with learnable per-head frequencies (one set per layer)."""

    def __init__(self, head_dim: int, heads: int, generator: torch.Generator | None = None, num_prefix: int = 1,
                 base: float = 10.0):
        super().__init__()
        self.num_prefix = num_prefix
        self.freqs = nn.Parameter(mixed_frequencies(head_dim, heads, generator, base))  # (2, Hh, Dh/2)

    @classmethod
    def from_geometry(cls, geometry: Geometry) -> "RoPEMixed":
        return cls(geometry.head_dim, geometry.heads, geometry.generator, geometry.num_prefix)

    def frequencies(self) -> torch.Tensor:
        return self.freqs
