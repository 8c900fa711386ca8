import math

import pytest
import torch

from lib.positions import (ManhattanBias, RelativeBias1D, RoPEAxial, RoPEMixed, axial_frequencies,
                           grid_coordinates, mixed_frequencies, rope_angles, rotate_pairs)
from lib.train import seeded
from lib.vit import POSITION_SCHEMES, ViT

GEN = lambda seed=0: torch.Generator().manual_seed(seed)


def test_grid_coordinates_are_row_major_x_then_y():
    xy = grid_coordinates((2, 3))
    assert xy.tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]]


@pytest.mark.parametrize("rope", ["axial", "mixed"])
def test_rope_preserves_norms_and_leaves_cls_alone(rope):
    module = RoPEAxial(16) if rope == "axial" else RoPEMixed(16, heads=2, generator=GEN())
    q, k = torch.randn(3, 2, 1 + 12, 16, generator=GEN(1)), torch.randn(3, 2, 1 + 12, 16, generator=GEN(2))
    q_rot, k_rot, bias = module(q, k, (3, 4))
    assert bias is None
    torch.testing.assert_close(q_rot.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(k_rot.norm(dim=-1), k.norm(dim=-1))
    assert torch.equal(q_rot[..., 0, :], q[..., 0, :]) and torch.equal(k_rot[..., 0, :], k[..., 0, :])
    assert not torch.allclose(q_rot[..., 2:, :], q[..., 2:, :])


@pytest.mark.parametrize("rope", ["axial", "mixed"])
def test_rope_logits_depend_only_on_the_offset(rope):
    freqs = (torch.stack([torch.cat([axial_frequencies(8), torch.zeros(2)]), torch.cat([torch.zeros(2), axial_frequencies(8)])])
             if rope == "axial" else mixed_frequencies(8, heads=1, generator=GEN())[:, 0])
    q, k = torch.randn(8, generator=GEN(3)), torch.randn(8, generator=GEN(4))

    def logit(pos_q, pos_k):
        xy = torch.tensor([pos_q, pos_k], dtype=torch.float32)
        angles = rope_angles(xy, freqs)  # (2, 4)
        return rotate_pairs(q, angles[0]) @ rotate_pairs(k, angles[1])

    base = logit((1.0, 2.0), (4.0, 0.0))
    for shift in [(3.0, 5.0), (-1.0, 7.0), (10.0, -2.0)]:
        shifted = logit((1 + shift[0], 2 + shift[1]), (4 + shift[0], 0 + shift[1]))
        torch.testing.assert_close(shifted, base, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logit((1.0, 2.0), (5.0, 0.0)), base)


def test_rope_frequencies_follow_heo_et_al():
    f = axial_frequencies(16)
    torch.testing.assert_close(f, 100.0 ** (-torch.arange(4) / 4))
    m = mixed_frequencies(16, heads=3, generator=GEN())
    assert m.shape == (2, 3, 8)
    magnitudes = m.norm(dim=0)  # (3, 8)
    torch.testing.assert_close(magnitudes, (10.0 ** (-torch.arange(4) / 4)).repeat(2).expand(3, 8))
    # first half of the pairs along a random direction per head, second half perpendicular to it
    first, second = m[:, :, 0], m[:, :, 4]
    torch.testing.assert_close((first * second).sum(0), torch.zeros(3), atol=1e-6, rtol=0)


def test_rope_mixed_frequencies_get_gradients_in_fp32():
    model = RoPEMixed(8, heads=2, generator=GEN())
    q = torch.randn(2, 2, 1 + 4, 8, requires_grad=True)
    k = torch.randn(2, 2, 1 + 4, 8, requires_grad=True)
    q_rot, k_rot, _ = model(q, k, (2, 2))
    (q_rot @ k_rot.transpose(-1, -2)).square().sum().backward()
    assert model.freqs.grad is not None and model.freqs.grad.abs().sum() > 0
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_relative_bias_has_2l_minus_1_entries_shared_by_offset():
    L, heads = 6, 2
    module = RelativeBias1D(L, heads)
    assert module.table.shape == (heads, 2 * L - 1)
    with torch.no_grad():
        module.table.copy_(torch.arange(heads * (2 * L - 1), dtype=torch.float32).reshape(heads, -1))
    bias = module.bias((2, 3))
    q = torch.randn(1, heads, 1 + L, 4)
    assert module(q, q, (2, 3))[0] is q and torch.equal(module(q, q, (2, 3))[2], bias)
    assert bias.shape == (heads, 1 + L, 1 + L)
    assert torch.all(bias[:, 0, :] == 0) and torch.all(bias[:, :, 0] == 0)
    patch = bias[:, 1:, 1:]
    for i in range(L):
        for j in range(L):
            assert torch.equal(patch[:, i, j], module.table[:, j - i + L - 1])


def test_manhattan_bias_is_symmetric_and_a_function_of_grid_distance():
    module = ManhattanBias((3, 4), heads=2, degree=3)
    with torch.no_grad():
        module.coefficients.copy_(torch.randn(2, 4, generator=GEN()))
    bias = module.bias((3, 4))[:, 1:, 1:]
    torch.testing.assert_close(bias, bias.transpose(-1, -2))
    xy = grid_coordinates((3, 4))
    distance = (xy[:, None] - xy[None]).abs().sum(-1)
    for d in distance.unique():
        values = bias[:, distance == d]
        torch.testing.assert_close(values, values[:, :1].expand_as(values))
    c = module.coefficients.detach()
    t = distance[0, 5] / 5  # patch 0 vs patch 5, scale = 3 - 1 + 4 - 1
    torch.testing.assert_close(bias[:, 0, 5], sum(c[:, p] * t**p for p in range(4)))


@pytest.mark.parametrize("position", POSITION_SCHEMES)
@pytest.mark.parametrize("shape", [(1, 28, 28, (4, 4)), (3, 32, 32, (4, 4)), (1, 28, 28, (1, 28))])
def test_every_scheme_runs_forward_and_backward(position, shape):
    channels, h, w, patch = shape
    with seeded(0):
        model = ViT(image=(h, w), patch=patch, channels=channels, classes=10, position=position, dim=32, depth=2, heads=4)
    x = torch.randn(2, channels, h, w)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("position", POSITION_SCHEMES)
def test_fused_and_explicit_attention_paths_agree(position):
    with seeded(0):
        model = ViT(image=(28, 28), patch=(7, 7), channels=1, classes=10, position=position, dim=32, depth=2, heads=4)
    for p in model.parameters():  # make biases non-zero so the test can see them
        p.data += 0.05 * torch.randn_like(p)
    x = torch.randn(3, 1, 28, 28)
    explicit, attention = model(x, return_attention=True)
    for block in model.blocks:  # the fused kernel, called directly with the block's own q, k, v and bias
        block.attention.fused = True
    fused = model(x)
    for block in model.blocks:
        block.attention.fused = None
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)
    assert len(attention) == 2 and attention[0].shape == (3, 4, 17, 17)
    torch.testing.assert_close(attention[0].sum(-1), torch.ones(3, 4, 17))


