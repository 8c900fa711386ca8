import pytest
import torch
from torch.utils.data import TensorDataset

from lib.canvas import cls_attention_on, padding_patches
from lib.classify import normalise, resized
from lib.vit import ViT


def digits(n: int = 3) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    images = normalise(torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8), "mnist")
    return TensorDataset(images, torch.arange(n))


@pytest.mark.parametrize("placement,count", [("centre", 9 * 9 - 7 * 7), ("corner", 9 * 9 - 7 * 7)])
def test_padding_patches_mark_exactly_the_background_ring(placement, count):
    mask = padding_patches(28, 36, placement, 4)
    assert mask.shape == (81,) and int(mask.sum()) == count
    canvas = resized(digits(), 36, placement).tensors[0]  # (3, 1, 36, 36)
    patches = canvas.unfold(2, 4, 4).unfold(3, 4, 4).reshape(3, 81, 16)
    black = normalise(torch.zeros(1, 1, 1, 1, dtype=torch.uint8), "mnist").item()
    torch.testing.assert_close(patches[:, mask], torch.full_like(patches[:, mask], black))
    assert not torch.isclose(patches[:, ~mask], torch.tensor(black)).all(-1).any()  # random images have no black patch


def test_corner_keeps_the_image_at_the_origin_and_centre_shifts_it():
    data = digits()
    torch.testing.assert_close(resized(data, 36, "corner").tensors[0][..., :28, :28], data.tensors[0])
    torch.testing.assert_close(resized(data, 36, "centre").tensors[0][..., 4:32, 4:32], data.tensors[0])
    with pytest.raises(ValueError):
        resized(data, 35, "centre")
    with pytest.raises(ValueError):
        resized(data, 36, "middle")


def test_nope_cannot_tell_centre_from_corner_but_rope_can():
    images = digits().tensors[0]
    for position, same in [("none", True), ("rope-axial", False)]:
        model = ViT(image=(28, 28), patch=(4, 4), channels=1, classes=10, position=position,
                    dim=32, depth=2, heads=4, mlp_dim=64, seed=0).eval()
        with torch.no_grad():
            centre = model(resized(TensorDataset(images, torch.zeros(3)), 36, "centre").tensors[0])
            corner = model(resized(TensorDataset(images, torch.zeros(3)), 36, "corner").tensors[0])
        assert torch.allclose(centre, corner, atol=1e-5) == same, position


def test_cls_attention_shares_add_up_with_the_cls_self_attention():
    model = ViT(image=(28, 28), patch=(4, 4), channels=1, classes=10, position="rope-mixed",
                dim=32, depth=2, heads=4, mlp_dim=64, seed=0).eval()
    images = resized(digits(), 36, "corner").tensors[0]
    mask = padding_patches(28, 36, "corner", 4)
    on_padding, on_image = cls_attention_on(model, images, mask), cls_attention_on(model, images, ~mask)
    with torch.no_grad():
        _, attention = model(images, return_attention=True)
    on_cls = [w[:, :, 0, 0].mean().item() for w in attention]
    for a, b, c in zip(on_padding, on_image, on_cls):
        assert 0 < a < 1 and a + b + c == pytest.approx(1.0, abs=1e-5)
