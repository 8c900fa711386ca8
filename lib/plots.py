"""Plotting helpers. Each draws on the ``ax`` it is given and returns the figure;
none calls ``show`` or ``savefig``: the chapter owns the figure and its caption."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def heatmap(
    ax: Axes,
    matrix: np.ndarray,
    *,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    annotate: bool = True,
    vmin: float | None = 0.0,
    vmax: float | None = None,
    cmap: str = "viridis",
) -> Figure:
    """A matrix (R, C) as an image, cell values written in when ``annotate``; row 0 at the top."""
    matrix = np.asarray(matrix)
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax)
    if annotate:
        mid = (np.nanmax(matrix) + np.nanmin(matrix)) / 2
        for (r, c), value in np.ndenumerate(matrix):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if value > mid else "white")
    ax.set_xticks(range(matrix.shape[1]))
    ax.set_yticks(range(matrix.shape[0]))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax.figure


def line_with_band(
    ax: Axes,
    x: Sequence[float],
    center: Sequence[float],
    low: Sequence[float],
    high: Sequence[float],
    *,
    label: str | None = None,
    color: str | None = None,
) -> Figure:
    """A line through ``center`` with a shaded band from ``low`` to ``high`` (all length T)."""
    (line,) = ax.plot(x, center, marker="o", ms=3, label=label, color=color)
    ax.fill_between(x, low, high, alpha=0.25, color=line.get_color(), linewidth=0)
    return ax.figure


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 3.2, height: float = 2.8, **kw) -> tuple[Figure, np.ndarray]:
    """``plt.subplots`` with a per-panel size and constrained layout; axes always a 2-D array."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             layout="constrained", squeeze=False, **kw)
    return fig, axes


def attention_grid(
    axes: np.ndarray,
    pictures: Sequence[np.ndarray],
    maps: np.ndarray,
    grid: tuple[int, int],
    *,
    titles: Sequence[str],
    overlay: bool = False,
    row_labels: Sequence[str] | None = None,
    cmap: str = "magma",
    vmax: float | Sequence[float] | None = None,
) -> Figure:
    """Rows of (picture, map 1, ..., map K) on a 2-D array of axes (B, 1 + K).

    ``pictures`` are B images (H, W) grey or (H, W, 3) in [0, 1]; ``maps`` (B, K, G)
    are weights over the G = grid[0] * grid[1] patches, drawn on the patch grid,
    alone or (``overlay``) over the picture. ``titles`` label the 1 + K columns.
    ``vmax`` fixes the colour scale to [0, vmax] (one value for every map, or one
    per map column) so that panels can be compared; ``None`` scales each panel
    to its own range.
    """
    maps = np.asarray(maps)
    tops = [vmax] * maps.shape[1] if vmax is None or np.ndim(vmax) == 0 else list(vmax)
    if len(tops) != maps.shape[1]:
        raise ValueError(f"vmax: one value or {maps.shape[1]} (one per map column), got {len(tops)}")
    scale = [{} if top is None else {"vmin": 0.0, "vmax": float(top)} for top in tops]
    for row, picture in enumerate(pictures):
        grey = np.ndim(picture) == 2
        axes[row, 0].imshow(picture, cmap="gray" if grey else None)
        height, width = np.shape(picture)[:2]
        for col, weights in enumerate(maps[row], start=1):
            ax = axes[row, col]
            if overlay:
                ax.imshow(picture, cmap="gray" if grey else None)
                ax.imshow(weights.reshape(grid), cmap=cmap, alpha=0.6, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                          **scale[col - 1])
            else:
                ax.imshow(weights.reshape(grid), cmap=cmap, **scale[col - 1])
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize=7)
    for col, title in enumerate(titles):
        axes[0, col].set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes[0, 0].figure
