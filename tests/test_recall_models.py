import numpy as np
import pytest
import torch

from lib.recall.task import embedding_matrix, sample_recall
from lib.recall.models import RecallModel, mamba_backend, rope_1d, set_mamba_scan
from lib.train import seeded

SPECS = [("transformer", "learned"), ("transformer", "rope"), ("transformer", "none"), ("mamba", "none"), ("hybrid", "none")]


@pytest.mark.parametrize("kind, position", SPECS)
def test_models_run_forward_and_backward_at_every_length(kind, position):
    with seeded(0):
        model = RecallModel(embedding_matrix(16, 8), kind, position, width=32, max_len=96)
    for L in (3, 32, 96):
        tokens, labels, _ = sample_recall(4, L, 16, 1, 1, np.random.default_rng(L))
        logits = model(tokens)
        assert logits.shape == (4, 16)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_causality_the_prediction_ignores_nothing_before_and_sees_no_future():
    # the last position's output may depend on every earlier token; changing an earlier token changes it
    with seeded(0):
        model = RecallModel(embedding_matrix(16, 8), "transformer", "rope", width=32)
    tokens, _, _ = sample_recall(2, 20, 16, 1, 1, np.random.default_rng(0))
    changed = tokens.clone()
    changed[:, 3] = (changed[:, 3] + 1) % 16
    assert not torch.allclose(model(tokens), model(changed))


def test_rope_1d_keeps_norms_and_is_relative():
    x = torch.randn(1, 1, 10, 8)
    torch.testing.assert_close(rope_1d(x).norm(dim=-1), x.norm(dim=-1))
    q, k = torch.randn(8), torch.randn(8)
    seq_q, seq_k = q.expand(1, 1, 10, 8), k.expand(1, 1, 10, 8)
    rq, rk = rope_1d(seq_q)[0, 0], rope_1d(seq_k)[0, 0]
    torch.testing.assert_close(rq[2] @ rk[5], rq[4] @ rk[7], atol=1e-5, rtol=1e-5)


def test_backend_choice_and_bad_arguments():
    assert mamba_backend() in ("mamba_ssm", "mambapy")
    if not torch.cuda.is_available():
        assert mamba_backend() == "mambapy"
    with pytest.raises(ValueError):
        RecallModel(embedding_matrix(16, 8), "mamba", "rope")
    with pytest.raises(ValueError):
        RecallModel(embedding_matrix(16, 8), "lstm")
    model = RecallModel(embedding_matrix(16, 8), "transformer", "learned", max_len=10)
    with pytest.raises(ValueError, match="position table"):
        model(torch.zeros(1, 11, dtype=torch.long))


def test_parallel_and_sequential_mamba_scans_agree():
    with seeded(0):
        model = RecallModel(embedding_matrix(16, 8), "hybrid", width=32)
    if mamba_backend() != "mambapy":
        pytest.skip("the scan switch is mambapy's")
    tokens, _, _ = sample_recall(3, 45, 16, 4, 1, np.random.default_rng(0))  # 45: pscan pads to 64
    parallel = set_mamba_scan(model, True)(tokens)
    sequential = set_mamba_scan(model, False)(tokens)
    torch.testing.assert_close(parallel, sequential, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(parallel, torch.zeros_like(parallel))
