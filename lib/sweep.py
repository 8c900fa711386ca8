"""Run a sweep's missing configurations on an executor, with one progress bar over them.

The chapter stays the single source of truth for its configurations: it calls
:meth:`lib.store.ResultsStore.sweep`, which validates all of them, reads the
records that exist and hands the missing ones here. Each *job* computes one
configuration under the store's per-configuration claim and writes one record,
so finished configurations are never rerun and two executors on one store
never compute the same configuration. The executor is chosen by the user, not
the chapter (``python -m lib.run CHAPTER --executor ...`` sets ``$BOOK_EXECUTOR``
and its options for the chapter's kernel):

- ``inline``: in the calling process, one after another (the default);
- ``pool``: ``workers`` local processes at a time, each with ``threads`` torch
  threads (one process per job, so a crash or an out-of-memory kill fails only
  that job);
- ``slurm``: a Slurm job array through ``submitit``, one task per configuration,
  with ``partition``, ``gpus`` (per task), ``time`` (minutes) and ``threads``
  (CPUs per task);
- ``submitit-local``: the same ``submitit`` code path on this machine (what the
  tests and CI run), ``workers`` jobs at a time.

Jobs receive the experiment function by value (``cloudpickle``), so a function
defined in a notebook works. A failed job is reported with its configuration
and log and does not stop the others; once the others are done the sweep raises
:class:`SweepFailed` naming each failure (rerunning resumes: the finished
records are stored). Logs go to ``<checkout>/_build/sweep-logs/`` (or ``log_dir``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .config import ConfigError, require

if TYPE_CHECKING:
    from .store import ResultsStore

BOOK_ROOT = Path(__file__).resolve().parents[1]
EXECUTORS = ("inline", "pool", "slurm", "submitit-local")
STATUS_ENV = "BOOK_STATUS"
CLAIMED_EXIT = 3  # a pool job found the configuration claimed by another process

# Executor options travel to the chapter's kernel as environment variables.
ENV = {"kind": "BOOK_EXECUTOR", "workers": "BOOK_WORKERS", "threads": "BOOK_THREADS",
       "partition": "BOOK_SLURM_PARTITION", "gpus": "BOOK_SLURM_GPUS", "time": "BOOK_SLURM_TIME",
       "log_dir": "BOOK_SWEEP_LOGS"}


@dataclass(frozen=True)
class Executor:
    """Where a sweep's missing configurations run (see the module docstring)."""

    kind: str = "inline"
    workers: int = 1  # jobs at a time (pool, submitit-local; the array's parallelism on Slurm)
    threads: int = 1  # torch threads per job (CPUs per task on Slurm)
    partition: Optional[str] = None  # Slurm partition (None: the cluster's default)
    gpus: int = 0  # GPUs per Slurm task
    time: int = 60  # Slurm time limit per job, minutes
    log_dir: Optional[str] = None  # default: <checkout>/_build/sweep-logs

    def __post_init__(self) -> None:
        require(self.kind in EXECUTORS, "executor", self.kind, f"one of {', '.join(EXECUTORS)}")
        for name, low in (("workers", 1), ("threads", 1), ("gpus", 0), ("time", 1)):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= low, name, value,
                    f"an integer >= {low}")
        require(self.partition is None or (isinstance(self.partition, str) and self.partition.strip() != ""),
                "partition", self.partition, "a Slurm partition name")
        for name, unset in (("partition", None), ("gpus", 0)):
            require(self.kind == "slurm" or getattr(self, name) == unset, name, getattr(self, name),
                    f"left out unless the executor is slurm (--{name} is a Slurm option; executor is {self.kind!r})")

    @classmethod
    def from_env(cls) -> "Executor":
        """The executor ``$BOOK_EXECUTOR`` and its options describe (``inline`` when unset)."""
        given: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            text = os.environ.get(ENV[field.name])
            if text is None or text == "":
                continue
            if field.name in ("workers", "threads", "gpus", "time"):
                try:
                    given[field.name] = int(text)
                except ValueError:
                    raise ConfigError(f"{ENV[field.name]}={text!r} is not allowed: it must be an integer") from None
            else:
                given[field.name] = text
        return cls(**given)

    def to_env(self) -> dict[str, str]:
        """The environment variables :meth:`from_env` reads back."""
        return {ENV[f.name]: str(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    def describe(self) -> str:
        """One line for the runner's banner."""
        if self.kind == "inline":
            return "inline (in the chapter's process)"
        text = f"{self.kind}, {self.workers} worker(s) x {self.threads} thread(s)"
        if self.kind == "slurm":
            text += f", partition {self.partition or '(default)'}, {self.gpus} GPU(s), {self.time} min per job"
        return text

    def logs(self, profile: str, name: str) -> Path:
        """The folder of this sweep's job logs."""
        return Path(self.log_dir or BOOK_ROOT / "_build" / "sweep-logs").resolve() / profile / name


class SweepFailed(RuntimeError):
    """Some jobs of a sweep failed; the others finished and their records are stored."""


def check_executor_available(executor: Executor) -> None:
    """Raise :class:`ConfigError` naming the fix when the executor cannot run here."""
    import shutil

    if executor.kind == "inline":
        return
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        raise ConfigError(f"--executor {executor.kind} needs cloudpickle: pip install -r requirements.txt") from None
    if executor.kind in ("slurm", "submitit-local"):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError(f"--executor {executor.kind} needs submitit: pip install -r requirements.txt") from None
    if executor.kind == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm needs Slurm, and this machine has no `sbatch`: run it on the cluster's "
                          "login node, or use --executor pool here (or --executor submitit-local to try the same "
                          "submitit path on this machine)")


# --- progress ------------------------------------------------------------------------------------

def status(line: str) -> None:
    """Append one progress line to ``$BOOK_STATUS`` (the runner prints that file as it grows)."""
    path = os.environ.get(STATUS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {line}\n")


def wall_seconds(record: dict[str, Any]) -> float | None:
    """The wall-clock seconds a record took (``provenance`` or the older top-level ``seconds``)."""
    value = (record.get("provenance") or {}).get("wall_seconds", record.get("seconds"))
    return float(value) if isinstance(value, (int, float)) else None


def estimate_seconds(config: dict[str, Any], finished: Iterable[dict[str, Any]]) -> float | None:
    """Estimated wall seconds of ``config``: the mean over the finished records of the same
    experiment whose configurations differ from it in the fewest keys (None without any)."""
    timed = [(r["config"], s) for r in finished if (s := wall_seconds(r)) is not None]
    if not timed:
        return None

    def distance(other: dict[str, Any]) -> int:
        return sum(config.get(k) != other.get(k) for k in set(config) | set(other))

    distances = [distance(c) for c, _ in timed]
    nearest = [s for (_, s), d in zip(timed, distances) if d == min(distances)]
    return sum(nearest) / len(nearest)


def duration(seconds: float | None) -> str:
    """``"42 s"``, ``"3.5 min"``, ``"2.1 h"``; ``"?"`` for None."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def short(config: dict[str, Any], limit: int = 100) -> str:
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Progress:
    """One bar over a sweep's configurations: lines to ``$BOOK_STATUS`` under the runner, a tqdm
    bar when someone is watching (:func:`lib.train.progress_enabled`), else silent."""

    def __init__(self, name: str, total: int, done: int, finished: list[dict[str, Any]], parallel: int = 1):
        from .train import progress_enabled

        self.name, self.total, self.done, self.parallel = name, total, done, parallel
        self.finished = list(finished)
        self.started: dict[str, float] = {}
        self.bar = None
        if not os.environ.get(STATUS_ENV) and progress_enabled():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc=name, unit="config", leave=False)
        status(f"{name}: {total} configurations, {done} stored, {total - done} to compute"
               f"{self._left()}")

    def _left(self) -> str:
        seconds = [s for r in self.finished if (s := wall_seconds(r)) is not None]
        if not seconds:
            return ""
        left = (self.total - self.done) * sum(seconds) / len(seconds) / self.parallel
        return f", about {duration(left)} left"

    def start(self, config: dict[str, Any]) -> None:
        self.started[json.dumps(config, sort_keys=True)] = time.perf_counter()
        status(f"{self.name}: computing {short(config)}")

    def finish(self, config: dict[str, Any], record: dict[str, Any]) -> None:
        self.done += 1
        self.finished.append(record)
        if self.bar is not None:
            self.bar.update(1)
        status(f"{self.name}: {self.done}/{self.total} stored (that one took "
               f"{duration(wall_seconds(record))}){self._left()}")

    def skip(self, config: dict[str, Any], why: str) -> None:
        status(f"{self.name}: skipped {short(config)}: {why}")

    def fail(self, config: dict[str, Any], log: str) -> None:
        if self.bar is not None:
            self.bar.update(1)
        status(f"{self.name}: FAILED {short(config)}; log: {log}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- jobs ----------------------------------------------------------------------------------------

def job_payload(store: "ResultsStore", name: str, config: dict[str, Any], fn: Callable[..., Any]) -> bytes:
    """Everything a job needs, pickled by value (functions defined in a notebook included)."""
    import cloudpickle

    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    source = Path(getattr(module, "__file__", None) or "/").resolve()
    if module is not None and module.__name__ != "__main__" and not (
            source.is_relative_to(BOOK_ROOT / "lib") or "site-packages" in source.parts):
        cloudpickle.register_pickle_by_value(module)  # a script or test module the job cannot import
    return cloudpickle.dumps({"root": str(store.root.parent), "profile": store.profile, "name": name,
                              "config": config, "fn": fn})


def run_job(payload: bytes, threads: int = 1) -> str:
    """Compute one configuration in this process and store its record.

    Returns ``"computed"``, ``"present"`` (someone finished it first) or ``"claimed"``
    (another process is computing it). Exceptions propagate (the job fails).
    """
    import pickle

    import torch

    from .store import ResultsStore

    torch.set_num_threads(threads)
    job = pickle.loads(payload)
    store = ResultsStore(job["profile"], root=job["root"], read_only=False)
    store.plan, store.read_only = None, False
    if store.path(job["name"], job["config"]).exists():
        return "present"
    record = store._compute(job["name"], job["config"], job["fn"], wait=False)
    return "claimed" if record is None else "computed"


def child_environment(threads: int) -> dict[str, str]:
    """The environment of a job: this checkout's lib first, ``threads`` threads everywhere, no nesting."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BOOK_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["BOOK_EXECUTOR"] = "inline"
    env.pop("BOOK_PLAN", None)
    env.pop(STATUS_ENV, None)
    return env


@contextmanager
def _environment(values: dict[str, str]):
    """``os.environ`` equal to ``values`` inside the block (only the differing keys are touched)."""
    saved = {k: os.environ.get(k) for k in set(values) | set(os.environ) if os.environ.get(k) != values.get(k)}
    for key in saved:
        if key in values:
            os.environ[key] = values[key]
        else:
            del os.environ[key]
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Failure:
    config: dict[str, Any]
    log: str
    tail: str

    def describe(self) -> str:
        return f"  config {short(self.config, 300)}\n    log {self.log}\n" + "".join(
            f"    | {line}\n" for line in self.tail.splitlines()[-6:])


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _run_pool(store, name, fn, todo, executor, progress):
    """Yield ``(index, outcome, log)`` as the pool's jobs end; outcome is a status or an exit code."""
    folder = executor.logs(store.profile, name)
    queue = list(todo.items())
    running: dict[int, tuple[subprocess.Popen, Path, Any]] = {}
    env = child_environment(executor.threads)
    try:
        while queue or running:
            while queue and len(running) < executor.workers:
                index, config = queue.pop(0)
                job_dir = folder / store.path(name, config).stem
                job_dir.mkdir(parents=True, exist_ok=True)
                (job_dir / "job.pkl").write_bytes(job_payload(store, name, config, fn))
                log = job_dir / "log.txt"
                handle = open(log, "w")
                proc = subprocess.Popen([sys.executable, "-m", "lib.sweep", str(job_dir / "job.pkl"),
                                         str(executor.threads)], stdout=handle, stderr=subprocess.STDOUT, env=env)
                running[index] = (proc, log, handle)
                progress.start(config)
            time.sleep(0.2)
            for index, (proc, log, handle) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                handle.close()
                del running[index]
                outcome = {0: "done", CLAIMED_EXIT: "claimed"}.get(code, f"exit code {code}")
                yield index, outcome, log
    finally:
        for proc, _, handle in running.values():  # interrupted: stop the jobs (their claims die with them)
            proc.kill()
            proc.wait()
            handle.close()


def submitit_executor(executor: Executor, name: str, folder: Path):
    """A ``submitit.AutoExecutor`` for Slurm (or its local stand-in) with the executor's resources."""
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster="slurm" if executor.kind == "slurm" else "local")
    parameters: dict[str, Any] = {"timeout_min": executor.time, "cpus_per_task": executor.threads,
                                  "name": f"book-{name}"}
    if executor.kind == "slurm":
        parameters.update(slurm_array_parallelism=executor.workers, gpus_per_node=executor.gpus)
        if executor.partition:
            parameters["slurm_partition"] = executor.partition
    ex.update_parameters(**parameters)
    return ex


def _run_submitit(store, name, fn, todo, executor, progress):
    """Yield ``(index, outcome, log)`` as the submitit jobs end (Slurm array, or local processes)."""
    ex = submitit_executor(executor, name, executor.logs(store.profile, name) / "submitit")
    items = list(todo.items())
    env = child_environment(executor.threads)
    running: dict[int, Any] = {}

    def submit(batch):
        payloads = [job_payload(store, name, config, fn) for _, config in batch]
        with _environment(env):  # local jobs and sbatch inherit the submitting environment
            jobs = ex.map_array(run_job, payloads, [executor.threads] * len(batch))
        for (index, config), job in zip(batch, jobs):
            running[index] = job
            progress.start(config)

    if executor.kind == "slurm":
        submit(items)  # one array; Slurm runs `workers` of its tasks at a time
        items = []
    try:
        while items or running:
            free = executor.workers - len(running)
            if items and free > 0:
                submit(items[:free])
                items = items[free:]
            time.sleep(0.5)
            for index, job in list(running.items()):
                if not job.done():
                    continue
                del running[index]
                try:
                    outcome = {"computed": "done", "present": "done", "claimed": "claimed"}[job.result()]
                except Exception as err:  # noqa: BLE001 - reported with the job's log, the others go on
                    outcome = f"{type(err).__name__}"
                yield index, outcome, Path(job.paths.stderr)
    finally:
        for job in running.values():
            job.cancel(check=False)


def run_on_executor(store: "ResultsStore", name: str, fn: Callable[..., Any], todo: dict[int, dict[str, Any]],
                    executor: Executor, progress: Progress) -> dict[int, dict[str, Any]]:
    """Compute the configurations ``todo`` (index -> config) on ``executor``; returns index -> record.

    Raises :class:`SweepFailed` after every other job has ended if any failed.
    """
    check_executor_available(executor)
    progress.parallel = executor.workers
    unique: dict[str, int] = {}
    for index, config in todo.items():  # one job per distinct configuration
        unique.setdefault(store.path(name, config).name, index)
    jobs = {index: todo[index] for index in unique.values()}
    runner = _run_pool if executor.kind == "pool" else _run_submitit
    records: dict[int, dict[str, Any]] = {}
    failures: list[Failure] = []
    claimed: list[int] = []
    for index, outcome, log in runner(store, name, fn, jobs, executor, progress):
        config = jobs[index]
        if outcome == "done" and (record := store.get(name, config)) is not None:
            records[index] = record
            progress.finish(config, record)
        elif outcome == "claimed":
            claimed.append(index)
            progress.skip(config, "claimed by another process; waited for at the end")
        else:
            failures.append(Failure(config, str(log), _tail(Path(log))))
            progress.fail(config, str(log))
    for index in claimed:  # computed elsewhere: wait for the claim, then read (or compute) the record
        records[index] = store.record(name, jobs[index], fn)
        progress.finish(jobs[index], records[index])
    if failures:
        raise SweepFailed(f"{len(failures)} of {len(jobs)} jobs of sweep {name!r} failed; the other "
                          f"{len(jobs) - len(failures)} are stored, and rerunning computes only what is missing:\n"
                          + "".join(f.describe() for f in failures))
    for index, config in todo.items():  # duplicates of a configuration share its record
        if index not in records:
            records[index] = records[unique[store.path(name, config).name]]
    return records


# --- dry runs ------------------------------------------------------------------------------------

def read_plan(path: str | Path) -> list[dict[str, Any]]:
    """The plan a dry run wrote, one row per experiment in order of first request: ``name``,
    ``profile``, ``configs``, ``present``, ``missing`` (configs), ``estimate`` (seconds for the
    missing ones, None where no finished record of the experiment gives a cost)."""
    from .store import ResultsStore

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    seen: set[tuple[str, str, str]] = set()
    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        entry = json.loads(line)
        key = (entry["root"], entry["name"])
        row = rows.setdefault(key, {"name": entry["name"], "profile": entry["profile"], "root": entry["root"],
                                    "configs": 0, "present": 0, "missing": []})
        if (*key, entry["hash"]) in seen:
            continue
        seen.add((*key, entry["hash"]))
        row["configs"] += 1
        if entry["present"]:
            row["present"] += 1
        else:
            row["missing"].append(entry["config"])
    for (root, name), row in rows.items():
        store = ResultsStore(row["profile"], root=Path(root).parent, read_only=True)
        store.plan = None
        finished = store.records(name) if row["missing"] else []
        estimates = [estimate_seconds(c, finished) for c in row["missing"]]
        row["estimate"] = None if any(e is None for e in estimates) else sum(estimates)
        row["unestimated"] = sum(e is None for e in estimates)
    return list(rows.values())


def format_plan(rows: list[dict[str, Any]], workers: int = 1) -> str:
    """The plan as a table, with the total estimated time on ``workers`` parallel jobs."""
    if not rows:
        return "the chapter asked the store for no experiments"
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'experiment':<{width}}  configs  stored  missing  estimated cost of the missing ones"]
    total, unknown = 0.0, 0
    for r in rows:
        missing = len(r["missing"])
        cost = duration(r["estimate"]) if missing and r["estimate"] is not None else (
            "-" if not missing else f"unknown for {r['unestimated']} (no finished record of {r['name']} yet)")
        lines.append(f"{r['name']:<{width}}  {r['configs']:>7}  {r['present']:>6}  {missing:>7}  {cost}")
        total += r["estimate"] or 0.0
        unknown += r["unestimated"]
    note = f"; {unknown} configuration(s) without an estimate" if unknown else ""
    lines.append(f"total: {sum(len(r['missing']) for r in rows)} configuration(s) to compute, about "
                 f"{duration(total)} of compute ({duration(total / workers)} on {workers} worker(s)){note}. "
                 "Estimates: mean wall seconds of the finished records of the same experiment nearest in "
                 "configuration.")
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    """``python -m lib.sweep JOB.pkl THREADS``: run one pool job (exit 0 stored, 3 claimed elsewhere)."""
    payload, threads = Path(argv[0]).read_bytes(), int(argv[1])
    outcome = run_job(payload, threads)
    return CLAIMED_EXIT if outcome == "claimed" else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
