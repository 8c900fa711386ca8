import os
import subprocess
import sys
from pathlib import Path

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


def test_cache_follows_the_mirror_files_not_its_path(tmp_path):
    mirror = make_mirror(tmp_path / "mirror")
    first = load_images("mnist", "test", mirror=mirror)
    image = mirror / "mnist" / "test" / "4" / "0.png"
    Image.fromarray(np.full((28, 28), 255, dtype=np.uint8)).save(image)  # the mirror's file is replaced
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    second = load_images("mnist", "test", mirror=mirror)
    index = first.labels.tolist().index(4)
    assert int(first.images[index, :, 1:, 1:].max()) == 80 and int(second.images[index].min()) == 255, "decoded afresh"
    (mirror / "mnist" / "test" / "4" / "2.png").write_bytes(image.read_bytes())  # an image is added
    assert len(load_images("mnist", "test", mirror=mirror).labels) == 21
    assert len(list((data.cache_dir() / "tensors").glob("mnist-test-*.pt"))) == 3


def test_an_unreadable_cache_file_is_decoded_again(tmp_path):
    mirror = make_mirror(tmp_path / "mirror")
    first = load_images("mnist", "test", mirror=mirror)
    (cached,) = (data.cache_dir() / "tensors").glob("mnist-test-*.pt")
    cached.write_bytes(cached.read_bytes()[:100])  # truncated, e.g. by a full disk
    again = load_images("mnist", "test", mirror=mirror)
    assert torch.equal(first.images, again.images)


FIRST_LOAD = """
import sys
from lib.data import load_images
images = load_images("mnist", "train", mirror=sys.argv[1])
assert len(images.labels) == 10 * int(sys.argv[2])
"""


def test_two_first_loads_at_once_both_succeed_and_leave_no_temporary_file(tmp_path):
    mirror = make_mirror(tmp_path / "mirror", per_class=30)
    env = {**os.environ, data.CACHE_ENV: str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(data.__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_LOAD, str(mirror), "30"], env=env) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    files = sorted(p.name for p in (tmp_path / "cache" / "tensors").iterdir())
    assert len(files) == 1 and files[0].startswith("mnist-train-") and files[0].endswith(".pt"), files
