"""lib.plots: the attention grid's shared colour scale."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from lib.plots import attention_grid, subplots


def test_attention_grid_shared_scale():
    maps = np.random.default_rng(0).random((2, 3, 4))  # 2 rows, 3 map columns, 2x2 grid
    pictures = [np.zeros((4, 4))] * 2
    fig, axes = subplots(2, 4)
    attention_grid(axes, pictures, maps, (2, 2), titles=["x", "a", "b", "c"], vmax=[1.0, 2.0, 3.0])
    for row in range(2):
        for col, top in zip(range(1, 4), (1.0, 2.0, 3.0)):
            assert axes[row, col].images[-1].get_clim() == (0.0, top)
    fig, axes = subplots(2, 4)
    attention_grid(axes, pictures, maps, (2, 2), titles=["x", "a", "b", "c"])  # own range per panel
    assert axes[0, 1].images[-1].get_clim() == (maps[0, 0].min(), maps[0, 0].max())
    with pytest.raises(ValueError, match="one per map column"):
        attention_grid(axes, pictures, maps, (2, 2), titles=["x", "a", "b", "c"], vmax=[1.0, 2.0])
