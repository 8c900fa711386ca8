"""The fast CPU Mamba block computes mambapy's function: outputs and gradients agree."""

import numpy as np
import pytest
import torch
from mambapy.mamba import MambaBlock, MambaConfig

from lib.recall.fast_mamba import FastMambaBlock, causal_conv, selective_scan
from lib.recall.models import RecallModel, mamba_state_floats
from lib.recall.task import embedding_matrix, sample_recall
from lib.seeding import seeded


def twins(width: int, seed: int = 0):
    """mambapy's block and the fast one with the same parameters."""
    config = MambaConfig(d_model=width, n_layers=1)
    with seeded(seed):
        reference = MambaBlock(config)
    fast = FastMambaBlock(config)
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("width, length, pscan", [(8, 5, True), (16, 32, True), (64, 45, False), (64, 96, True)])
def test_outputs_and_gradients_match_mambapy(width, length, pscan):
    reference, fast = twins(width)
    reference.config.pscan = pscan
    x = torch.randn(3, length, width, generator=torch.Generator().manual_seed(1))
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = reference(xr), fast(xf)
    torch.testing.assert_close(yf, yr, atol=1e-5, rtol=1e-4)
    weights = torch.randn_like(yr)
    (yr * weights).sum().backward()
    (yf * weights).sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad, atol=1e-5, rtol=1e-4)
    for (name, pr), pf in zip(reference.named_parameters(), fast.parameters()):
        torch.testing.assert_close(pf.grad, pr.grad, atol=1e-4, rtol=1e-3, msg=lambda m: f"{name}: {m}")


def test_no_grad_path_matches_the_autograd_path():
    _, fast = twins(16)
    x = torch.randn(2, 20, 16)
    with torch.no_grad():
        a = fast(x)
    torch.testing.assert_close(a, fast(x).detach())


def test_scan_and_convolution_pieces_on_a_hand_example():
    # one channel, one state: h_t = exp(delta A) h_{t-1} + B u_t, y = C h
    delta, A = torch.full((1, 3, 1), 0.5), torch.tensor([[-2.0]])
    u, B, C = torch.tensor([[[1.0], [2.0], [3.0]]]), torch.ones(1, 3, 1), torch.full((1, 3, 1), 2.0)
    decay = float(np.exp(-1.0))
    h1, h2, h3 = 1.0, decay * 1.0 + 2.0, decay * (decay + 2.0) + 3.0
    torch.testing.assert_close(selective_scan(delta, A, u, B, C)[0, :, 0], 2 * torch.tensor([h1, h2, h3]))
    conv = torch.nn.Conv1d(4, 4, 3, groups=4, padding=2)
    x = torch.randn(2, 7, 4)
    expected = conv(x.transpose(1, 2))[:, :, :7].transpose(1, 2)
    torch.testing.assert_close(causal_conv(x, conv.weight, conv.bias), expected)


def test_recall_model_with_the_fast_scan_is_the_same_model():
    tokens, _, _ = sample_recall(4, 40, 16, 4, 1, np.random.default_rng(0))
    with seeded(3):
        reference = RecallModel(embedding_matrix(16, 8), "mamba")
    with seeded(3):
        fast = RecallModel(embedding_matrix(16, 8), "mamba", fast_scan=True)
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in reference.named_parameters()]
    for pf, pr in zip(fast.parameters(), reference.parameters()):
        assert torch.equal(pf, pr), "same seed, same parameters"
    torch.testing.assert_close(fast(tokens), reference(tokens), atol=1e-5, rtol=1e-4)
    assert mamba_state_floats(fast) == mamba_state_floats(reference)
