import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dataclasses import dataclass

from lib.config import ConfigError, require, takes
from lib.provenance import describe
from lib.store import MissingResult, NonFiniteResult, ResultsStore, StoreError, config_hash


def test_hash_ignores_key_order_and_sees_values():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert config_hash({"a": 1}) != config_hash({"a": 1.5})


def test_load_or_run_computes_once_and_keeps_numpy_values(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    calls = []

    def experiment(config):
        calls.append(config)
        return {"mean": np.float64(0.5), "curve": np.arange(3)}

    first = store.load_or_run("exp", {"n": 3}, experiment)
    again = ResultsStore("cpu", root=tmp_path).load_or_run("exp", {"n": 3}, experiment)
    assert first == again == {"mean": 0.5, "curve": [0, 1, 2]}
    assert len(calls) == 1
    path = store.path("exp", {"n": 3})
    assert path.parent == tmp_path / "cpu" / "exp" and path.name.startswith("exp-")
    record = json.loads(path.read_text())
    assert record["config"] == {"n": 3} and record["profile"] == "cpu" and record["seconds"] >= 0


def test_profiles_are_kept_apart(tmp_path):
    ResultsStore("smoke", root=tmp_path).load_or_run("exp", {"n": 1}, lambda c: 1)
    assert ResultsStore("cpu", root=tmp_path).get("exp", {"n": 1}) is None
    with pytest.raises(ValueError, match="valid profiles"):
        ResultsStore("laptop", root=tmp_path)


def test_bad_name_and_unserialisable_result(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    with pytest.raises(ValueError, match="experiment name"):
        store.path("../escape", {})
    with pytest.raises(TypeError, match="JSON-serialisable"):
        store.load_or_run("exp", {"n": 1}, lambda c: {"obj": object()})
    assert not list(tmp_path.rglob("*.json"))


def test_failed_write_leaves_no_partial_record(tmp_path, monkeypatch):
    store = ResultsStore("cpu", root=tmp_path)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put("exp", {"n": 1}, {"x": 1}, 0.0)
    assert not any(tmp_path.rglob("*.json")), "neither a record nor a temporary file may remain"


KILLED_SWEEP = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from lib.store import ResultsStore

    log = Path(sys.argv[2])

    def experiment(config):
        with log.open("a") as f:
            f.write(f"{config['i']}\\n")
        if config["i"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run, like a closed laptop
        return {"square": config["i"] ** 2}

    ResultsStore("cpu", root=sys.argv[1]).sweep("sweep", [{"i": i} for i in range(5)], experiment)
    """
)


def test_killed_sweep_resumes_and_reuses_finished_runs(tmp_path):
    log = tmp_path / "calls.txt"
    proc = subprocess.run([sys.executable, "-c", KILLED_SWEEP, str(tmp_path), str(log)])
    assert proc.returncode == -9
    assert log.read_text().split() == ["0", "1", "2"]

    store = ResultsStore("cpu", root=tmp_path)
    assert [store.get("sweep", {"i": i}) is not None for i in range(5)] == [True, True, False, False, False]
    assert not list((tmp_path / "cpu" / "sweep").glob(".tmp-*"))

    rerun_calls = []

    def experiment(config):
        rerun_calls.append(config["i"])
        return {"square": config["i"] ** 2}

    records = store.sweep("sweep", [{"i": i} for i in range(5)], experiment)
    assert rerun_calls == [2, 3, 4], "finished runs must be reused, not recomputed"
    assert [r["result"]["square"] for r in records] == [0, 1, 4, 9, 16]
    assert len(store.records("sweep")) == 5


def test_read_only_store_never_computes(tmp_path, monkeypatch):
    ResultsStore("cpu", root=tmp_path).load_or_run("exp", {"i": 0}, lambda c: 0)
    monkeypatch.setenv("BOOK_READ_ONLY", "1")
    store = ResultsStore("cpu", root=tmp_path)

    def must_not_run(config):
        raise AssertionError("a read-only store computed something")

    assert store.load_or_run("exp", {"i": 0}, must_not_run) == 0
    with pytest.raises(LookupError, match="read-only"):
        store.load_or_run("exp", {"i": 1}, must_not_run)
    records = store.sweep("exp", [{"i": 0}, {"i": 1}], must_not_run)
    assert [r["config"] for r in records] == [{"i": 0}]


@dataclass(frozen=True)
class Toy:
    n: int = 3
    rate: float = 0.5

    def __post_init__(self):
        require(self.n >= 1, "n", self.n, "an integer >= 1")


def test_two_spellings_of_one_configuration_share_one_record(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    calls = []

    @takes(Toy)
    def experiment(config):
        calls.append(config)
        return config["n"] * config["rate"]

    assert store.load_or_run("toy", {}, experiment) == 1.5
    assert store.load_or_run("toy", {"n": 3, "rate": 0.5}, experiment) == 1.5
    assert store.load_or_run("toy", {"rate": 0.5}, experiment) == 1.5
    assert calls == [{"n": 3, "rate": 0.5}], "the function sees the full, normalised config, once"
    assert store.record("toy", {"rate": 1}, experiment)["config"] == {"n": 3, "rate": 1.0}


def test_a_bad_configuration_in_a_sweep_fails_before_anything_runs(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    ran = []

    @takes(Toy)
    def experiment(config):
        ran.append(config)
        return 0

    with pytest.raises(ConfigError, match="n=0 is not allowed"):
        store.sweep("toy", [{"n": 1}, {"n": 2}, {"n": 0}], experiment)
    with pytest.raises(ConfigError, match="unknown key.*'m'.*valid keys.*n=3"):
        store.sweep("toy", [{"n": 1}, {"m": 2}], experiment)
    assert ran == [] and not list(tmp_path.rglob("*.json"))


def test_a_corrupt_record_names_its_file_and_the_fix(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    store.load_or_run("exp", {"n": 1}, lambda c: 1)
    path = store.path("exp", {"n": 1})
    path.write_text(path.read_text()[:20])  # truncated, e.g. by a full disk
    with pytest.raises(StoreError, match=f"{path}.*not valid JSON.*rm {path}"):
        store.load_or_run("exp", {"n": 1}, lambda c: 1)
    path.write_text('{"name": "exp"}')  # hand-edited
    with pytest.raises(StoreError, match=r"lacks \['config', 'result'\].*delete it"):
        store.sweep("exp", [{"n": 1}], lambda c: 1)


def test_a_non_finite_result_writes_no_record(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    with pytest.raises(NonFiniteResult, match=r"result\['loss'\]\[1\]"):
        store.load_or_run("exp", {"n": 1}, lambda c: {"loss": [1.0, float("nan")]})
    assert not list(tmp_path.rglob("*.json"))


def test_a_missing_record_says_which_command_produces_it(tmp_path):
    store = ResultsStore("cpu", root=tmp_path, read_only=True)
    with pytest.raises(MissingResult, match="python -m lib.run chapters/ece598/.* --profile cpu"):
        store.record("recall", {"n": 1}, lambda c: 1)


def test_a_changed_record_or_checkpoint_does_not_make_the_code_dirty(tmp_path):
    """git_dirty is about the code: a run updating a committed checkpoint or record
    under results/ must not mark the records written meanwhile as dirty code."""
    from lib.provenance import code_version

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "lib").mkdir()
    (tmp_path / "results" / "cpu" / ".checkpoints").mkdir(parents=True)
    (tmp_path / "lib" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "cpu" / ".checkpoints" / "run.pt").write_text("step 1")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert code_version(tmp_path)[1] is False
    (tmp_path / "results" / "cpu" / ".checkpoints" / "run.pt").write_text("step 2")
    assert code_version(tmp_path)[1] is False
    (tmp_path / "lib" / "code.py").write_text("x = 2\n")
    assert code_version(tmp_path)[1] is True


def test_records_carry_provenance(tmp_path):
    record = ResultsStore("cpu", root=tmp_path).record("exp", {"n": 1}, lambda c: sum(range(10**5)))
    info = describe(record)
    assert info["missing"] == [], info
    assert info["cpu_seconds"] >= 0 and info["wall_seconds"] >= 0 and info["threads"] >= 1
    assert len(info["git_commit"]) == 40 and isinstance(info["git_dirty"], bool)
    old = {"config": {}, "result": 1, "seconds": 2.0, "lib_version": "0.1.0", "created": "x"}
    assert set(describe(old)["missing"]) == {"git_commit", "git_dirty", "torch_version", "device", "threads",
                                            "started", "cpu_seconds"}


CONCURRENT_SWEEP = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from lib.store import ResultsStore

    log = Path(sys.argv[2])

    def experiment(config):
        with log.open("a") as f:
            f.write(f"{os.getpid()} {config['i']}\\n")
        time.sleep(0.3)
        return {"square": config["i"] ** 2}

    records = ResultsStore("cpu", root=sys.argv[1]).sweep("sweep", [{"i": i} for i in range(8)], experiment)
    assert [r["result"]["square"] for r in records] == [i * i for i in range(8)]
    """
)


def test_two_sweeps_on_one_store_train_each_configuration_once(tmp_path):
    log = tmp_path / "calls.txt"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_SWEEP, str(tmp_path), str(log)]) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    calls = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(i) for _, i in calls) == list(range(8)), "every configuration trained exactly once"
    assert len({pid for pid, _ in calls}) == 2, "and the two sweeps shared the work"
    store = ResultsStore("cpu", root=tmp_path)
    assert len(store.records("sweep")) == 8


def test_a_crashed_claim_does_not_block_others(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    script = textwrap.dedent(
        """
        import os, signal, sys
        from lib.store import ResultsStore
        def experiment(config):
            os.kill(os.getpid(), signal.SIGKILL)
        ResultsStore("cpu", root=sys.argv[1]).load_or_run("exp", {"n": 1}, experiment)
        """
    )
    assert subprocess.run([sys.executable, "-c", script, str(tmp_path)]).returncode == -9
    assert store.load_or_run("exp", {"n": 1}, lambda c: 7) == 7
