"""Bad inputs fail before any work, with an error naming the value and what is allowed or the fix.

One row per case, across the runner, the results store, the data layer and lib's
public functions. Each row gives the exception type and regular expressions the
message must match: one for the offending value, one for the allowed range or the
command that fixes it. Every case runs in a fresh folder that holds the store, the
data cache and the runner's output, and the test checks that the failing call
wrote nothing there (nor in the checkout's committed results).
"""

from __future__ import annotations

import io
import json
import os
import re
import textwrap
from contextlib import redirect_stderr
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

import lib.data as data
from lib.attention_numpy import multi_head_self_attention, self_attention
from lib.classify import ClassifierConfig
from lib.config import ConfigError, normalise, takes
from lib.data import DatasetNotFound, load_images
from lib.features.ball import ball_overlap_kernel, uniform_centres
from lib.features.gelu import maclaurin_degrees, random_maclaurin_features
from lib.features.polynomial import gaussian_projections, symmetric_power_features
from lib.linear_attention import linear_attention
from lib.positions import ManhattanBias
from lib.recall.experiment import RecallConfig
from lib.recall.task import sample_recall
from lib.run import main
from lib.store import DEFAULT_ROOT, MissingResult, NonFiniteResult, ResultsStore, StoreError
from lib.sweep import Executor
from lib.train import fit
from lib.vit import ViT

