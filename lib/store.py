"""The results store: small JSON records keyed by a readable name and a configuration hash.

Every experiment in the book is a function ``config -> result`` whose result is
small (metrics, histories, a few arrays as lists; never weights). The store keeps
one record per ``(name, config)`` at::

    <root>/<profile>/<name>/<name>-<sha256(config)[:12]>.json

written atomically (temporary file, then ``os.replace``), so a killed run leaves
either a complete record or none. :meth:`ResultsStore.load_or_run` returns the
stored result when the record exists and only computes it otherwise; a sweep
over many configurations therefore resumes where it was killed, and a book build
with committed records does no training at all.

Configurations are normalised before they are hashed: an experiment function
marked with :func:`lib.config.takes` has every default filled in, unknown keys
rejected and values canonicalised, so two spellings of one experiment share a
record. A sweep validates all its configurations before it runs the first.

Two processes on one store never compute the same configuration twice: the
one that computes it holds an exclusive lock on ``<root>/<profile>/.claims/<record
name>.claim`` (``fcntl.flock``, released by the kernel if the process dies); a sweep
skips configurations claimed by someone else and comes back to them at the end.

The default root is ``results/`` of the checkout this ``lib`` belongs to;
``$BOOK_RESULTS`` overrides it (a relative path is resolved against the
directory the process started in). ``results/cpu`` is committed;
``results/smoke`` is CI scratch.

With ``BOOK_READ_ONLY=1`` (the book build sets it) the store never computes:
a missing record raises :class:`MissingResult` in :meth:`ResultsStore.record`,
and :meth:`ResultsStore.sweep` returns the records it has, so a page whose
sweep is unfinished renders what is finished instead of training for hours.
With ``BOOK_PLAN=<file>`` (``python -m lib.run --dry-run``) the store is
read-only too and appends one JSON line per configuration it is asked for
(experiment, configuration, whether its record exists) to that file.

A sweep's missing configurations run where ``$BOOK_EXECUTOR`` says (see
:mod:`lib.sweep`): in this process (``inline``, the default), on a local pool
of worker processes, or as Slurm jobs through ``submitit``; each job computes
one configuration under its claim and writes its record here.

Training functions that checkpoint (:mod:`lib.checkpoint`) keep their files in
``<root>/<profile>/.checkpoints/``; a record computed across interrupted runs
counts the time of every segment and says ``resumed_from_step``.

A record is trusted only if it is valid JSON, has ``config`` and ``result``,
sits under the name its configuration hashes to and holds only finite numbers;
anything else raises :class:`StoreError` naming the file and the fix.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import checkpoint_scope, resumed_time
from .config import config_class_of, normalise
from .profiles import check_profile
from .provenance import Clock, machine_name, provenance

if TYPE_CHECKING:
    from .sweep import Executor

ENV_VAR = "BOOK_RESULTS"
READ_ONLY_ENV = "BOOK_READ_ONLY"
PLAN_ENV = "BOOK_PLAN"
BOOK_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = BOOK_ROOT / "results"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


def _to_json(value: Any) -> Any:
    """``json.dumps`` fallback for numpy / torch scalars and arrays."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"results must be JSON-serialisable; got {type(value).__name__}: {value!r:.80}")


def canonical_json(config: dict[str, Any]) -> str:
    """The configuration as JSON with sorted keys: equal configs give equal strings."""
    return json.dumps(config, sort_keys=True, default=_to_json, separators=(",", ":"))


