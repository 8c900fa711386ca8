"""Run one chapter at a profile: ``python -m lib.run CHAPTER [--profile P] [-p NAME=VALUE ...]``.

The runner reads the chapter's MyST text notebook (jupytext), checks every
``-p`` against the chapter's ``parameters`` cell, the executor options and the
hardware *before any work starts* (nothing is trained, downloaded or written
before the checks pass), then executes it with papermill. The executed
notebook goes to ``_build/runs/<chapter>-<profile>.ipynb``; the chapter's
experiments write their records to the results store (``results/<profile>/``),
where the book build finds them.

Parameters are checked by name (unknown names are refused, listing the valid
ones), by type and by domain: a papermill type comment in the parameters cell
declares the domain (``seeds = None  # type: list[int[0,)]``, see
:mod:`lib.config` for the grammar); without one the default's type is required.

The chapter runs against the ``lib`` of the checkout the chapter belongs to
(its folder goes first on the kernel's ``PYTHONPATH``, whatever another clone
has pip-installed; a runner started from another checkout hands over to that
one) and writes into that checkout's ``results/``, or into ``$BOOK_RESULTS``
resolved from the directory the runner was started in. The runner says at
start which checkout, profile, device, store and executor it uses. A profile
meant for hardware the machine lacks (``gpu`` without CUDA) refuses to start
unless ``--force`` is given. While the chapter runs, a bar over its cells and
one line per configuration a sweep computes show progress.

Sweeps (:mod:`lib.sweep`): ``--dry-run`` lists every experiment the chapter
asks the store for, how many configurations are stored and missing and what
the missing ones should cost, without computing anything; ``--executor pool
--workers N --threads T`` runs a sweep's missing configurations on N local
processes, ``--executor slurm --partition P --gpus G --time MIN`` as a Slurm
job array (``submitit``), ``--executor submitit-local`` on the same path locally.

Examples::

    python -m lib.run chapters/nndl_s4/self_supervised_gaussian --profile smoke
    python -m lib.run chapters/nndl_s4/self_supervised_gaussian -p n_max=100000 -p seed=3
    python -m lib.run chapters/data_mining/vit_positions --dry-run
    python -m lib.run chapters/data_mining/vit_positions --executor pool --workers 2 --threads 1
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from .config import ConfigError, check_parameter, parse_parameter_type
from .profiles import PROFILES, default_profile

BOOK_ROOT = Path(__file__).resolve().parents[1]
HANDOVER_ENV = "BOOK_RUNNER_CHECKOUT"  # set when a runner hands a chapter over to its own checkout


class ParameterError(ValueError):
    """A ``-p`` name or value the chapter does not accept."""


class HardwareError(RuntimeError):
    """The profile needs hardware this machine does not have."""


def chapter_source(chapter: str | Path) -> Path:
    """The chapter's MyST source, given with or without its ``.md`` suffix."""
    path = Path(chapter)
    candidates = [path, path.with_suffix(".md")] if path.suffix != ".md" else [path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no chapter at {chapter!r} (looked for {', '.join(map(str, candidates))}); "
                            f"chapters are chapters/<part>/<name>, e.g. chapters/nndl_s4/self_supervised_gaussian")


def checkout_of(path: Path) -> Path | None:
    """The book checkout holding ``path`` (the nearest folder above it with ``lib/run.py``), or None."""
    for folder in Path(path).resolve().parents:
        if (folder / "lib" / "run.py").is_file() and (folder / "lib" / "__init__.py").is_file():
            return folder
    return None


