"""Sweeps on executors (lib.sweep): dry runs, a local pool, submitit's local path, provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lib.provenance import compute_statement, describe
from lib.run import main
from lib.store import ResultsStore
from lib.sweep import Executor, SweepFailed, estimate_seconds, format_plan, read_plan

BOOK_ROOT = Path(__file__).resolve().parents[1]

SWEEP_CHAPTER = textwrap.dedent(
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

    # A chapter with a sweep

    ```{code-cell} ipython3
    import os, time
    from lib.store import ResultsStore
    ```

    ```{code-cell} ipython3
    :tags: [parameters]

    profile = "smoke"
    n = 3  # type: int[1,)  configurations
    ```

    ```{code-cell} ipython3
    def square(config):  # defined in the notebook: jobs get it by value
        time.sleep(0.2)
        return {"square": config["i"] ** 2, "pid": os.getpid()}

    records = ResultsStore(profile).sweep("squares", [{"i": i} for i in range(n)], square)
    open("kernel.json", "w").write(json.dumps({"pid": os.getpid(), "records": len(records)}))
    ```

    ```{code-cell} ipython3
    single = ResultsStore(profile).record("single", {"k": 1}, lambda c: {"k": c["k"]})
    ```
    """
).replace("import os, time", "import json, os, time")