CHAPTER = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # A tiny chapter

    ```{code-cell} ipython3
    :tags: [parameters]

    profile = "cpu"
    n = 3  # type: int[1,)  a size
    rate = 0.5  # type: float(0,1]  a rate
    seeds = None  # type: list[int[0,)]  seeds; None means the profile default
    schemes = ["ape"]  # type: list[lib.vit.POSITION_SCHEMES]  schemes
    flag = True
    ```

    ```{code-cell} ipython3
    open("ran.txt", "w").write("the chapter ran")
    ```
    """
)


class Exit(Exception):
    """The runner returned a non-zero exit code; the message is what it printed on stderr."""


def run(tmp: Path, *args: str, chapter: Path | None = None) -> None:
    """``python -m lib.run <tmp>/tiny ARGS`` in this process; :class:`Exit` with its stderr unless it succeeds."""
    err = io.StringIO()
    with redirect_stderr(err):
        try:
            code = main([str(chapter or tmp / "tiny"), "--out", str(tmp / "out"), *args])
        except SystemExit as exit_:  # argparse
            code = exit_.code
    if code != 0:
        raise Exit(f"exit code {code}: {err.getvalue()}")


def edited_chapter(tmp: Path, old: str, new: str) -> None:
    (tmp / "tiny.md").write_text(CHAPTER.replace(old, new))


def record(tmp: Path, mutate: Callable[[dict], Any] | None = None, text: str | None = None) -> Path:
    """A stored record of experiment 'exp' with config {'n': 1}, then edited."""
    store = ResultsStore("cpu", root=tmp / "results")
    store.load_or_run("exp", {"n": 1}, lambda c: {"x": 1.0})
    path = store.path("exp", {"n": 1})
    if mutate is not None:
        rec = json.loads(path.read_text())
        mutate(rec)
        path.write_text(json.dumps(rec))
    if text is not None:
        path.write_text(text)
    return path


def mirror(tmp: Path, name: str = "mnist", per_class: int = 1) -> Path:
    channels, h, w = data.SHAPES[name]
    for split in data.SPLITS:
        for cls in data.CLASSES[name]:
            folder = tmp / "mirror" / name / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.zeros((h, w, channels), dtype=np.uint8)
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(folder / f"{i}.png")
    return tmp / "mirror"


@takes(RecallConfig)
def recall_experiment(config):
    raise AssertionError("must not run")


def store(tmp: Path, **kwargs) -> ResultsStore:
    return ResultsStore("cpu", root=tmp / "results", **kwargs)


def dataset(n: int = 8):
    return torch.utils.data.TensorDataset(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long))


@dataclass
class Case:
    id: str
    call: Callable[[Path], Any]
    error: type
    value: str  # regex: the message names the offending value
    fix: str  # regex: ... and the allowed range, or the fix
    setup: Callable[[Path], Any] | None = None
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # --- the runner: python -m lib.run ---------------------------------------------------------
    Case("runner unknown parameter", lambda t: run(t, "-p", "m=5"), Exit, r"unknown parameter 'm'", r"n = 3"),
    Case("runner string for an int", lambda t: run(t, "-p", "n=abc"), Exit, r"n='abc'", r"an integer >= 1"),
    Case("runner float for an int", lambda t: run(t, "-p", "n=1.5"), Exit, r"n=1\.5", r"an integer >= 1"),
    Case("runner int below its domain", lambda t: run(t, "-p", "n=0"), Exit, r"n=0", r"an integer >= 1"),
    Case("runner number outside (0,1]", lambda t: run(t, "-p", "rate=1.5"), Exit, r"rate=1\.5", r"in \(0, 1\]"),
    Case("runner negative seed in a list", lambda t: run(t, "-p", "seeds=[0,-1]"), Exit, r"seeds=\[0, -1\]",
         r"a list of integers >= 0, or None"),
    Case("runner scalar for a list", lambda t: run(t, "-p", "seeds=3"), Exit, r"seeds=3", r"a list of integers"),
    Case("runner None for a non-None default", lambda t: run(t, "-p", "n=None"), Exit, r"n=None",
         r"an integer >= 1"),
    Case("runner unknown name in a sweep list", lambda t: run(t, "-p", "schemes=['ape','rope']"), Exit,
         r"schemes=\['ape', 'rope'\]", r"'rope-axial'"),
    Case("runner int for a bool", lambda t: run(t, "-p", "flag=1"), Exit, r"flag=1", r"True or False"),
    Case("runner unknown profile", lambda t: run(t, "-p", "profile=laptop"), Exit, r"laptop",
         r"smoke, cpu, gpu"),
    Case("runner unknown profile from the environment", lambda t: run(t), Exit, r"laptop", r"smoke, cpu, gpu",
         env={"BOOK_PROFILE": "laptop"}),
    Case("runner gpu profile without CUDA", lambda t: run(t, "--profile", "gpu"), Exit, r"no CUDA", r"--force"),
    Case("runner missing chapter", lambda t: run(t, chapter=t / "nowhere"), Exit, r"nowhere",
         r"chapters/<part>/<name>"),
    Case("runner -p without =", lambda t: run(t, "-p", "n"), Exit, r"'n'", r"NAME=VALUE"),
    Case("runner parameter line papermill cannot read", run, Exit, r"\['flag'\]", r"no '=' in the comment",
         setup=lambda t: edited_chapter(t, "flag = True", "flag = True  # default = True")),
    Case("runner chapter type comment outside the grammar", run, Exit, r"'integer'", r"int\[1,\)",
         setup=lambda t: edited_chapter(t, "# type: int[1,)", "# type: integer")),
    Case("runner chapter without a parameters cell", run, Exit, r"parameters", r"tagged",
         setup=lambda t: edited_chapter(t, ":tags: [parameters]", "")),
    Case("runner pool with zero workers", lambda t: run(t, "--executor", "pool", "--workers", "0"), Exit,
         r"workers=0", r"an integer >= 1"),
    Case("runner slurm without Slurm", lambda t: run(t, "--executor", "slurm"), Exit, r"sbatch",
         r"--executor pool"),
    Case("runner workers for the inline executor", lambda t: run(t, "--workers", "2"), Exit, r"--workers",
         r"--executor pool"),
    Case("runner store is a file", lambda t: run(t), Exit, r"results/cpu is a file", r"set \$BOOK_RESULTS to a directory",
         setup=lambda t: (t / "results").mkdir() or (t / "results" / "cpu").touch()),
    Case("runner a Slurm partition for a pool", lambda t: run(t, "--executor", "pool", "--partition", "gpu"), Exit,
         r"partition='gpu'", r"unless the executor is slurm"),
    # --- the results store ---------------------------------------------------------------------
    Case("store unknown profile", lambda t: ResultsStore("laptop", root=t / "results"), ValueError, r"'laptop'",
         r"smoke, cpu, gpu"),
    Case("store bad experiment name", lambda t: store(t).path("../up", {}), ValueError, r"'\.\./up'",
         r"letters, digits"),
    Case("store config not a dict", lambda t: store(t).record("exp", [1, 2], lambda c: 1), TypeError,
         r"\[1, 2\]", r"must be a dict"),
    Case("store experiment not a function", lambda t: store(t).record("exp", {}, None), TypeError, r"None",
         r"function config -> result"),
    Case("store sweep given one dict", lambda t: store(t).sweep("exp", {"n": 1}, lambda c: 1), TypeError,
         r"\{'n': 1\}", r"list of configuration dicts"),
    Case("store unknown key", lambda t: store(t).record("recall", {"taus": 1}, recall_experiment), ConfigError,
         r"\['taus'\]", r"valid keys .*tau=1"),
    Case("store bad name at the end of a sweep",
         lambda t: store(t).sweep("recall", [{"tau": 1}, {"tau": 2}, {"tau": 0}], recall_experiment), ConfigError,
         r"tau=0", r"at least 1"),
    Case("store truncated record", lambda t: store(t).load_or_run("exp", {"n": 1}, lambda c: 2), StoreError,
         r"exp-\w+\.json", r"rm .*python -m lib.run", setup=lambda t: record(t, text='{"config": {"n"')),
    Case("store record without result", lambda t: store(t).load_or_run("exp", {"n": 1}, lambda c: 2), StoreError,
         r"lacks \['result'\]", r"delete it", setup=lambda t: record(t, mutate=lambda r: r.pop("result"))),
    Case("store hand-edited config", lambda t: store(t).records("exp"), StoreError, r"hashes to exp-",
         r"delete it", setup=lambda t: record(t, mutate=lambda r: r["config"].update(n=2))),
    Case("store NaN written into a record", lambda t: store(t).load_or_run("exp", {"n": 1}, lambda c: 2),
         StoreError, r"non-finite number at result\['x'\]", r"delete it",
         setup=lambda t: record(t, mutate=lambda r: r["result"].update(x=float("nan")))),
    Case("store missing record, read-only", lambda t: store(t, read_only=True).record("exp", {"n": 5}, len),
         MissingResult, r'\{"n":5\}', r"python -m lib\.run"),
    Case("store NaN result", lambda t: store(t).load_or_run("exp", {"n": 1}, lambda c: {"loss": float("nan")}),
         NonFiniteResult, r"result\['loss'\]", r"no record written"),
    Case("store root is a file", lambda t: ResultsStore("cpu", root=t / "file"), StoreError, r"file",
         r"set \$BOOK_RESULTS to a directory", setup=lambda t: (t / "file").mkdir() or (t / "file" / "cpu").touch()),
    Case("store root of the wrong type", lambda t: ResultsStore("cpu", root=3), TypeError, r"root=3",
         r"a path"),
    Case("executor unknown in the environment", lambda t: Executor.from_env(), ConfigError, r"'bogus'",
         r"inline, pool, slurm", env={"BOOK_EXECUTOR": "bogus"}),
    Case("executor workers not a number", lambda t: Executor.from_env(), ConfigError, r"BOOK_WORKERS='two'",
         r"an integer", env={"BOOK_EXECUTOR": "pool", "BOOK_WORKERS": "two"}),
    Case("executor zero threads", lambda t: Executor("pool", threads=0), ConfigError, r"threads=0",
         r"an integer >= 1"),
    # --- the data layer ------------------------------------------------------------------------
    Case("data unknown dataset", lambda t: load_images("imagenet", "train"), ValueError, r"'imagenet'",
         r"mnist, cifar10"),
    Case("data unknown split", lambda t: load_images("mnist", "val"), ValueError, r"'val'", r"train, test"),
    Case("data mirror of the wrong type", lambda t: load_images("mnist", "test", mirror=3), TypeError,
         r"mirror=3", r"folder path"),
    Case("data mirror without the dataset", lambda t: load_images("cifar10", "test", mirror=t / "mirror"),
         DatasetNotFound, r"cifar10/test", r"torchvision downloads", setup=lambda t: mirror(t)),
    Case("data empty class folder", lambda t: load_images("mnist", "test", mirror=t / "mirror"), DatasetNotFound,
         r"mnist/test/7 is empty", r"unpack the archive again",
         setup=lambda t: (mirror(t), (t / "mirror/mnist/test/7/0.png").unlink())),
    Case("data missing class folder", lambda t: load_images("mnist", "test", mirror=t / "mirror"), DatasetNotFound,
         r"missing: \S*mnist/test/3", r"expected exactly",
         setup=lambda t: (mirror(t), (t / "mirror/mnist/test/3/0.png").unlink(), (t / "mirror/mnist/test/3").rmdir())),
    Case("data unreadable image", lambda t: load_images("mnist", "test", mirror=t / "mirror"), DatasetNotFound,
         r"test/5/0\.png is not a readable image", r"remove it",
         setup=lambda t: (mirror(t), (t / "mirror/mnist/test/5/0.png").write_bytes(b"not a png"))),
    Case("data image of the wrong size", lambda t: load_images("mnist", "test", mirror=t / "mirror"),
         DatasetNotFound, r"test/2/0\.png is 32x32", r"mnist images are 28x28",
         setup=lambda t: (mirror(t), Image.new("L", (32, 32)).save(t / "mirror/mnist/test/2/0.png"))),
    # --- lib's public functions and experiment configurations ----------------------------------
    Case("recall tau=0", lambda t: normalise(RecallConfig, {"tau": 0}), ConfigError, r"tau=0", r"at least 1"),
    Case("recall M > K", lambda t: normalise(RecallConfig, {"M": 20, "K": 16}), ConfigError, r"M=20",
         r"between 1 and K=16"),
    Case("recall L too short", lambda t: normalise(RecallConfig, {"tau": 5, "L": 6}), ConfigError, r"L=6",
         r"tau \+ 2 = 7"),
    Case("recall kind misspelt", lambda t: normalise(RecallConfig, {"kind": "mambo"}), ConfigError,
         r"kind='mambo'", r"'transformer', 'mamba', 'hybrid'"),
    Case("recall None for an int", lambda t: normalise(RecallConfig, {"K": None}), ConfigError, r"K=None",
         r"an integer"),
    Case("recall task tau=0", lambda t: sample_recall(4, 8, 16, 1, 0, np.random.default_rng(0)), ValueError,
         r"tau=0", r"tau must be >= 1"),
    Case("classifier patch not dividing the image", lambda t: normalise(ClassifierConfig, {"patch": [5, 5]}),
         ConfigError, r"patch=\[5, 5\]", r"a divisor of the 28x28"),
    Case("classifier RoPE head width", lambda t: normalise(ClassifierConfig, {"position": "rope-axial", "dim": 24,
                                                                                 "heads": 4}),
         ConfigError, r"dim=24", r"divisible by 4"),
    Case("classifier unknown scheme", lambda t: normalise(ClassifierConfig, {"position": "rope"}), ConfigError,
         r"position='rope'", r"'rope-axial'"),
    Case("Manhattan bias of degree 0", lambda t: ManhattanBias((7, 7), heads=2, degree=0), ValueError,
         r"degree=0", r"integer degree >= 1"),
    Case("ViT with zero heads", lambda t: ViT(image=(28, 28), patch=(4, 4), channels=1, classes=10,
                                             position="ape", heads=0), ValueError, r"heads=0", r"integer >= 1"),
    Case("ViT patch not dividing", lambda t: ViT(image=(28, 28), patch=(5, 5), channels=1, classes=10,
                                                position="ape"), ValueError, r"\(5, 5\)", r"whole number"),
    Case("random Maclaurin features m=0",
         lambda t: random_maclaurin_features(torch.ones(2, 3), torch.ones(2, 3), 0, 0.5, torch.Generator()),
         ConfigError, r"m=0", r"an integer >= 1"),
    Case("Maclaurin degree law rho=1", lambda t: maclaurin_degrees(4, 1.0, torch.Generator()), ConfigError,
         r"rho=1\.0", r"in \(0, 1\)"),
    Case("Gaussian projections m=0", lambda t: gaussian_projections(2, 0, 3, torch.Generator()), ConfigError,
         r"m=0", r"an integer >= 1"),
    Case("symmetric features degree 0", lambda t: symmetric_power_features(torch.ones(3), 0), ConfigError,
         r"p=0", r"an integer >= 1"),
    Case("ball kernel delta=0", lambda t: ball_overlap_kernel(torch.ones(3), 0.0), ConfigError, r"delta=0\.0",
         r"a positive number"),
    Case("ball centres m=0", lambda t: uniform_centres(torch.zeros(3), torch.ones(3), 0, 0.5, torch.Generator()),
         ConfigError, r"m=0", r"an integer >= 1"),
    Case("NumPy attention heads not dividing D",
         lambda t: multi_head_self_attention(np.ones((4, 6)), *[np.eye(6)] * 3, H=4), ValueError,
         r"D=6 .*H=4", r"H must divide"),
    Case("NumPy attention weights of the wrong width",
         lambda t: self_attention(np.ones((4, 6)), np.ones((2, 5)), np.ones((2, 5)), np.ones((2, 5))), ValueError,
         r"\(2, 5\)", r"D=6"),
    Case("linear attention feature counts differ",
         lambda t: linear_attention(torch.ones(5, 3), torch.ones(5, 4), torch.ones(5, 2)), ValueError,
         r"\(5, 3\) .*\(5, 4\)", r"same number of features"),
    Case("fit steps=0", lambda t: fit(torch.nn.Linear(2, 2), dataset(), steps=0, seed=0, batch_size=4),
         ConfigError,
         r"steps=0", r"an integer >= 1"),
    Case("fit negative learning rate", lambda t: fit(torch.nn.Linear(2, 2), dataset(), steps=5, seed=0, batch_size=4,
                                                               lr=-1.0),
         ConfigError, r"lr=-1\.0", r"a positive number"),
    Case("fit warm-up longer than training",
         lambda t: fit(torch.nn.Linear(2, 2), dataset(), steps=5, seed=0, batch_size=4, warmup_steps=10),
         ConfigError,
         r"warmup_steps=10", r"between 0 and steps=5"),
    Case("fit batch larger than the data", lambda t: fit(torch.nn.Linear(2, 2), dataset(8), steps=5, seed=0),
         ConfigError, r"batch_size=64", r"at most the dataset's size 8"),
    Case("fit NaN loss stops training",
         lambda t: fit(torch.nn.Linear(2, 2), dataset(), steps=50, seed=0, batch_size=4, eval_every=5,
                       loss_fn=lambda out, y: out.sum() * float("nan"), device="cpu"),
         FloatingPointError, r"loss is nan at step 5", r"Lower the learning rate"),
]


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots`` with its size and modification time. Claim files are left out: a
    claim is taken only to compute (the NaN case computes, then refuses to store), and the empty
    lock file stays by design (unlinking a flock'ed file would let two processes hold one claim)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots if root.exists()
            for p in root.rglob("*") if p.is_file() and p.parent.name != ".claims"}


def test_at_least_forty_cases_in_four_layers():
    layers = {case.id.split()[0] for case in CASES}
    assert len(CASES) >= 40 and {"runner", "store", "data", "recall", "fit"} <= layers, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_before_work_naming_the_value_and_the_fix(case, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("BOOK_RESULTS", str(work / "results"))
    monkeypatch.setenv(data.CACHE_ENV, str(work / "cache"))
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.delenv("BOOK_PROFILE", raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    if case.setup is not None:
        case.setup(work)
    if "runner" in case.id and not (work / "tiny.md").exists():
        (work / "tiny.md").write_text(CHAPTER)
    before = snapshot(work, DEFAULT_ROOT)
    with pytest.raises(case.error) as caught:
        case.call(work)
    message = str(caught.value)
    assert re.search(case.value, message), f"the message does not name the value:\n{message}"
    assert re.search(case.fix, message), f"the message does not say what is allowed or the fix:\n{message}"
    assert snapshot(work, DEFAULT_ROOT) == before, "a failing call wrote files"
    assert not (work / "ran.txt").exists(), "the chapter ran"
