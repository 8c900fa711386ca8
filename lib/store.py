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

The default root is ``results/`` at the top of the book (``$BOOK_RESULTS``
overrides it). ``results/cpu`` is committed; ``results/smoke`` is CI scratch.

With ``BOOK_READ_ONLY=1`` (the book build sets it) the store never computes:
a missing record raises :class:`MissingResult` in :meth:`ResultsStore.record`,
and :meth:`ResultsStore.sweep` returns the records it has, so a page whose
sweep is unfinished renders what is finished instead of training for hours.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import __version__
from .profiles import check_profile

ENV_VAR = "BOOK_RESULTS"
READ_ONLY_ENV = "BOOK_READ_ONLY"
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "results"


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


class MissingResult(LookupError):
    """A record is missing and the store is read-only."""


class ResultsStore:
    """One directory of JSON records for one profile.

    >>> store = ResultsStore(profile="cpu")                         # doctest: +SKIP
    >>> result = store.load_or_run("gauss", {"n": 100}, simulate)   # doctest: +SKIP
    """

    def __init__(self, profile: str, root: str | Path | None = None, read_only: bool | None = None):
        root = Path(root or os.environ.get(ENV_VAR) or DEFAULT_ROOT)
        self.profile = check_profile(profile)
        self.root = root / profile
        self.read_only = os.environ.get(READ_ONLY_ENV) == "1" if read_only is None else read_only

    def path(self, name: str, config: dict[str, Any]) -> Path:
        """Where the record of ``(name, config)`` lives (whether or not it exists)."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"experiment name {name!r}: use letters, digits, '.', '_' or '-'")
        return self.root / name / f"{name}-{config_hash(config)}.json"

    def get(self, name: str, config: dict[str, Any]) -> dict[str, Any] | None:
        """The stored record (``config``, ``result``, ``seconds``, ...) or ``None``."""
        path = self.path(name, config)
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def put(self, name: str, config: dict[str, Any], result: Any, seconds: float) -> dict[str, Any]:
        """Write the record atomically and return it."""
        path = self.path(name, config)
        record = {
            "name": name,
            "profile": self.profile,
            "config": json.loads(canonical_json(config)),
            "result": result,
            "seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "lib_version": __version__,
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

    def record(self, name: str, config: dict[str, Any], fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """The stored record of ``(name, config)``; computes ``fn(config)`` and stores it if missing."""
        record = self.get(name, config)
        if record is None and self.read_only:
            raise MissingResult(f"no record for {name} with config {canonical_json(config)} in {self.root} (read-only)")
        if record is None:
            start = time.perf_counter()
            result = fn(config)
            record = self.put(name, config, result, time.perf_counter() - start)
        return record

    def load_or_run(self, name: str, config: dict[str, Any], fn: Callable[[dict[str, Any]], Any]) -> Any:
        """``fn(config)``'s result, from the store when it holds one, else computed and stored."""
        return self.record(name, config, fn)["result"]

    def sweep(
        self, name: str, configs: Iterable[dict[str, Any]], fn: Callable[[dict[str, Any]], Any]
    ) -> list[dict[str, Any]]:
        """:meth:`record` over many configs, in order.

        Each finished configuration is stored before the next starts, so a killed
        sweep loses only the configuration it was computing. A read-only store
        returns only the records it holds.
        """
        if self.read_only:
            return [r for r in (self.get(name, config) for config in configs) if r is not None]
        return [self.record(name, config, fn) for config in configs]

    def records(self, name: str) -> list[dict[str, Any]]:
        """Every stored record of experiment ``name`` (any config), oldest first."""
        paths = sorted((self.root / name).glob(f"{name}-*.json"))
        return sorted((json.loads(p.read_text()) for p in paths), key=lambda r: r["created"])