def test_submitit_local_path_end_to_end_with_a_dry_run_before_and_after(tmp_path, monkeypatch, capsys):
    """The runner enumerates a chapter's sweep, runs it as submitit jobs, and finds nothing left to do."""
    monkeypatch.setenv("BOOK_RESULTS", str(tmp_path / "results"))
    chapter = tmp_path / "sweepy.md"
    chapter.write_text(SWEEP_CHAPTER)
    args = [str(chapter), "--profile", "smoke", "--out", str(tmp_path / "out"), "--log-dir", str(tmp_path / "logs")]

    assert main([*args, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "squares        3       0        3" in plan and "single" in plan, plan
    assert not (tmp_path / "results" / "smoke" / "squares").exists(), "a dry run computes nothing"

    assert main([*args, "--executor", "submitit-local", "--workers", "2"]) == 0
    out = capsys.readouterr()
    assert "executor submitit-local, 2 worker(s) x 1 thread(s)" in out.out
    assert "squares: 3/3 stored" in out.err, "the progress lines reach the runner's terminal"
    store = ResultsStore("smoke", root=tmp_path / "results")
    records = store.records("squares")
    kernel = json.loads((tmp_path / "kernel.json").read_text())
    assert sorted(r["result"]["square"] for r in records) == [0, 1, 4] and kernel["records"] == 3
    assert all(r["result"]["pid"] != kernel["pid"] for r in records), "each configuration ran as a job"
    assert all(describe(r)["missing"] == [] and describe(r)["threads"] == 1 for r in records)
    assert len(list((tmp_path / "logs" / "smoke" / "squares" / "submitit").glob("*_log.err"))) == 3

    assert main([*args, "--dry-run", "-p", "n=4"]) == 0
    plan = capsys.readouterr().out
    assert "squares        4       3        1" in plan and "0 of compute" not in plan, plan
    assert [r["config"]["i"] for r in store.records("squares")] != [], "the finished records stay"


FAILING = textwrap.dedent(
    """
    def experiment(config):
        import os, time
        if config["i"] == 1:
            raise ValueError("configuration 1 is broken")
        time.sleep(0.1)
        return {"i": config["i"], "threads": os.environ["OMP_NUM_THREADS"]}
    """
)


def test_pool_reports_a_failed_job_with_its_config_and_log_and_finishes_the_others(tmp_path, monkeypatch):
    namespace: dict = {}
    exec(FAILING, namespace)  # a function no job could import: it travels by value
    status = tmp_path / "status.txt"
    monkeypatch.setenv("BOOK_STATUS", str(status))
    store = ResultsStore("smoke", root=tmp_path / "results")
    executor = Executor("pool", workers=2, threads=1, log_dir=str(tmp_path / "logs"))
    with pytest.raises(SweepFailed) as failed:
        store.sweep("pool", [{"i": i} for i in range(3)], namespace["experiment"], executor=executor)
    message = str(failed.value)
    assert '1 of 3 jobs' in message and '{"i":1}' in message and "configuration 1 is broken" in message
    assert str(tmp_path / "logs" / "smoke" / "pool") in message, "the message names the job's log"
    assert sorted(r["result"]["i"] for r in store.records("pool")) == [0, 2]
    assert {r["result"]["threads"] for r in store.records("pool")} == {"1"}
    assert "FAILED" in status.read_text() and "2/3 stored" in status.read_text()


CONCURRENT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from lib.store import ResultsStore
    from lib.sweep import Executor

    log = Path(sys.argv[2])

    def experiment(config):
        with log.open("a") as f:
            f.write(f"{os.getpid()} {config['i']}\\n")
        time.sleep(1.0)
        return {"i": config["i"]}

    executor = Executor(sys.argv[3], workers=2, log_dir=sys.argv[4]) if sys.argv[3] != "inline" else Executor()
    records = ResultsStore("smoke", root=sys.argv[1]).sweep("both", [{"i": i} for i in range(6)], experiment,
                                                            executor=executor)
    assert [r["result"]["i"] for r in records] == list(range(6))
    """
)


def test_a_pool_and_an_inline_sweep_on_one_store_compute_each_configuration_once(tmp_path):
    log = tmp_path / "calls.txt"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path / "results"), str(log), kind,
                               str(tmp_path / "logs")], env={**os.environ, "PYTHONPATH": str(BOOK_ROOT)})
             for kind in ("pool", "inline")]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    calls = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(i) for _, i in calls) == list(range(6)), "every configuration computed exactly once"
    store = ResultsStore("smoke", root=tmp_path / "results")
    assert sorted(r["result"]["i"] for r in store.records("both")) == list(range(6))


def test_cost_estimates_use_the_nearest_finished_configurations():
    finished = [{"config": {"kind": "a", "seed": 0}, "result": 0, "seconds": 10.0},
                {"config": {"kind": "a", "seed": 1}, "result": 0, "seconds": 20.0},
                {"config": {"kind": "b", "seed": 0}, "result": 0, "provenance": {"wall_seconds": 100.0}}]
    assert estimate_seconds({"kind": "a", "seed": 2}, finished) == 15.0
    assert estimate_seconds({"kind": "b", "seed": 5}, finished) == 100.0
    assert estimate_seconds({"kind": "a"}, []) is None


def test_plan_table_counts_stored_and_missing(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    store.record("exp", {"i": 0}, lambda c: 1)
    plan = tmp_path / "plan.jsonl"
    rows = [{"name": "exp", "profile": "cpu", "root": str(store.root), "config": {"i": i},
             "hash": str(i), "present": i == 0} for i in (0, 1, 1, 2)]
    plan.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (table,) = read_plan(plan)
    assert (table["configs"], table["present"], len(table["missing"])) == (3, 1, 2)
    assert table["estimate"] is not None and "exp" in format_plan([table], workers=2)


def test_compute_statement_counts_runs_hours_devices_and_what_old_records_lack(tmp_path):
    store = ResultsStore("cpu", root=tmp_path)
    new = [store.record("exp", {"i": i}, lambda c: sum(range(10**5))) for i in range(2)]
    old = {"config": {}, "result": 1, "seconds": 7200.0, "created": "2025-01-01T00:00:00"}
    statement = compute_statement([*new, old])
    assert statement["runs"] == 3 and statement["cpu_runs"] == 2 and statement["wall_hours"] >= 2.0
    assert sum(statement["devices"].values()) == 2 and statement["lacking"]["device"] == 1
    assert statement["first"] == "2025-01-01T00:00:00"
    assert statement["text"].startswith("3 runs, 2.0 hours of wall-clock time")
    assert "1 older record lack" in statement["text"] or "1 older record lacks" in statement["text"]


def test_executor_options_round_trip_through_the_environment(monkeypatch):
    executor = Executor("slurm", workers=8, threads=4, partition="gpu", gpus=1, time=120)
    for name, value in executor.to_env().items():
        monkeypatch.setenv(name, value)
    assert Executor.from_env() == executor


def test_slurm_resources_reach_the_sbatch_script(tmp_path, monkeypatch):
    """No cluster here: submitit's Slurm executor is built with srun faked, and its batch script read."""
    import submitit.slurm.slurm as slurm

    from lib.sweep import submitit_executor

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executor = Executor("slurm", workers=8, threads=4, partition="gpu", gpus=1, time=120)
    script = submitit_executor(executor, "vit", tmp_path)._executor._make_submission_file_text("python -m x", "u")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--time=120", "--cpus-per-task=4", "--job-name=book-vit"):
        assert f"#SBATCH {line}" in script, script
