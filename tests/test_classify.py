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
