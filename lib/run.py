"""Run one chapter at a profile: ``python -m lib.run CHAPTER [--profile P] [-p NAME=VALUE ...]``.

The runner converts the chapter's MyST text notebook to ``.ipynb`` (jupytext),
checks every ``-p`` against the names and default values of the chapter's
``parameters`` cell *before any work starts*, then executes it with papermill.
The executed notebook goes to ``_build/runs/<chapter>-<profile>.ipynb``; the
chapter's experiments write their records to the results store
(``results/<profile>/``), where the book build finds them.

Examples::

    python -m lib.run chapters/nndl_s4/self_supervised_gaussian --profile smoke
    python -m lib.run chapters/nndl_s4/self_supervised_gaussian -p n_max=100000 -p seed=3
"""

from __future__ import annotations

import argparse
import ast
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


def run_chapter(chapter: str | Path, profile: str, params: dict[str, Any], out_dir: Path) -> Path:
    """Convert, check and execute ``chapter``; returns the executed notebook's path."""
    import jupytext
    import papermill

    source = chapter_source(chapter)
    out_dir.mkdir(parents=True, exist_ok=True)
    input_nb = out_dir / f"{source.stem}.{os.getpid()}.input.ipynb"  # per process: runs of one chapter may overlap
    jupytext.write(jupytext.read(source), input_nb)
    try:
        params = {**params, "profile": profile}
        check_parameters(declared_parameters(input_nb), params)
        output_nb = out_dir / f"{source.stem}-{profile}.ipynb"
        os.environ.setdefault("BOOK_BATCH", "1")
        papermill.execute_notebook(
            str(input_nb), str(output_nb), parameters=params, kernel_name="python3",
            cwd=str(source.parent), progress_bar=False,
        )
    finally:
        input_nb.unlink(missing_ok=True)
    return output_nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", help="chapters/<part>/<name>[.md]")
    parser.add_argument("--profile", default=None, choices=PROFILES, help="default: $BOOK_PROFILE or cpu")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a parameter of the chapter's parameters cell (repeatable)")
    parser.add_argument("--out", default=str(BOOK_ROOT / "_build" / "runs"), help="where the executed notebook goes")
    args = parser.parse_args(argv)
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"-p takes NAME=VALUE, got {item!r}")
        params[name.strip()] = parse_value(value)
    profile = params.pop("profile", None) or args.profile or default_profile()
    try:
        output = run_chapter(args.chapter, profile, params, Path(args.out))
    except (ParameterError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"executed notebook: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
