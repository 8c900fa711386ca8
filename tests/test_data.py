import numpy as np
import pytest
import torch
from PIL import Image

import lib.data as data
from lib.data import DatasetNotFound, load_images


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)


def make_mirror(root, name="mnist", per_class=2):
    channels, h, w = data.SHAPES[name]
    rng = np.random.default_rng(0)
    for split in data.SPLITS:
        for label, cls in enumerate(data.CLASSES[name]):
            folder = root / name / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((h, w, channels), 20 * label, dtype=np.uint8)
                pixels[0, 0] = rng.integers(0, 256, channels)
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_offline_mirror_decodes_images_and_labels(tmp_path, monkeypatch, name):
    mirror = make_mirror(tmp_path / "mirror", name)
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    images, labels, source = load_images(name, "test")
    assert images.shape == (20, *data.SHAPES[name]) and images.dtype == torch.uint8
    assert labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert source.startswith("mirror")
    # PNG is lossless, so each image carries its class's grey level
    assert images[:, :, 1:, 1:].amax(dim=(1, 2, 3)).tolist() == [20 * c for c in labels.tolist()]


def test_second_load_comes_from_the_tensor_cache(tmp_path, monkeypatch):
    mirror = make_mirror(tmp_path / "mirror")
    first = load_images("mnist", "train", mirror=mirror)

    def no_decoding(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(data, "_from_mirror", no_decoding)
    second = load_images("mnist", "train", mirror=mirror)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def test_missing_mirror_folder_names_both_ways(tmp_path):
    with pytest.raises(DatasetNotFound) as err:
        load_images("cifar10", "train", mirror=tmp_path / "nowhere")
    message = str(err.value)
    assert "cifar10/train" in message and "torchvision downloads" in message and data.MIRROR_ENV in message


def test_wrong_class_folders_are_refused(tmp_path):
    mirror = make_mirror(tmp_path / "mirror")
    (mirror / "mnist" / "test" / "9").rename(mirror / "mnist" / "test" / "nine")
    with pytest.raises(DatasetNotFound, match="class folders"):
        load_images("mnist", "test", mirror=mirror)


def test_failed_download_names_both_ways(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DatasetNotFound) as err:
        load_images("mnist", "train")
    assert "Name or service not known" in str(err.value) and data.MIRROR_ENV in str(err.value)


def test_bad_names():
    with pytest.raises(ValueError, match="valid: mnist, cifar10"):
        load_images("imagenet", "train")
    with pytest.raises(ValueError, match="valid: train, test"):
        load_images("mnist", "val")
