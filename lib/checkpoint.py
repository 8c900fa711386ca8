"""Training checkpoints: a killed run resumes at its last checkpoint, bit for bit.

The results store resumes a sweep by record (a finished configuration is never
rerun), but a single run of several CPU-hours killed at 90% would start over.
:func:`lib.train.fit` therefore saves, when given a ``checkpoint`` file, every
piece of state its next step depends on (weights, optimiser and scheduler,
history, torch's global and batch generators, and the caller's own state such
as a numpy data stream) every ``checkpoint_seconds`` of wall-clock time, and a
run started with the same file continues from it. The continued run computes
the same steps as one that was never interrupted (``tests/test_train.py``).

The store computes every record inside :func:`checkpoint_scope`, so training
functions ask :func:`checkpoint_file` for a file under
``<store>/<profile>/.checkpoints/`` (``None`` outside the store), and the record
of a resumed run counts the CPU and wall-clock time of the interrupted segments
too (:func:`resumed_time`; its provenance says ``resumed_from_step``).

Files are written atomically (temporary file, then ``os.replace``): a run
killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
"""Version of the checkpoint layout; a file of another version is refused, not misread."""

_SCOPE: ContextVar[dict[str, Any] | None] = ContextVar("checkpoint_scope", default=None)


@contextlib.contextmanager
def checkpoint_scope(directory: str | os.PathLike, record: str | None = None) -> Iterator[dict[str, Any]]:
    """Within the block, :func:`checkpoint_file` names files in ``directory``; yields the
    scope, whose ``"resumed"`` entry a resumed :func:`lib.train.fit` fills (see :func:`resumed_time`).

    ``record`` is the name of the record being computed (the store passes its file stem);
    :func:`record_checkpoint` names a file after it and lists it in ``"discard"``, for the
    store to delete once the record is written."""
    scope: dict[str, Any] = {"directory": Path(directory), "resumed": None, "record": record, "discard": []}
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def checkpoint_file(name: str) -> Path | None:
    """``<directory>/<name>.pt`` inside a :func:`checkpoint_scope`, else ``None`` (no checkpoints)."""
    scope = _SCOPE.get()
    return None if scope is None else scope["directory"] / f"{name}.pt"


def record_checkpoint() -> Path | None:
    """``<directory>/<record>.pt`` for a run that cannot be continued once finished (a decaying
    schedule): named after the record being computed, so two experiments that train the same
    configuration never share a file, and deleted by the store after it writes the record (a run
    killed during its final evaluation still resumes). ``None`` outside a store's scope."""
    scope = _SCOPE.get()
    if scope is None or scope["record"] is None:
        return None
    path = scope["directory"] / f"{scope['record']}.pt"
    scope["discard"].append(path)
    return path


def note_resumed(step: int, wall_seconds: float, cpu_seconds: float,
                 segments: list[dict[str, Any]] | None = None) -> None:
    """Called by :func:`lib.train.fit` when it resumes: the step, the time already spent, and
    the earlier segments (``machine``, ``from_step``, ``to_step``, ``cpu_seconds``, ``wall_seconds``)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope["resumed"] = {"resumed_from_step": step, "wall_seconds": wall_seconds, "cpu_seconds": cpu_seconds,
                            "segments": list(segments or [])}


def resumed_here() -> dict[str, Any] | None:
    """:func:`resumed_time` of the current scope (``None`` outside a scope or without a resume)."""
    scope = _SCOPE.get()
    return None if scope is None else scope["resumed"]


def resumed_time(scope: dict[str, Any]) -> dict[str, Any] | None:
    """``{"resumed_from_step", "wall_seconds", "cpu_seconds"}`` of the segments before a resume
    within ``scope``, or ``None`` when the run started from scratch."""
    return scope["resumed"]


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike) -> dict[str, Any] | None:
    """The state saved at ``path``, or ``None`` when there is no file. A file of another
    :data:`FORMAT` or one that does not load raises ``ValueError`` naming it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, do not guess
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"checkpoint {path} does not load ({type(error).__name__}: {first_line}); "
                         f"delete it to start the run over") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a format-{FORMAT} training checkpoint; "
                         f"delete it to start the run over")
    return state
