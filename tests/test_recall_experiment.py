import numpy as np
import pytest

from lib.config import ConfigError
from lib.recall.experiment import (DEFAULTS, build_model, converged, model_label, plateaued, profile_settings,
                                   recall_config, smoothed, stop_reason, train_recall)
from lib.recall.models import mamba_state_floats
from lib.recall.plan import LR_GRIDS, cap_ladder, chosen_lr, final_records, lr_scores, sweep_to_a_stop
from lib.store import ResultsStore

RULE = {k: DEFAULTS[k] for k in ("target", "patience", "plateau_min_steps", "plateau_window", "plateau_delta",
                                 "plateau_smooth")}


def history(accuracy, every=25, loss=1.0):
    steps = [every * (i + 1) for i in range(len(accuracy))]
    return {"step": steps, "val_accuracy": list(accuracy), "train_loss": [loss] * len(accuracy)}


def test_convergence_rule_needs_patience_consecutive_hits():
    assert not converged([1.0, 1.0], 0.99, 3)
    assert not converged([1.0, 0.5, 1.0, 1.0], 0.99, 3)
    assert converged([0.2, 0.995, 1.0, 0.99], 0.99, 3)


def test_a_run_that_converges_stops_as_converged():
    acc = list(np.linspace(0.06, 0.9, 60)) + [0.995, 0.999, 1.0]
    assert stop_reason(history(acc), RULE) == "converged"
    assert stop_reason(history(acc[:-1]), RULE) is None  # one evaluation short: go on


