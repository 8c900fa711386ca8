import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lib.store import ResultsStore, config_hash


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
