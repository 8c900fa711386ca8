"""Run one chapter at a profile: ``python -m lib.run CHAPTER [--profile P] [-p NAME=VALUE ...]``.

The runner converts the chapter's MyST text notebook to ``.ipynb`` (jupytext),
checks every ``-p`` against the names and default values of the chapter's
``parameters`` cell *before any work starts*, then executes it with papermill.
The executed notebook goes to ``_build/runs/<chapter>-<profile>.ipynb``; the
chapter's experiments write their records to the results store
(``results/<profile>/``), where the book build finds them.

The chapter runs against the ``lib`` of the checkout this runner belongs to
(its folder goes first on the kernel's ``PYTHONPATH``, whatever another clone
has pip-installed) and writes into that checkout's ``results/``, or into
``$BOOK_RESULTS`` resolved from the directory the runner was started in. The
runner says at start which checkout, profile, device and store it uses. A
profile meant for hardware the machine lacks (``gpu`` without CUDA) refuses to
start unless ``--force`` is given.

Examples::

    python -m lib.run chapters/nndl_s4/self_supervised_gaussian --profile smoke
    python -m lib.run chapters/nndl_s4/self_supervised_gaussian -p n_max=100000 -p seed=3
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from .profiles import PROFILES, default_profile

BOOK_ROOT = Path(__file__).resolve().parents[1]


class ParameterError(ValueError):
    """A ``-p`` name or value the chapter does not accept."""


def chapter_source(chapter: str | Path) -> Path:
    """The chapter's MyST source, given with or without its ``.md`` suffix."""
    path = Path(chapter)
    candidates = [path, path.with_suffix(".md")] if path.suffix != ".md" else [path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no chapter at {chapter!r} (looked for {', '.join(map(str, candidates))})")


def parse_value(text: str) -> Any:
    """A ``-p`` value as a Python literal (``3``, ``0.5``, ``[1, 2]``, ``None``), else the plain string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def check_parameters(declared: dict[str, Any], given: dict[str, Any]) -> None:
    """Raise :class:`ParameterError` for an unknown name or a value of the wrong type.

    ``declared`` maps each name of the chapter's ``parameters`` cell to its default
    as source text (what papermill's ``inspect_notebook`` reports).
    """
    listing = "\n".join(f"  {name} = {default}" for name, default in declared.items())
    for name, value in given.items():
        if name not in declared:
            raise ParameterError(f"unknown parameter {name!r}. Valid parameters (with defaults):\n{listing}")
        if name == "profile":
            if value not in PROFILES:
                raise ParameterError(f"profile={value!r} is not a profile; valid: {', '.join(PROFILES)}")
            continue
        try:
            default = ast.literal_eval(declared[name])
        except (ValueError, SyntaxError):
            continue  # the default is an expression: accept any value
        if not _type_ok(value, default):
            raise ParameterError(
                f"{name}={value!r} has type {type(value).__name__}, but its default {declared[name]} "
                f"is a {type(default).__name__}. Valid parameters (with defaults):\n{listing}"
            )


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """Names and default source text of the ``parameters`` cell of an ``.ipynb``.

    Raises :class:`ParameterError` when the cell assigns a name that papermill's
    parser cannot read (e.g. a quote inside a trailing comment), since such a
    parameter could not be overridden.
    """
    import nbformat
    import papermill

    found = papermill.inspect_notebook(str(notebook))
    cells = [c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ParameterError(f"{notebook} has no cell tagged 'parameters'")
    assigned = [t.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    unreadable = [name for name in assigned if name not in found]
    if unreadable:
        raise ParameterError(f"papermill cannot parse the parameters {unreadable} of {notebook}; "
                             "keep each on one line as `name = value  # comment` with no '=' in the comment")
    return {name: info["default"] for name, info in found.items()}


class HardwareError(RuntimeError):
    """The profile needs hardware this machine does not have."""


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
        env["BOOK_RESULTS"] = str(Path(os.environ["BOOK_RESULTS"]).resolve())
    return env


def run_chapter(chapter: str | Path, profile: str, params: dict[str, Any], out_dir: Path) -> Path:
    """Convert, check and execute ``chapter``; returns the executed notebook's path."""
    import jupytext
    import papermill

    source = chapter_source(chapter).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    input_nb = out_dir / f"{source.stem}.{os.getpid()}.input.ipynb"  # per process: runs of one chapter may overlap
    jupytext.write(jupytext.read(source), input_nb)
    try:
        params = {**params, "profile": profile}
        check_parameters(declared_parameters(input_nb), params)
        output_nb = out_dir / f"{source.stem}-{profile}.ipynb"
        os.environ.setdefault("BOOK_BATCH", "1")
        os.environ.update(checkout_environment())
        papermill.execute_notebook(
            str(input_nb), str(output_nb), parameters=params, kernel_name="python3",
            cwd=str(source.parent), progress_bar=False,
        )
    finally:
        input_nb.unlink(missing_ok=True)
    return output_nb


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", help="chapters/<part>/<name>[.md]")
    parser.add_argument("--profile", default=None, choices=PROFILES, help="default: $BOOK_PROFILE or cpu")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter of the chapter's parameters cell (repeatable)")
    parser.add_argument("--out", default=str(BOOK_ROOT / "_build" / "runs"), help="where the executed notebook goes")
    parser.add_argument("--force", action="store_true", help="run the gpu profile even without a CUDA device")
    args = parser.parse_args(argv)
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"-p takes NAME=VALUE, got {item!r}")
        params[name.strip()] = parse_value(value)
    profile = params.pop("profile", None) or args.profile or default_profile()
    try:
        chapter_source(args.chapter)
        if profile not in PROFILES:
            raise ParameterError(f"profile={profile!r} is not a profile; valid: {', '.join(PROFILES)}")
        device = check_hardware(profile, args.force)
        from .store import ResultsStore

        with _environment(checkout_environment()):
            store = ResultsStore(profile).root
        read_only = " (read-only)" if os.environ.get("BOOK_READ_ONLY") == "1" else ""
        print(f"checkout {BOOK_ROOT}\nprofile {profile}, device {device}\nstore {store}{read_only}", flush=True)
        output = run_chapter(args.chapter, profile, params, Path(args.out).resolve())
    except (ParameterError, FileNotFoundError, HardwareError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"executed notebook: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
