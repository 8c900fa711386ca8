import pytest
import torch
from torch.utils.data import TensorDataset

from lib.classify import ClassifierConfig, build_vit, normalise_images, on_canvas, train_classifier
from lib.config import ConfigError, normalise


def digits(n: int = 3) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    images = normalise_images(torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8), "mnist")
    return TensorDataset(images, torch.arange(n))


def test_on_canvas_keeps_the_image_at_the_origin_or_centres_it():
    data = digits()
    torch.testing.assert_close(on_canvas(data, 36, "corner").tensors[0][..., :28, :28], data.tensors[0])
    torch.testing.assert_close(on_canvas(data, 36, "centre").tensors[0][..., 4:32, 4:32], data.tensors[0])
    black = normalise_images(torch.zeros(1, 1, 1, 1, dtype=torch.uint8), "mnist").item()
    canvas = on_canvas(data, 36, "corner").tensors[0]
    assert (canvas[..., 28:, :] == black).all() and (canvas[..., :, 28:] == black).all()
    with pytest.raises(ValueError):
        on_canvas(data, 35, "centre")
    with pytest.raises(ValueError):
        on_canvas(data, 36, "middle")


def test_config_is_normalised_so_two_spellings_are_one_experiment():
    a = normalise(ClassifierConfig, {"dataset": "mnist", "position": "ape", "lr": 2e-3})
    b = normalise(ClassifierConfig, {"position": "ape", "patch": (4, 4), "lr": 0.002, "epochs": 8})
    assert a == b and a["patch"] == [4, 4] and isinstance(a["weight_decay"], float)
    assert set(a) == {f for f in ClassifierConfig.__dataclass_fields__}


@pytest.mark.parametrize("bad, message", [
    ({"learning_rate": 1e-3}, "unknown key.*learning_rate.*valid keys"),
    ({"position": "sinusoidal"}, "position='sinusoidal'.*one of"),
    ({"patch": [5, 5]}, "patch=.*divisor of the 28x28"),
    ({"dim": 36, "heads": 6, "position": "rope-axial"}, "divisible by 4"),
    ({"epochs": 0}, "epochs=0.*>= 1"),
    ({"epochs": "8"}, "epochs='8'.*must be an integer"),
    ({"train_fraction": 0}, "train_fraction=0.*\\(0, 1\\]"),
    ({"eval_sizes": [35]}, "eval_sizes"),
    ({"dataset": "imagenet"}, "dataset='imagenet'.*one of 'mnist', 'cifar10'"),
])
def test_bad_configs_fail_before_any_work(bad, message):
    with pytest.raises(ConfigError, match=message):
        train_classifier(bad)  # fails in validation: no data is loaded, nothing trains


def test_build_vit_is_deterministic_in_the_seed():
    a, b = build_vit({"position": "rope-mixed", "seed": 3}), build_vit({"position": "rope-mixed", "seed": 3})
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_new_fields_default_to_the_old_recipe():
    defaults = normalise(ClassifierConfig, {})
    assert defaults["val_fraction"] == 0.0 and defaults["decay_exempt"] is False
    assert defaults["precision"] == "fp32" and defaults["compile"] is False


@pytest.fixture
def tiny_mnist(tmp_path, monkeypatch):
    """A fake MNIST mirror of 20 images per class and split (see tests/test_data.py)."""
    import lib.data as data
    from tests.test_data import make_mirror

    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(data.MIRROR_ENV, str(make_mirror(tmp_path / "mirror", per_class=20)))


def test_validation_split_is_balanced_disjoint_and_the_same_for_every_seed(tiny_mnist):
    from lib.classify import load_split

    train = load_split("mnist", "train", val_fraction=0.2)
    val = load_split("mnist", "val", val_fraction=0.2)
    assert len(train) == 160 and len(val) == 40
    assert torch.bincount(val.tensors[1]).tolist() == [4] * 10
    rows = lambda images: sorted(tuple(x.flatten().tolist()) for x in images)
    everything = load_split("mnist", "train").tensors[0]
    assert rows(torch.cat([train.tensors[0], val.tensors[0]])) == rows(everything)  # a partition of the set
    again = load_split("mnist", "val", fraction=1.0, seed=7, val_fraction=0.2)
    assert torch.equal(again.tensors[0], val.tensors[0])
    with pytest.raises(ValueError, match="val_fraction"):
        load_split("mnist", "val")


def test_training_with_a_validation_split_selects_on_it(tiny_mnist):
    config = dict(dataset="mnist", val_fraction=0.2, epochs=3, batch_size=16, dim=16, depth=1, heads=2, mlp_dim=16,
                  decay_exempt=True, precision="auto")
    result = train_classifier(config)
    history = result["history"]
    assert set(history) == {"step", "train_loss", "train_accuracy", "val_accuracy"} and len(history["step"]) == 3
    assert result["val_accuracy"] == max(history["val_accuracy"])
    assert history["val_accuracy"][result["selected_epoch"] - 1] == result["val_accuracy"]
    assert result["precision"] in ("fp32", "bf16") and result["train_images"] == 160


