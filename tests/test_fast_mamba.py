"""The fast CPU Mamba blocks compute mambapy's MambaBlock: the same parameters, and the
same outputs and gradients (input and every parameter) to float32 tolerance.
FastMambaBlock is the PyTorch scan with a hand-written backward; CMambaBlock the C kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mambapy.mamba import MambaBlock, MambaConfig

from lib.recall import fast_mamba_c
from lib.recall.fast_mamba import FastMambaBlock, SelectiveScan
from lib.recall.fast_mamba_c import CMambaBlock
from lib.recall.models import RecallModel, mamba_state_floats
from lib.recall.task import embedding_matrix, sample_recall
from lib.seeding import seeded

IMPLS = [FastMambaBlock, pytest.param(CMambaBlock, marks=pytest.mark.skipif(
    not fast_mamba_c.available(), reason="no C compiler"))]


def perturbed_pair(width: int, impl: type, seed: int = 0) -> tuple[MambaBlock, MambaBlock]:
    """mambapy's block and ``impl`` from the same seed, then given the same random
    perturbation (so that A, D, the convolution and the biases leave their initial values)."""
    blocks = []
    for cls in (MambaBlock, impl):
        with seeded(seed):
            blocks.append(cls(MambaConfig(d_model=width, n_layers=1)))
    ref, fast = blocks
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p, q in zip(ref.parameters(), fast.parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
            q.copy_(p)
    return ref, fast


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Float32 agreement relative to the tensor's scale (the scans sum in different orders)."""
    scale = expected.abs().max().item() + 1e-30
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=2e-5 * scale, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("impl", IMPLS)
def test_same_parameters_and_initialisation(impl: type) -> None:
    with seeded(3):
        ref = MambaBlock(MambaConfig(d_model=64, n_layers=1))
    with seeded(3):
        fast = impl(MambaConfig(d_model=64, n_layers=1))
    assert list(ref.state_dict()) == list(fast.state_dict())
    for key, value in ref.state_dict().items():
        assert torch.equal(value, fast.state_dict()[key]), key


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("width, length, batch", [(8, 1, 3), (8, 32, 16), (64, 5, 2), (64, 45, 8), (64, 96, 4)])
def test_outputs_and_gradients_match_mambapy(width: int, length: int, batch: int, impl: type) -> None:
    ref, fast = perturbed_pair(width, impl, seed=length)
    gen = torch.Generator().manual_seed(width * 1000 + length)
    x = torch.randn(batch, length, width, generator=gen)
    weight = torch.randn(batch, length, width, generator=gen)  # loss = sum(weight * y)
    grads = []
    for block in (ref, fast):
        xi = x.clone().requires_grad_()
        y = block(xi)
        (weight * y).sum().backward()
        grads.append((y.detach(), xi.grad, {k: p.grad for k, p in block.named_parameters()}))
    (y_ref, dx_ref, dp_ref), (y_fast, dx_fast, dp_fast) = grads
    assert_close(y_fast, y_ref, "output")
    assert_close(dx_fast, dx_ref, "d input")
    assert dp_ref.keys() == dp_fast.keys()
    for key in dp_ref:
        assert_close(dp_fast[key], dp_ref[key], f"d {key}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("width, length", [(8, 7), (64, 96), (64, 256)])
def test_evaluation_without_gradients_matches_both_mambapy_scans(width: int, length: int, impl: type) -> None:
    ref, fast = perturbed_pair(width, impl, seed=length + 7)
    x = torch.randn(4, length, width, generator=torch.Generator().manual_seed(length))
    with torch.no_grad():
        ref.config.pscan = False  # the loop the book evaluates with ...
        y_seq = ref(x)
        ref.config.pscan = True  # ... and the parallel scan it trains with
        y_par = ref(x)
        y_fast = fast(x)
    assert_close(y_fast, y_seq, "no_grad output vs sequential")
    assert_close(y_fast, y_par, "no_grad output vs pscan")


def test_hand_written_backward_against_finite_differences() -> None:
    gen = torch.Generator().manual_seed(0)
    b, L, e, n = 2, 6, 3, 4
    delta = (0.5 * torch.rand(b, L, e, generator=gen, dtype=torch.float64) + 0.05).requires_grad_()
    A = (-torch.rand(e, n, generator=gen, dtype=torch.float64) * 3 - 0.1).requires_grad_()
    u, Bm, C = (torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()
                for shape in ((b, L, e), (b, L, n), (b, L, n)))
    assert torch.autograd.gradcheck(SelectiveScan.apply, (delta, A, u, Bm, C))


@pytest.mark.parametrize("width", [8, 64])
def test_recall_model_with_the_fast_scan_is_the_same_model(width: int) -> None:
    tokens, labels, _ = sample_recall(16, 40, 16, 4, 1, np.random.default_rng(0))
    models = []
    for fast in (False, True):
        with seeded(3):
            models.append(RecallModel(embedding_matrix(16, 8), "mamba", width=width, fast_scan=fast))
    ref, fast = models
    assert fast.layers[0].backend in ("fast-c", "fast-torch") and ref.layers[0].backend == "mambapy"
    for (key, p), q in zip(ref.named_parameters(), fast.parameters()):
        assert torch.equal(p, q), f"same seed, same parameters: {key}"
    losses = [torch.nn.functional.cross_entropy(m(tokens), labels) for m in (ref, fast)]
    for loss in losses:
        loss.backward()
    assert_close(losses[1].detach(), losses[0].detach(), "loss")
    for (key, p), q in zip(ref.named_parameters(), fast.parameters()):
        assert_close(q.grad, p.grad, f"d {key}")
    assert mamba_state_floats(fast) == mamba_state_floats(ref)
