import pytest

from lib.config import ConfigError

from lib.recall.experiment import DEFAULTS, converged, model_label, profile_settings, train_recall


def test_convergence_rule_needs_patience_consecutive_hits():
    assert not converged({"test_accuracy": [1.0, 1.0]}, 0.99, 3)
    assert not converged({"test_accuracy": [1.0, 0.5, 1.0, 1.0]}, 0.99, 3)
    assert converged({"test_accuracy": [0.2, 0.995, 1.0, 0.99]}, 0.99, 3)


def test_train_recall_record_and_early_stop():
    settings = {k: v for k, v in profile_settings("smoke").items() if k != "seeds"}
    record = train_recall({**settings, "kind": "transformer", "position": "rope", "max_steps": 12})
    assert record["lengths"] == list(range(DEFAULTS["tau"] + 2, 3 * settings["L"] + 1))
    assert len(record["length_accuracy"]) == len(record["lengths"])
    assert all(0 <= a <= 1 for a in record["length_accuracy"])
    assert record["steps_run"] == 12 and record["backend"] == "torch"
    # a target of 0 is met at once: training stops after `patience` evaluations
    easy = train_recall({**settings, "kind": "transformer", "target": 0.0, "patience": 2, "max_steps": 100})
    assert easy["converged"] and easy["stopped_early"] and easy["steps_run"] == 2 * settings["eval_every"]


def test_train_recall_is_deterministic_and_rejects_unknown_keys():
    settings = {k: v for k, v in profile_settings("smoke").items() if k != "seeds"}
    a = train_recall({**settings, "kind": "hybrid", "max_steps": 4})
    b = train_recall({**settings, "kind": "hybrid", "max_steps": 4})
    assert a["history"] == b["history"] and a["length_accuracy"] == b["length_accuracy"]
    with pytest.raises(ConfigError, match="unknown key.*learning_rate.*valid keys"):
        train_recall({"kind": "mamba", "learning_rate": 1e-3})


def test_model_labels():
    assert model_label("transformer", "rope") == "Transformer (RoPE)"
    assert model_label("mamba") == "Mamba" and model_label("hybrid") == "Hybrid"