def parse_value(text: str) -> Any:
    """A ``-p`` value as a Python literal (``3``, ``0.5``, ``[1, 2]``, ``None``), else the plain string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def check_parameters(declared: dict[str, Any], given: dict[str, Any]) -> None:
    """Raise :class:`ParameterError` for an unknown name, or a value of the wrong type or out of its domain.

    ``declared`` maps each name of the chapter's ``parameters`` cell to its default as
    source text, or to ``(default text, type comment or None)``.
    """
    declared = {name: info if isinstance(info, tuple) else (info, None) for name, info in declared.items()}
    listing = "\n".join(f"  {name} = {default}" + (f"  # type: {kind}" if kind else "")
                        for name, (default, kind) in declared.items())
    for name, value in given.items():
        if name not in declared:
            raise ParameterError(f"unknown parameter {name!r}. Valid parameters (with defaults):\n{listing}")
        if name == "profile":
            if value not in PROFILES:
                raise ParameterError(f"profile={value!r} is not a profile; valid: {', '.join(PROFILES)}")
            continue
        default_text, kind = declared[name]
        try:
            default = ast.literal_eval(default_text)
            literal = True
        except (ValueError, SyntaxError):
            default, literal = None, False  # an expression: only a type comment can say what it takes
        try:
            declared_type = parse_parameter_type(kind) if kind else None
            if literal or declared_type is not None:
                check_parameter(name, value, default if literal else object(), declared_type)
        except ConfigError as err:
            hint = (f"; -p values are read as Python literals, and {value!r} is not one, so it was taken as a "
                    f"string (quote lists for the shell: -p '{name}=[1, 2]')" if isinstance(value, str) else "")
            raise ParameterError(f"{err} (default: {name} = {default_text}){hint}") from None


def parameters_cell(notebook: Any) -> Any:
    """The cell tagged ``parameters`` of a notebook (nbformat), or ParameterError."""
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ParameterError("the chapter has no cell tagged 'parameters'")
    return cells[0]


def declared_parameters(notebook: Any) -> dict[str, tuple[str, str | None]]:
    """Name -> (default source text, type comment or None) of the ``parameters`` cell.

    ``notebook`` is an nbformat notebook or the path of an ``.ipynb``. Raises
    :class:`ParameterError` when the cell assigns a name that papermill's parser cannot
    read (e.g. an ``=`` inside the trailing comment), since such a parameter could not
    be overridden, and when a type comment is not in :mod:`lib.config`'s grammar.
    """
    from papermill.translators import PythonTranslator

    if isinstance(notebook, (str, Path)):
        import nbformat

        notebook = nbformat.read(notebook, as_version=4)
    cell = parameters_cell(notebook)
    found = {p.name: p for p in PythonTranslator.inspect(cell)}
    try:
        assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)]
    except SyntaxError as err:
        raise ParameterError(f"the parameters cell is not valid Python: {err}") from None
    unreadable = [name for name in assigned if name not in found]
    if unreadable:
        raise ParameterError(f"papermill cannot parse the parameters {unreadable}; keep each on one line as "
                             "`name = value  # type: T  comment` with no '=' in the comment")
    declared = {}
    for name, p in found.items():
        kind = p.inferred_type_name if p.inferred_type_name not in ("None", "") else None
        if kind is not None:
            try:
                parse_parameter_type(kind)
            except ConfigError as err:
                raise ParameterError(f"the parameters cell declares {name}: {err}") from None
        declared[name] = (p.default, kind)
    return declared


def check_hardware(profile: str, force: bool = False) -> str:
    """The device the chapter will use; raises :class:`HardwareError` for ``gpu`` without CUDA (unless forced)."""
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    if profile == "gpu" and not force:
        raise HardwareError("profile 'gpu' is the full-scale rerun for a CUDA machine, and this machine has no CUDA "
                            "device: on the CPU it would run for days. Use --profile cpu, or add --force to run "
                            "the gpu profile on the CPU anyway.")
    return "cpu"


def checkout_environment() -> dict[str, str]:
    """Environment for the kernel: this checkout's lib first on PYTHONPATH, absolute BOOK_RESULTS."""
    env = {"PYTHONPATH": os.pathsep.join([str(BOOK_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if os.environ.get("BOOK_RESULTS"):
        from .store import default_root

        env["BOOK_RESULTS"] = str(default_root())
    return env


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Monitor:
    """Prints the chapter's progress lines (``$BOOK_STATUS``, written by :mod:`lib.sweep`) as they come,
    and every ``heartbeat`` seconds without news says what is still running and for how long."""

    def __init__(self, path: Path, heartbeat: float = 60.0):
        self.path, self.heartbeat = path, heartbeat
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> "Monitor":
        self.path.write_text("")
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def _follow(self) -> None:
        from tqdm import tqdm

        from .sweep import duration

        position, running, last_said = 0, None, time.monotonic()
        while not self.stop_event.wait(1.0):
            try:
                with open(self.path) as f:
                    f.seek(position)
                    text = f.read()
                    position = f.tell()
            except OSError:
                continue
            now = time.monotonic()
            lines = [line for line in text.splitlines() if line.strip()]
            for line in lines:
                tqdm.write(f"  {line}", file=sys.stderr)
            if lines:
                last_said = now
                what = lines[-1].split(" ", 1)[-1]
                running = (what, now) if ": computing " in what else None
            elif running is not None and now - last_said >= self.heartbeat:
                tqdm.write(f"  ... still {running[0]} ({duration(now - running[1])} so far)", file=sys.stderr)
                last_said = now


def run_chapter(chapter: str | Path, profile: str, params: dict[str, Any], out_dir: Path,
                allow_errors: bool = False, notebook: Any = None, suffix: str = "") -> Path:
    """Execute ``chapter`` (checked beforehand by :func:`main`); returns the executed notebook's path."""
    import jupytext
    import papermill

    source = chapter_source(chapter).resolve()
    notebook = notebook if notebook is not None else jupytext.read(source)
    params = {**params, "profile": profile}
    check_parameters(declared_parameters(notebook), params)
    out_dir.mkdir(parents=True, exist_ok=True)
    input_nb = out_dir / f"{source.stem}.{os.getpid()}.input.ipynb"  # per process: runs of one chapter may overlap
    output_nb = out_dir / f"{source.stem}-{profile}{suffix}.ipynb"
    jupytext.write(notebook, input_nb)
    status = out_dir / f"{source.stem}.{os.getpid()}.status"
    try:
        with _environment({"BOOK_BATCH": os.environ.get("BOOK_BATCH", "1"), **checkout_environment(),
                           "BOOK_STATUS": str(status)}), Monitor(status):
            papermill.execute_notebook(
                str(input_nb), str(output_nb), parameters=params, kernel_name="python3",
                cwd=str(source.parent), progress_bar={"desc": source.stem, "unit": "cell", "leave": False},
                allow_errors=allow_errors,
            )
    finally:
        input_nb.unlink(missing_ok=True)
    return output_nb


def kernel_error(err: Exception, output: Path) -> str:
    """A short message for an exception raised inside the chapter (papermill reports the cell's error)."""
    ename, evalue = getattr(err, "ename", type(err).__name__), getattr(err, "evalue", str(err))
    cell = getattr(err, "exec_count", None)
    where = f"cell [{cell}] of the chapter" if cell else "the chapter"
    return f"{where} raised {ename}: {evalue}\n(the executed notebook with the traceback: {output})"


def _handover(chapter: Path, argv: list[str]) -> int | None:
    """When the chapter belongs to another checkout than this runner, rerun there; else None."""
    home = checkout_of(chapter)
    if home is None or home == BOOK_ROOT or os.environ.get(HANDOVER_ENV):
        return None
    print(f"note: {chapter} belongs to the checkout {home}, and this runner to {BOOK_ROOT}; "
          f"running it with {home}'s lib and store", file=sys.stderr, flush=True)
    env = {**os.environ, HANDOVER_ENV: str(home),
           "PYTHONPATH": os.pathsep.join([str(home), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if os.environ.get("BOOK_RESULTS"):
        from .store import default_root

        env["BOOK_RESULTS"] = str(default_root())
    return subprocess.call([sys.executable, "-m", "lib.run", *argv], env=env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib.run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("Examples::")[1])
    parser.add_argument("chapter", help="chapters/<part>/<name>[.md]")
    parser.add_argument("--profile", default=None, choices=PROFILES, help="default: $BOOK_PROFILE or cpu")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter of the chapter's parameters cell (repeatable)")
    parser.add_argument("--out", default=str(BOOK_ROOT / "_build" / "runs"), help="where the executed notebook goes")
    parser.add_argument("--force", action="store_true", help="run the gpu profile even without a CUDA device")
    parser.add_argument("--check", action="store_true", help="check the chapter, parameters and options, then stop")
    sweeps = parser.add_argument_group("sweeps (see lib.sweep)")
    sweeps.add_argument("--dry-run", action="store_true",
                        help="list the chapter's configurations, stored and missing, with estimated costs; compute nothing")
    sweeps.add_argument("--executor", default=None, choices=("inline", "pool", "slurm", "submitit-local"),
                        help="where a sweep's missing configurations run (default: inline)")
    sweeps.add_argument("--workers", type=int, default=None, help="jobs at a time (pool, submitit-local, Slurm array)")
    sweeps.add_argument("--threads", type=int, default=None, help="torch threads per job (CPUs per Slurm task)")
    sweeps.add_argument("--partition", default=None, help="Slurm partition")
    sweeps.add_argument("--gpus", type=int, default=None, help="GPUs per Slurm task")
    sweeps.add_argument("--time", type=int, default=None, metavar="MIN", help="Slurm time limit per job, minutes")
    sweeps.add_argument("--log-dir", default=None, help="job logs (default: _build/sweep-logs)")
    return parser


def executor_from_args(args: argparse.Namespace):
    """The :class:`lib.sweep.Executor` the options describe (ConfigError naming a bad one)."""
    from .sweep import Executor

    kind = args.executor or "inline"
    cpus = os.cpu_count() or 1
    # default workers: one inline; as many 1-thread jobs as cores on a local pool; a large Slurm array
    default = {"inline": 1, "slurm": 256}.get(kind, max(1, cpus // (args.threads or 1)))
    workers = args.workers if args.workers is not None else default
    given = {"kind": kind, "workers": workers, "threads": args.threads if args.threads is not None else 1,
             "partition": args.partition, "gpus": args.gpus if args.gpus is not None else 0,
             "time": args.time if args.time is not None else 60,
             "log_dir": str(Path(args.log_dir).resolve()) if args.log_dir else None}
    if kind == "inline" and (args.workers or args.threads):
        raise ConfigError("--workers and --threads are for --executor pool, slurm or submitit-local; "
                          "the inline executor runs one configuration at a time in the chapter's process")
    return Executor(**given)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            parser.error(f"-p takes NAME=VALUE, got {item!r}")
        params[name.strip()] = parse_value(value.strip())
    profile = params.pop("profile", None) or args.profile or os.environ.get("BOOK_PROFILE") or "cpu"
    from .store import ResultsStore, StoreError

    try:
        source = chapter_source(args.chapter)
        handed = _handover(source, argv)
        if handed is not None:
            return handed
        import jupytext

        if profile not in PROFILES:
            raise ParameterError(f"profile={profile!r} is not a profile; valid: {', '.join(PROFILES)}")
        notebook = jupytext.read(source)
        check_parameters(declared_parameters(notebook), {**params, "profile": profile})
        executor = executor_from_args(args)
        from .sweep import check_executor_available

        check_executor_available(executor)
        device = check_hardware(profile, args.force)
        with _environment(checkout_environment()):
            store = ResultsStore(profile).root
        read_only = " (read-only)" if os.environ.get("BOOK_READ_ONLY") == "1" else ""
        mode = "dry run: lists the configurations, computes nothing" if args.dry_run else executor.describe()
        print(f"checkout {BOOK_ROOT}\nprofile {profile}, device {device}\nstore {store}{read_only}\n"
              f"executor {mode}", flush=True)
    except (ParameterError, FileNotFoundError, HardwareError, ConfigError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        print("check: the chapter, its parameters and the options are valid; nothing was run")
        return 0
    out_dir = Path(args.out).resolve()
    env = executor.to_env()
    plan = None
    if args.dry_run:
        plan = Path(tempfile.mkstemp(prefix="book-plan-", suffix=".jsonl")[1])
        env = {"BOOK_PLAN": str(plan)}
    suffix = "-dry-run" if args.dry_run else ""
    output = out_dir / f"{source.stem}-{profile}{suffix}.ipynb"
    from papermill.exceptions import PapermillExecutionError

    try:
        with _environment(env):
            run_chapter(source, profile, params, out_dir, allow_errors=args.dry_run, notebook=notebook, suffix=suffix)
    except PapermillExecutionError as err:
        if plan is None:
            print(f"error: {kernel_error(err, output)}", file=sys.stderr)
            return 1
        print(f"note: cells that need missing records raised errors, as expected in a dry run "
              f"(first: {err.ename}); later experiments that depend on them are not listed", file=sys.stderr)
    finally:
        if plan is not None:
            from .sweep import format_plan, read_plan

            try:
                print(format_plan(read_plan(plan), workers=executor.workers if executor.kind != "inline" else 1))
            finally:
                plan.unlink(missing_ok=True)
    print(f"executed notebook: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