def test_a_flat_run_plateaus_only_after_the_minimum_steps():
    rng = np.random.default_rng(0)
    noisy = list(0.4 + rng.binomial(256, 0.3, size=400) / 256 * 0.1)  # flat, with validation noise
    assert stop_reason(history(noisy), RULE) == "plateau"  # 400 x 25 = 10,000 steps
    short = noisy[: RULE["plateau_min_steps"] // 25 - 1]
    assert stop_reason(history(short), RULE) is None, "never before plateau_min_steps"


def test_a_run_still_improving_at_the_cap_is_not_accepted():
    acc = list(np.linspace(0.1, 0.8, 400))  # +7 points per 1,000 steps, up to the end
    assert stop_reason(history(acc), RULE) is None
    assert stop_reason(history(acc), RULE, at_cap=True) == "cap"
    # a late jump after a long plateau is growth too: the rule must not call it a plateau
    jump = [0.3] * 300 + [0.3 + 0.004 * i for i in range(100)]
    assert not plateaued(history(jump)["step"], jump, RULE["plateau_min_steps"])


def test_divergence_and_smoothing():
    assert stop_reason(history([0.1, 0.1], loss=float("nan")), RULE) == "diverged"
    np.testing.assert_allclose(smoothed([0, 1, 2, 3], 2), [0, 0.5, 1.5, 2.5])


def test_train_recall_record_and_early_stop():
    settings = {k: v for k, v in profile_settings("smoke").items() if k != "seeds"}
    settings.update(fast_scan=False, plateau_min_steps=1000)
    record = train_recall({**settings, "kind": "transformer", "position": "rope", "max_steps": 12})
    L = settings["L"]
    assert record["lengths"] == list(range(DEFAULTS["tau"] + 2, 3 * L + 1)) + [4 * L, 5 * L, 6 * L, 8 * L]
    assert len(record["length_correct"]) == len(record["lengths"]) == len(record["length_query_answers"])
    assert all(0 <= k <= record["length_n"] for k in record["length_correct"])
    assert record["steps_run"] == 12 and record["backend"] == "torch" and record["stop_reason"] == "cap"
    assert set(record["history"]) >= {"step", "train_loss", "val_accuracy", "train_accuracy"}
    # a target of 0 is met at once: training stops after `patience` evaluations
    easy = train_recall({**settings, "kind": "transformer", "target": 0.0, "patience": 2, "max_steps": 100})
    assert easy["stop_reason"] == "converged" and easy["steps_run"] == 2 * settings["eval_every"]


def test_train_recall_is_deterministic_and_rejects_unknown_keys():
    settings = {k: v for k, v in profile_settings("smoke").items() if k != "seeds"}
    a = train_recall({**settings, "kind": "hybrid", "max_steps": 4})
    b = train_recall({**settings, "kind": "hybrid", "max_steps": 4})
    assert a["history"] == b["history"] and a["length_correct"] == b["length_correct"]
    assert a["backend"] in ("fast-c", "fast-torch")
    # a higher cap repeats the lower cap's steps and goes on (what raising a cap relies on)
    short, longer = (train_recall({**settings, "kind": "hybrid", "max_steps": n, "plateau_min_steps": 1000})
                     for n in (5, 10))
    assert short["history"]["step"] == [5] and longer["history"]["step"] == [5, 10]
    assert {k: v[:1] for k, v in longer["history"].items()} == short["history"]
    with pytest.raises(ConfigError, match="unknown key.*learning_rate.*valid keys"):
        train_recall({"kind": "mamba", "learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="fast_scan"):
        train_recall({"kind": "transformer", "fast_scan": True})


def test_width_following_d_changes_parameters_and_state():
    models = {d: build_model(recall_config("cpu", kind="mamba", d=d, width=d)) for d in (8, 64)}
    fixed = build_model(recall_config("cpu", kind="mamba", d=8, width=64))
    count = {d: sum(p.numel() for p in m.parameters()) for d, m in models.items()}
    assert count[8] < count[64] and count[8] < sum(p.numel() for p in fixed.parameters())
    # state: 2 layers x d_inner (2 x width) x 16 states, and 3 convolution inputs per channel
    assert mamba_state_floats(models[8]) == {"ssm": 2 * 16 * 16, "conv": 2 * 16 * 3}
    assert mamba_state_floats(models[64]) == mamba_state_floats(fixed) == {"ssm": 2 * 128 * 16, "conv": 2 * 128 * 3}
    transformer = build_model(recall_config("cpu", kind="transformer", position="rope"))
    assert mamba_state_floats(transformer) == {"ssm": 0, "conv": 0}


def test_learning_rate_choice():
    def run(lr, reason, steps, final=1.0):
        return {"config": {"lr": lr}, "result": {"stop_reason": reason, "steps_run": steps,
                                                   "final": {"val_accuracy": final}}}
    records = [run(1e-3, "converged", 3000), run(1e-3, "converged", 2000), run(3e-3, "converged", 900),
               run(3e-3, "plateau", 5000, 0.5), run(1e-2, "plateau", 5000, 0.3), run(1e-2, "plateau", 5000, 0.2)]
    assert chosen_lr(records) == 1e-3  # all seeds converged beats fewer steps
    assert lr_scores(records)[3e-3]["converged"] == 1
    assert all(list(g) == sorted(g) for g in LR_GRIDS.values())


def fake_run(config):
    """A stand-in for train_recall: stops at any cap below 100 steps, converges with more."""
    return {"stop_reason": "cap" if config["max_steps"] < 100 else "converged", "steps_run": config["max_steps"]}


def test_a_run_at_the_cap_is_run_again_with_a_higher_cap(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    low, high = (recall_config("cpu", kind="mamba", max_steps=m) for m in (40, 4))
    assert [c["max_steps"] for c in cap_ladder(low, "cpu")] == [40, 100, 250, 625]
    assert cap_ladder(low, "smoke") == [recall_config("smoke", **low)]  # never raised at smoke
    records = sweep_to_a_stop(store, [low, high], fake_run)
    assert [(r["config"]["max_steps"], r["result"]["stop_reason"]) for r in records] == [(100, "converged"),
                                                                                        (62, "cap")]
    assert len(store.records("recall")) == 6  # 40, 100; 4, 10, 25, 62: nothing beyond the ladder
    reader = ResultsStore("cpu", root=tmp_path, read_only=True)
    (tmp_path / "cpu" / "recall" / store.path("recall", low).name).unlink()  # the capped run removed:
    assert sweep_to_a_stop(reader, [low], fake_run) == records[:1]  # the raised one still stands for it
    assert final_records(reader, [recall_config("cpu", kind="hybrid")], fake_run) == []


def test_a_raised_cap_continues_the_capped_run_through_the_store(tmp_path):
    settings = {k: v for k, v in profile_settings("smoke").items() if k != "seeds"}
    low, high = ({**settings, "kind": "hybrid", "max_steps": n, "plateau_min_steps": 1000} for n in (5, 10))
    straight = train_recall(high)  # outside the store: no checkpoint
    store = ResultsStore("smoke", root=tmp_path)
    store.record("recall", low, train_recall)
    assert list((tmp_path / "smoke" / ".checkpoints").glob("recall-*.pt")), "a capped run keeps its state"
    raised = store.record("recall", high, train_recall)
    assert raised["provenance"]["resumed_from_step"] == 5 and raised["result"]["resumed_from_step"] == 5
    segments = raised["provenance"]["segments"]  # where each stretch of steps ran
    assert [(s["from_step"], s.get("to_step")) for s in segments] == [(0, 5), (5, None)]
    assert all(s["machine"] for s in segments)
    assert abs(sum(s["cpu_seconds"] for s in segments) - raised["provenance"]["cpu_seconds"]) < 0.01
    assert raised["result"]["history"] == straight["history"]
    assert raised["result"]["length_correct"] == straight["length_correct"]
    assert raised["provenance"]["cpu_seconds"] >= store.get("recall", low, train_recall)["provenance"]["cpu_seconds"]


def test_model_labels():
    assert model_label("transformer", "rope") == "Transformer (RoPE)"
    assert model_label("mamba") == "Mamba" and model_label("hybrid") == "Hybrid"
