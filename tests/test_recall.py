import numpy as np
import pytest
import torch

from lib.recall.task import embedding_matrix, evaluation_lengths, sample_recall


@pytest.mark.parametrize("K, M, L, tau", [(16, 1, 32, 1), (16, 16, 32, 5), (16, 8, 7, 5), (16, 4, 3, 1)])
def test_every_rule_of_the_recipe(K, M, L, tau):
    tokens, labels, i = sample_recall(5000, L, K, M, tau, np.random.default_rng(0))
    assert tokens.shape == (5000, L) and tokens.min() >= 0 and tokens.max() < K
    q = tokens[:, -1]
    assert (q < M).all(), "the query is one of the first M tokens"
    rows = torch.arange(len(tokens))
    assert torch.equal(tokens[rows, i], q), "q at position i"
    assert torch.equal(tokens[rows, i + tau], labels), "v at i + tau, and it is the label"
    assert (i >= 0).all() and (i + tau <= L - 2).all(), "v never overwrites the final q"
    is_q = tokens == q[:, None]
    is_q[rows, i + tau] = False  # the value slot may hold q when v == q
    assert (is_q.sum(1) == 2).all(), "q appears exactly twice besides the value slot: no stray q"
    # value independent of query, uniform over [K]; positions i cover their whole range
    assert set(labels.tolist()) == set(range(K))
    assert set(i.tolist()) == set(range(L - tau - 1))


def test_embedding_is_the_prescribed_seeded_draw():
    E = embedding_matrix(16, 8)
    state = np.random.get_state()
    try:
        np.random.seed(0)
        expected = np.random.randn(16, 8)
    finally:
        np.random.set_state(state)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(E.numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(E.norm(dim=1), torch.ones(16))
    assert torch.equal(embedding_matrix(16, 8), E), "deterministic"


def test_evaluation_lengths_and_bad_arguments():
    assert evaluation_lengths(32, 1)[0] == 3 and evaluation_lengths(32, 5)[0] == 7 and evaluation_lengths(32, 1)[-1] == 96
    with pytest.raises(ValueError):
        sample_recall(2, 3, 16, 1, 5, np.random.default_rng(0))
    with pytest.raises(ValueError):
        sample_recall(2, 10, 16, 17, 1, np.random.default_rng(0))