def config_hash(config: dict[str, Any]) -> str:
    """First 12 hex digits of the SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


def normalised(config: dict[str, Any], fn: Callable[..., Any] | None) -> dict[str, Any]:
    """``config`` in the canonical form the store hashes: through the function's configuration
    class when it declares one (:func:`lib.config.takes`), else as canonical JSON."""
    if not isinstance(config, dict):
        raise TypeError(f"config={config!r:.80} is not allowed: a configuration must be a dict")
    config_class = config_class_of(fn) if fn is not None else None
    if config_class is not None:
        return normalise(config_class, config)
    return json.loads(canonical_json(config))


def non_finite(value: Any, where: str = "result") -> str | None:
    """The path of the first NaN or infinite number inside ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = ((f"{where}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((bad for path, v in items if (bad := non_finite(v, path)) is not None), None)


class StoreError(RuntimeError):
    """A record that cannot be used; the message names the file and what to do."""


class MissingResult(LookupError):
    """A record is missing and the store is read-only."""


class NonFiniteResult(ValueError):
    """An experiment returned NaN or an infinity; no record is written."""


def chapter_for(name: str) -> str | None:
    """The chapter whose source mentions experiment ``name`` (to say which command produces it)."""
    for source in sorted((BOOK_ROOT / "chapters").glob("*/*.md")):
        if f'"{name}"' in source.read_text(errors="replace"):
            return str(source.relative_to(BOOK_ROOT).with_suffix(""))
    return None


def _how_to_produce(name: str, profile: str) -> str:
    chapter = chapter_for(name)
    target = chapter or "<the chapter that runs it>"
    return f"python -m lib.run {target} --profile {profile}"


def default_root() -> Path:
    """``$BOOK_RESULTS`` or this checkout's ``results/``.

    A relative ``$BOOK_RESULTS`` is taken from the directory the user typed the command in
    (``$PWD``, which the shell sets and which survives the chapter kernel's change of
    directory), else from the current directory.
    """
    given = os.environ.get(ENV_VAR)
    if not given:
        return DEFAULT_ROOT
    path = Path(given).expanduser()
    if not path.is_absolute():
        typed_in = os.environ.get("PWD")
        base = Path(typed_in) if typed_in and Path(typed_in).is_dir() else Path.cwd()
        path = base / path
    return path.resolve()


def _check_function(fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"fn={fn!r:.80} is not allowed: the experiment must be a function config -> result")


class ResultsStore:
    """One directory of JSON records for one profile.

    >>> store = ResultsStore(profile="cpu")                         # doctest: +SKIP
    >>> result = store.load_or_run("gauss", {"n": 100}, simulate)   # doctest: +SKIP
    """

    def __init__(self, profile: str, root: str | Path | None = None, read_only: bool | None = None):
        self.profile = check_profile(profile)
        if root is not None and not isinstance(root, (str, Path)):
            raise TypeError(f"root={root!r} is not allowed: root must be a path (str or Path) or None "
                            f"for ${ENV_VAR} or results/")
        self.root = (Path(root).expanduser().resolve() if root is not None else default_root()) / profile
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the store {self.root} is a file, not a directory; set ${ENV_VAR} to a directory")
        plan = os.environ.get(PLAN_ENV)
        self.plan = Path(plan) if plan else None
        if read_only is None:
            read_only = os.environ.get(READ_ONLY_ENV) == "1"
        self.read_only = read_only or self.plan is not None

    @classmethod
    def committed(cls, profile: str = "cpu") -> "ResultsStore":
        """The read-only store of the records committed with this checkout (``results/<profile>``),
        whatever ``$BOOK_RESULTS`` says: chapters check their claims on it at every profile."""
        return cls(profile, root=DEFAULT_ROOT, read_only=True)

    def path(self, name: str, config: dict[str, Any], fn: Callable[..., Any] | None = None) -> Path:
        """Where the record of ``(name, config)`` lives (whether or not it exists)."""
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(f"experiment name {name!r}: use letters, digits, '.', '_' or '-'")
        return self.root / name / f"{name}-{config_hash(normalised(config, fn))}.json"

    def _read(self, path: Path) -> dict[str, Any]:
        """The record at ``path``, checked; :class:`StoreError` naming the file and the fix if unusable."""
        name = path.parent.name
        fix = f"delete it to recompute it: rm {path} && {_how_to_produce(name, self.profile)}"
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise StoreError(f"record {path} is not valid JSON ({err}); {fix}") from err
        except OSError as err:
            raise StoreError(f"record {path} cannot be read ({err}); check its permissions, or {fix}") from err
        missing = [k for k in ("config", "result") if not isinstance(record, dict) or k not in record]
        if missing:
            raise StoreError(f"record {path} lacks {missing}; {fix}")
        if not isinstance(record["config"], dict):
            raise StoreError(f"record {path} has a config that is not a dict; {fix}")
        expected = f"{name}-{config_hash(record['config'])}.json"
        if path.name != expected:
            raise StoreError(f"record {path} holds a configuration that hashes to {expected}, not to its own "
                             f"name (edited by hand, or written by another version of lib); {fix}")
        bad = non_finite(record["result"])
        if bad is not None:
            raise StoreError(f"record {path} holds a non-finite number at {bad}; {fix}")
        return record

    def _plan(self, name: str, config: dict[str, Any], present: bool) -> None:
        """In a dry run, note that the chapter asked for ``(name, config)``."""
        if self.plan is None:
            return
        line = json.dumps({"name": name, "profile": self.profile, "root": str(self.root), "config": config,
                           "hash": config_hash(config), "present": present}, default=_to_json)
        with open(self.plan, "a") as f:
            f.write(line + "\n")

    def get(self, name: str, config: dict[str, Any], fn: Callable[..., Any] | None = None) -> dict[str, Any] | None:
        """The stored record (``config``, ``result``, ``seconds``, ...) or ``None``."""
        path = self.path(name, config, fn)
        return self._read(path) if path.exists() else None

    def put(self, name: str, config: dict[str, Any], result: Any, seconds: float,
            fn: Callable[..., Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the record atomically and return it. Refuses NaN or infinite numbers in ``result``."""
        config = normalised(config, fn)
        path = self.path(name, config)
        result = json.loads(json.dumps(result, default=_to_json))  # numpy, torch -> plain JSON
        bad = non_finite(result)
        if bad is not None:
            raise NonFiniteResult(f"{name} with config {canonical_json(config)} produced a non-finite number at "
                                  f"{bad}; no record written (lower the learning rate, or check the inputs)")
        record = {
            "name": name,
            "profile": self.profile,
            "config": config,
            "result": result,
            "seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        }
        text = json.dumps(record, indent=1, sort_keys=True, default=_to_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text + "\n")
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; records are meant to be shared
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return json.loads(text)

    @contextmanager
    def claim(self, path: Path, wait: bool) -> Iterator[bool]:
        """Hold the exclusive claim on the record at ``path``: yields True when held.

        With ``wait=False`` yields False at once if another process holds it.
        The claim is an ``flock`` on ``.claims/<record name>.claim``, which the kernel
        releases when the holder exits, so a crashed run never blocks others.
        """
        claims = self.root / ".claims"
        claims.mkdir(parents=True, exist_ok=True)
        with open(claims / f"{path.stem}.claim", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                handle.truncate(0)
                handle.write(f"{os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
                handle.flush()
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _compute(self, name: str, config: dict[str, Any], fn: Callable[[dict[str, Any]], Any],
                 wait: bool = True) -> dict[str, Any] | None:
        """Compute and store one record under its claim; None if another process holds the claim."""
        path = self.path(name, config)
        with self.claim(path, wait) as held:
            if not held:
                return None
            if path.exists():  # finished by another process while we waited
                return self._read(path)
            clock = Clock()
            with checkpoint_scope(self.root / ".checkpoints", record=path.stem) as scope:
                result = fn(config)
            seconds = clock.stop()
            resumed = resumed_time(scope)
            if resumed is not None:  # count the interrupted segments too, and say where each ran
                here = {"machine": machine_name(), "from_step": resumed["resumed_from_step"], **seconds}
                seconds.update(wall_seconds=round(seconds["wall_seconds"] + resumed["wall_seconds"], 3),
                               cpu_seconds=round(seconds["cpu_seconds"] + resumed["cpu_seconds"], 3),
                               resumed_from_step=resumed["resumed_from_step"],
                               segments=resumed["segments"] + [here])
            record = self.put(name, config, result, seconds["wall_seconds"],
                              extra={"provenance": {**provenance(), **seconds}})
            for finished in scope["discard"]:  # see lib.checkpoint.record_checkpoint
                finished.unlink(missing_ok=True)
            return record

    def record(self, name: str, config: dict[str, Any], fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """The stored record of ``(name, config)``; computes ``fn(config)`` and stores it if missing."""
        _check_function(fn)
        config = normalised(config, fn)
        path = self.path(name, config)
        self._plan(name, config, path.exists())
        if path.exists():
            return self._read(path)
        if self.read_only:
            raise MissingResult(f"no record {path} for {name} with config {canonical_json(config)} "
                                f"(the store is read-only); produce it with: {_how_to_produce(name, self.profile)}")
        record = self._compute(name, config, fn)
        assert record is not None  # waited for the claim
        return record

    def load_or_run(self, name: str, config: dict[str, Any], fn: Callable[[dict[str, Any]], Any]) -> Any:
        """``fn(config)``'s result, from the store when it holds one, else computed and stored."""
        return self.record(name, config, fn)["result"]

    def sweep(
        self, name: str, configs: Iterable[dict[str, Any]], fn: Callable[[dict[str, Any]], Any],
        executor: "Executor | None" = None,
    ) -> list[dict[str, Any]]:
        """:meth:`record` over many configs; returns the records in the order of ``configs``.

        Every configuration is validated before the first runs. The missing ones
        run on ``executor`` (default: :meth:`lib.sweep.Executor.from_env`, in this
        process unless ``$BOOK_EXECUTOR`` says otherwise), one record each, with
        one progress bar over the configurations. Each finished configuration is
        stored before the next starts, so a killed sweep loses only what it was
        computing; configurations another process is computing are skipped and
        waited for at the end. A read-only store returns only the records it holds.
        """
        from .sweep import Executor, Progress, run_on_executor

        _check_function(fn)
        if isinstance(configs, (dict, str)) or not isinstance(configs, Iterable):
            raise TypeError(f"configs={configs!r:.80} is not allowed: sweep takes a list of configuration dicts")
        configs = [normalised(c, fn) for c in configs]
        self.path(name, {})  # checks the name
        executor = Executor.from_env() if executor is None else executor
        present = [self.path(name, c).exists() for c in configs]
        for config, there in zip(configs, present):
            self._plan(name, config, there)
        if self.read_only:
            return [r for r in (self.get(name, config) for config in configs) if r is not None]
        records: dict[int, dict[str, Any]] = {i: self._read(self.path(name, c))
                                              for i, (c, there) in enumerate(zip(configs, present)) if there}
        todo = [i for i in range(len(configs)) if i not in records]
        if todo:
            progress = Progress(name, total=len(configs), done=len(records),
                                finished=[r for r in records.values()])
            try:
                if executor.kind == "inline":
                    deferred = []
                    for index in todo:
                        progress.start(configs[index])
                        record = self.get(name, configs[index]) or self._compute(name, configs[index], fn, wait=False)
                        if record is None:
                            deferred.append(index)
                            progress.skip(configs[index], "claimed by another process; waited for at the end")
                        else:
                            records[index] = record
                            progress.finish(configs[index], record)
                    for index in deferred:
                        records[index] = self.record(name, configs[index], fn)
                        progress.finish(configs[index], records[index])
                else:
                    records.update(run_on_executor(self, name, fn, {i: configs[i] for i in todo}, executor, progress))
            finally:
                progress.close()
        return [records[i] for i in range(len(configs))]

    def records(self, name: str) -> list[dict[str, Any]]:
        """Every stored record of experiment ``name`` (any config), oldest first."""
        paths = sorted((self.root / name).glob(f"{name}-*.json"))
        return sorted((self._read(p) for p in paths), key=lambda r: r["created"])