@pytest.mark.parametrize("position", POSITION_SCHEMES)
def test_runs_at_an_unseen_resolution(position):
    with seeded(0):
        model = ViT(image=(28, 28), patch=(4, 4), channels=1, classes=10, position=position, dim=32, depth=1, heads=4)
    assert model(torch.randn(2, 1, 36, 36)).shape == (2, 10)


def test_seed_makes_the_whole_model_deterministic_and_leaves_the_global_rng_alone():
    for position in POSITION_SCHEMES:
        build = lambda seed: ViT(image=(28, 28), patch=(7, 7), channels=1, classes=10, position=position,
                                 dim=32, depth=2, heads=4, seed=seed)
        torch.manual_seed(123)
        before = torch.random.get_rng_state()
        a, b, c = build(5).state_dict(), build(5).state_dict(), build(6).state_dict()
        assert torch.equal(torch.random.get_rng_state(), before), "building a seeded model draws nothing globally"
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "same seed, same weights"
        assert any(not torch.equal(a[k], c[k]) for k in a), "another seed, other weights"


def test_scheme_mapping_names_a_class_with_a_formula():
    for name, scheme in POSITION_SCHEMES.items():
        assert isinstance(scheme.per_layer, bool) and scheme.__doc__, name
    assert [n for n, s in POSITION_SCHEMES.items() if not s.per_layer] == ["ape"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid: none, ape"):
        ViT(image=(28, 28), patch=(4, 4), channels=1, classes=10, position="sinusoidal")
    with pytest.raises(ValueError, match="whole number"):
        ViT(image=(28, 28), patch=(5, 5), channels=1, classes=10, position="none")
    with pytest.raises(ValueError, match="divisible by 4"):
        ViT(image=(28, 28), patch=(4, 4), channels=1, classes=10, position="rope-axial", dim=36, heads=6)
    with pytest.raises(ValueError, match="degree"):
        ViT(image=(28, 28), patch=(4, 4), channels=1, classes=10, position="rpe-manhattan", manhattan_degree=0)


def test_attention_rollout_is_row_stochastic_and_matches_a_hand_product():
    from lib.vit import attention_rollout

    torch.manual_seed(0)
    layers = [torch.softmax(torch.randn(2, 3, 5, 5), dim=-1) for _ in range(3)]
    joint = attention_rollout(layers)
    assert joint.shape == (2, 5, 5)
    torch.testing.assert_close(joint.sum(-1), torch.ones(2, 5))
    mixed = [0.5 * a.mean(1) + 0.5 * torch.eye(5) for a in layers]  # rows already sum to 1
    torch.testing.assert_close(joint, mixed[2] @ mixed[1] @ mixed[0])
    # with identity attention everywhere the rollout is the identity: each token only sees itself
    torch.testing.assert_close(attention_rollout([torch.eye(5).expand(1, 2, 5, 5)] * 2), torch.eye(5).expand(1, 5, 5))


@pytest.mark.parametrize("angles_shape", [(5, 4), (3, 5, 4)])
def test_complex_rotation_agrees_with_the_reference_pairs(angles_shape):
    from lib.positions import rotate_pairs_complex

    x = torch.randn(2, 3, 5, 8, generator=GEN(5))
    angles = 3 * torch.randn(angles_shape, generator=GEN(6))
    torch.testing.assert_close(rotate_pairs_complex(x, angles), rotate_pairs(x, angles))
    strided = torch.randn(2, 5, 3, 8, generator=GEN(7)).transpose(1, 2)  # non-contiguous, like q from to_qkv
    torch.testing.assert_close(rotate_pairs_complex(strided, angles), rotate_pairs(strided, angles))
    assert rotate_pairs_complex(x.bfloat16(), angles).dtype == torch.bfloat16


@pytest.mark.parametrize("position", POSITION_SCHEMES)
def test_no_weight_decay_names_the_cls_token_and_every_position_parameter(position):
    model = ViT(image=(28, 28), patch=(7, 7), channels=1, classes=10, position=position, dim=32, depth=2, heads=4,
                seed=0)
    names = model.no_weight_decay()
    parameters = dict(model.named_parameters())
    assert names <= set(parameters) and "cls_token" in names
    expected = {"none": 0, "ape": 1, "rpe-1d": 2, "rpe-manhattan": 2, "rope-axial": 0, "rope-mixed": 2}[position]
    assert len(names - {"cls_token"}) == expected  # APE: one table; per-layer schemes: one tensor per layer
    assert all(".position." in n or n.startswith("absolute.") for n in names - {"cls_token"})