def test_train_classifier_trains_a_caller_supplied_model_with_the_recipe(monkeypatch):
    import lib.classify as classify

    def fake_split(name, split, fraction=1.0, seed=0, val_fraction=0.0):
        n = 64 if split == "train" else 16
        gen = torch.Generator().manual_seed({"train": 0, "val": 1, "test": 2}[split])
        return TensorDataset(torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen))

    monkeypatch.setattr(classify, "load_split", fake_split)
    monkeypatch.setattr(classify, "load_test", lambda config: fake_split("mnist", "test"))
    config = {"epochs": 2, "batch_size": 16, "warmup_epochs": 1, "val_fraction": 0.1, "patch": [7, 7]}
    mine = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    before = mine[1].weight.detach().clone()
    result, trained = train_classifier(config, return_model=True, model=mine)
    assert trained is mine and not torch.equal(before, mine[1].weight)
    assert result["parameters"] == 28 * 28 * 10 + 10 and "val_accuracy" in result
    _, default = train_classifier(config, return_model=True)  # without it, the configured ViT
    assert type(default).__name__ == "ViT"


def test_a_killed_classifier_run_resumes_from_its_checkpoint(tiny_mnist, tmp_path, monkeypatch):
    import lib.classify as classify
    from lib.checkpoint import checkpoint_scope

    config = dict(dataset="mnist", val_fraction=0.2, epochs=3, batch_size=16, dim=16, depth=1, heads=2, mlp_dim=16,
                  decay_exempt=True, precision="fp32")
    straight = train_classifier(config)  # outside a store: no checkpoint

    class Killed(Exception):
        pass

    real_fit = classify.fit

    def killed_at_epoch_2(*args, **kwargs):  # saves at every evaluation, dies at the second
        evaluate, calls = kwargs["evaluate"], []

        def dying(m):
            calls.append(1)
            if len(calls) == 2:
                raise Killed
            return evaluate(m)

        return real_fit(*args, **{**kwargs, "evaluate": dying, "checkpoint_seconds": 1e-9})

    directory = tmp_path / "checkpoints"
    monkeypatch.setattr(classify, "fit", killed_at_epoch_2)
    with checkpoint_scope(directory, record="exp-1234"), pytest.raises(Killed):
        train_classifier(config)
    assert [p.name for p in directory.glob("*.pt")] == ["exp-1234.pt"]  # epoch 1's state
    monkeypatch.setattr(classify, "fit", real_fit)
    with checkpoint_scope(directory, record="exp-1234") as scope:
        resumed = train_classifier(config)
    assert scope["resumed"]["resumed_from_step"] == straight["history"]["step"][0]
    assert resumed["history"] == straight["history"]
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    assert resumed["val_accuracy"] == straight["val_accuracy"]
    assert resumed["train_cpu_seconds"] > scope["resumed"]["cpu_seconds"] > 0  # both segments counted
    assert scope["discard"] == [directory / "exp-1234.pt"]  # for the store to delete after writing


def test_the_store_deletes_a_record_checkpoint_only_after_writing_the_record(tmp_path):
    from lib.checkpoint import record_checkpoint
    from lib.store import ResultsStore

    store = ResultsStore("cpu", root=tmp_path)
    seen = {}

    def experiment(config):
        path = record_checkpoint()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"state")
        seen["path"], seen["stored_before"] = path, any((tmp_path / "cpu" / "exp").glob("*.json"))
        return {"n": config["n"]}

    record = store.load_or_run("exp", {"n": 3}, experiment)
    assert seen["path"].name == store.path("exp", {"n": 3}).stem + ".pt"  # named after the record
    assert not seen["stored_before"] and record == {"n": 3} and store.path("exp", {"n": 3}).exists()
    assert not seen["path"].exists()  # deleted once the record was written
    assert record_checkpoint() is None  # outside the store's scope


def test_every_committed_classifier_record_is_found_under_its_normalised_config():
    """The store hashes train_classifier's configurations through ClassifierConfig; a record
    filed under another hash would be recomputed instead of read."""
    import json
    from pathlib import Path

    from lib.config import config_class_of
    from lib.store import config_hash, normalised

    assert config_class_of(train_classifier) is ClassifierConfig
    files = sorted((Path(__file__).resolve().parents[1] / "results/cpu/vit-positions").glob("vit-positions-*.json"))
    assert files
    for path in files:
        config = json.loads(path.read_text())["config"]
        assert path.stem == "vit-positions-" + config_hash(normalised(config, train_classifier)), path
