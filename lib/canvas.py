"""Why a ViT fails on a larger canvas: accuracy by canvas size and placement, and attention to the padding.

A model trained on H x H images is tested on the same images placed on a
larger background canvas (:func:`lib.classify.resized`). Two placements
separate two causes of a drop: ``"centre"`` shifts the object's patches to new
grid coordinates *and* adds background patches around it; ``"corner"`` keeps
the object's patches at their training coordinates and only adds background
patches (to the right and below). For a position-free model (NoPE) the two are
the same input up to a permutation of tokens, so they must give the same
accuracy.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import TensorDataset

from .classify import load_test, resized, train_classifier
from .train import accuracy


def padding_patches(image_size: int, size: int, placement: str, patch: int) -> torch.Tensor:
    """Boolean (L,) over the size/patch squared grid (row by row): True where a patch is all padding."""
    offset = (size - image_size) // 2 if placement == "centre" else 0
    starts = torch.arange(0, size, patch)
    inside = (starts + patch > offset) & (starts < offset + image_size)  # (G,) row or column meets the image
    return ~(inside[:, None] & inside[None, :]).flatten()


@torch.no_grad()
def cls_attention_on(model: torch.nn.Module, images: torch.Tensor, patches: torch.Tensor) -> list[float]:
    """Per layer, the mean (over images and heads) share of the CLS token's attention on ``patches``.

    images (B, C, S, S); patches a boolean (L,) mask over the grid. Returns one float per layer.
    """
    _, attention = model(images, return_attention=True)  # list of (B, Hh, 1 + L, 1 + L)
    return [w[:, :, 0, 1:][..., patches].sum(-1).mean().item() for w in attention]


def canvas_study(config: dict[str, Any], sizes: Sequence[int], attention_images: int = 500) -> dict[str, Any]:
    """Train the configured ViT (:func:`lib.classify.train_classifier`), then test it on larger canvases.

    Returns the training result plus, for each size in ``sizes`` and each
    placement (centre only where the margin is a whole number of patches, so
    that the object's patches are unchanged), the test accuracy and the
    per-layer CLS attention share on the padding patches (on the first
    ``attention_images`` test images).
    """
    result, model = train_classifier(config, return_model=True)
    test = load_test(config)
    image_size, patch = test.tensors[0].shape[-1], config["patch"][0]
    probe = TensorDataset(*(t[:attention_images] for t in test.tensors))
    canvases = []
    model.eval()
    for size in sizes:
        margin = (size - image_size) / 2
        for placement in ("centre", "corner") if margin > 0 and margin % patch == 0 else ("corner",):
            pad = padding_patches(image_size, size, placement, patch)
            images = resized(probe, size, placement).tensors[0]
            canvases.append(dict(
                size=size, placement=placement, padding_patches=int(pad.sum()),
                test_accuracy=accuracy(model, resized(test, size, placement)),
                cls_attention_on_padding=cls_attention_on(model, images, pad) if pad.any() else [0.0] * len(model.blocks),
            ))
    return {"training": {k: v for k, v in result.items() if k != "history"}, "canvases": canvases}
