import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lib.train import accuracy, fit, lr_factor, seeded


def blobs(n=512, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    return TensorDataset(centers[y] + 0.5 * torch.randn(n, 2, generator=gen), y)


def make_model(seed):
    with seeded(seed):
        return nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 3))


def train(seed, steps=60):
    train_set, test_set = blobs(seed=0), blobs(seed=1)
    model = make_model(seed)
    record = fit(model, train_set, steps=steps, seed=seed, batch_size=32, lr=3e-2, warmup_steps=5,
                 evaluate=lambda m: {"test_accuracy": accuracy(m, test_set)}, eval_every=20, device="cpu")
    return model, record


def test_fit_is_deterministic_under_a_seed():
    m1, r1 = train(seed=7)
    m2, r2 = train(seed=7)
    assert r1["history"] == r2["history"]
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    _, r3 = train(seed=8)
    assert r3["history"]["train_loss"] != r1["history"]["train_loss"]


def test_fit_learns_and_records_history():
    _, record = train(seed=0, steps=100)
    hist = record["history"]
    assert hist["step"] == [20, 40, 60, 80, 100]
    assert len(hist["train_loss"]) == len(hist["test_accuracy"]) == 5
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert record["final"]["test_accuracy"] > 0.95
    assert record["steps_per_second"] > 0 and record["device"] == "cpu"


def test_fit_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(seed=0, steps=5)
    assert torch.equal(torch.rand(3), expected)


def test_fit_accepts_a_batch_function():
    def batch(gen):
        x = torch.randn(16, 2, generator=gen)
        return x, (x[:, 0] > 0).long()

    model = make_model(0)
    record = fit(model, batch, steps=50, seed=0, lr=3e-2, device="cpu", eval_every=25)
    assert record["history"]["step"] == [25, 50]


def test_schedule_and_bad_arguments():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "constant") == 1.0
    assert math.isclose(lr_factor(100, 100, 0, "cosine"), 0.0, abs_tol=1e-12)
    with pytest.raises(ValueError, match="schedule"):
        fit(make_model(0), blobs(), steps=1, seed=0, schedule="linear")


def test_stop_when_ends_training_at_the_first_evaluation_that_satisfies_it():
    train_set, test_set = blobs(seed=0), blobs(seed=1)
    record = fit(make_model(0), train_set, steps=400, seed=0, batch_size=32, lr=3e-2, schedule="constant",
                 evaluate=lambda m: {"test_accuracy": accuracy(m, test_set)}, eval_every=10, device="cpu",
                 stop_when=lambda h: h["test_accuracy"][-1] > 0.95)
    hist = record["history"]
    assert record["stopped_early"] and record["steps_run"] == hist["step"][-1] < 400
    assert hist["test_accuracy"][-1] > 0.95 and all(a <= 0.95 for a in hist["test_accuracy"][:-1])
    never = fit(make_model(0), train_set, steps=30, seed=0, eval_every=10, device="cpu", stop_when=lambda h: False)
    assert not never["stopped_early"] and never["steps_run"] == 30


def test_a_nan_loss_stops_training_at_the_next_evaluation():
    steps = []

    def nan_loss(out, y):
        steps.append(1)
        return out.sum() * float("nan")

    with pytest.raises(FloatingPointError, match=r"loss is nan at step 5.*lr=0\.001"):
        fit(make_model(0), blobs(), steps=100, seed=0, batch_size=8, eval_every=5, loss_fn=nan_loss, device="cpu")
    assert len(steps) == 5, "training stops at the first evaluation after the loss became NaN"


@pytest.mark.parametrize("argument, value, message", [
    ("batch_size", 0, "batch_size=0 is not allowed"), ("eval_every", 0, "eval_every=0 is not allowed"),
    ("clip_grad_norm", 0.0, "clip_grad_norm=0.0 is not allowed"), ("seed", -1, "seed=-1 is not allowed"),
    ("weight_decay", -0.1, "weight_decay=-0.1 is not allowed"),
])
def test_fit_checks_its_arguments_before_training(argument, value, message):
    model = make_model(0)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        fit(model, blobs(), steps=10, **{"seed": 0, "batch_size": 8, "device": "cpu", argument: value})
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "nothing was trained"
