import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import lib.train as train_module
from lib.train import accuracy, fit, lr_factor, parameter_groups, resolve_precision, seeded


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


class Tagged(nn.Module):
    """A model with a listed position table, a bias, a norm and a weight matrix."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.table = nn.Parameter(torch.ones(5, 3))  # 2-D, but listed: exempt

    def no_weight_decay(self):
        return {"table"}

    def forward(self, x):
        return self.norm(self.linear(x)) + self.table.sum(0)


def test_parameter_groups_exempt_vectors_and_listed_parameters():
    model = Tagged()
    decayed, exempt = parameter_groups(model, 0.1)
    assert decayed["params"] == [model.linear.weight] and decayed["weight_decay"] == 0.1
    assert {id(p) for p in exempt["params"]} == {id(model.linear.bias), id(model.norm.weight), id(model.norm.bias),
                                                 id(model.table)}
    assert exempt["weight_decay"] == 0.0
    (everything,) = parameter_groups(model, 0.1, decay_exempt=False)
    assert len(everything["params"]) == 5
    model.no_weight_decay = lambda: {"tabel"}
    with pytest.raises(ValueError, match="tabel"):
        parameter_groups(model, 0.1)


def test_exempt_parameters_are_not_shrunk_by_adamw():
    model = Tagged()
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.5), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only weight decay can move a parameter
    optimizer.step()
    after = dict(model.named_parameters())
    torch.testing.assert_close(after["linear.weight"], before["linear.weight"] * (1 - 0.1 * 0.5))
    for name in ("table", "linear.bias", "norm.weight", "norm.bias"):
        assert torch.equal(after[name], before[name]), name


def test_precision_switch_measures_instead_of_assuming(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", cpu)
    for bf16_rate, expected in [(10.0, "bf16"), (1.1, "fp32")]:
        monkeypatch.setattr(train_module, "_PRECISION_CACHE", {})
        rate = lambda dtype, r=bf16_rate: r if dtype == torch.bfloat16 else 1.0
        monkeypatch.setattr(train_module, "matmul_rate", rate)
        assert resolve_precision("auto", cpu) == expected


def test_bf16_training_runs_and_says_so():
    train_set = blobs(seed=0)
    record = fit(make_model(0), train_set, steps=20, seed=0, batch_size=32, lr=3e-2, precision="bf16", device="cpu",
                 eval_every=10)
    assert record["precision"] == "bf16" and all(math.isfinite(v) for v in record["history"]["train_loss"])


def test_select_ends_with_the_weights_of_the_best_evaluation():
    model, scores, snapshots = make_model(0), iter([0.2, 0.9, 0.5]), []

    def evaluate(m):
        snapshots.append([p.detach().clone() for p in m.parameters()])
        return {"score": next(scores)}

    record = fit(model, blobs(), steps=30, seed=0, batch_size=32, lr=3e-2, evaluate=evaluate, eval_every=10,
                 select="score", device="cpu")
    assert record["selected_step"] == 20 and record["final"]["score"] == 0.5  # final: the last evaluation
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), snapshots[1]))
    with pytest.raises(ValueError, match="never returned"):
        fit(make_model(0), blobs(), steps=5, seed=0, select="missing", evaluate=lambda m: {}, device="cpu")


def noisy_stream(seed=0):
    """A batch function drawing from a numpy generator outside fit (as the recall task does),
    with its state for fit's ``caller_state``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])

    def batch(gen):
        y = torch.from_numpy(rng.integers(0, 3, 32))
        return centers[y] + torch.from_numpy(rng.normal(size=(32, 2))).float() * 0.5, y

    def get():
        return rng.bit_generator.state

    def set_(state):
        rng.bit_generator.state = state

    return batch, (get, set_)


class Killed(Exception):
    pass


def run_stream(steps, checkpoint=None, kill_at=None):
    batch, state = noisy_stream()
    model = make_model(0)

    def evaluate(m):
        if kill_at is not None and (len(seen) + 1) * 10 == kill_at:  # evaluating step kill_at
            raise Killed
        seen.append(1)
        return {"w": float(m[0].weight.sum())}

    seen = []
    record = fit(model, batch, steps=steps, seed=0, lr=3e-2, warmup_steps=5, schedule="constant",
                 evaluate=evaluate, eval_every=10, device="cpu", checkpoint=checkpoint,
                 checkpoint_seconds=1e-9, caller_state=state)
    return model, record


def test_a_killed_run_resumes_where_it_stopped_and_computes_the_same_steps(tmp_path):
    straight_model, straight = run_stream(60)
    path = tmp_path / "run.pt"
    with pytest.raises(Killed):
        run_stream(60, path, kill_at=40)  # killed at the evaluation of step 40: last save at step 30
    assert path.exists()
    model, record = run_stream(60, path)
    assert record["resumed_from_step"] == 30 and straight["resumed_from_step"] is None
    assert record["history"] == straight["history"] and record["steps_run"] == 60
    for a, b in zip(model.state_dict().values(), straight_model.state_dict().values()):
        assert torch.equal(a, b)
    # a longer run continues a finished shorter one (constant schedule) instead of repeating it
    other = tmp_path / "short.pt"
    run_stream(30, other)
    longer_model, longer = run_stream(60, other)
    assert longer["resumed_from_step"] == 30 and longer["history"] == straight["history"]
    assert all(torch.equal(a, b) for a, b in zip(longer_model.state_dict().values(),
                                                  straight_model.state_dict().values()))


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    run_stream(20, path)
    batch, state = noisy_stream()
    with pytest.raises(ValueError, match=r"belongs to another run \(lr: saved 0.03, now 0.01\)"):
        fit(make_model(0), batch, steps=40, seed=0, lr=1e-2, warmup_steps=5, schedule="constant",
            eval_every=10, device="cpu", checkpoint=path, caller_state=state)
    with pytest.raises(ValueError, match="step 20 > steps=10"):
        fit(make_model(0), batch, steps=10, seed=0, lr=3e-2, warmup_steps=5, schedule="constant",
            eval_every=10, device="cpu", checkpoint=path, caller_state=state)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="does not load.*delete it"):
        run_stream(20, path)
    with pytest.raises(ValueError, match="checkpoint.*a Dataset"):
        fit(make_model(0), blobs(), steps=10, seed=0, device="cpu", checkpoint=tmp_path / "x.pt")


def test_an_early_stop_removes_the_checkpoint(tmp_path):
    batch, state = noisy_stream()
    path = tmp_path / "run.pt"
    record = fit(make_model(0), batch, steps=100, seed=0, lr=3e-2, schedule="constant", eval_every=10,
                 device="cpu", evaluate=lambda m: {"x": 1.0}, stop_when=lambda h: len(h["step"]) >= 3,
                 checkpoint=path, checkpoint_seconds=1e-9, caller_state=state)
    assert record["stopped_early"] and record["steps_run"] == 30 and not path.exists()
