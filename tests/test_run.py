import json
import os
import shutil
import subprocess
import sys
import textwrap

import jupytext
import pytest

from lib.run import BOOK_ROOT, ParameterError, check_parameters, declared_parameters, main, parse_value

CHAPTER = textwrap.dedent(
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

    # A tiny chapter

    ```{code-cell} ipython3
    :tags: [parameters]

    profile = "cpu"
    n = 3
    scale = 0.5
    name = "demo"
    ```

    ```{code-cell} ipython3
    import json, pathlib
    pathlib.Path("ran.json").write_text(json.dumps({"profile": profile, "n": n, "scale": scale, "name": name}))
    ```
    """
)


@pytest.fixture
def chapter(tmp_path):
    path = tmp_path / "tiny.md"
    path.write_text(CHAPTER)
    return path


def test_runner_executes_with_parameters(chapter, tmp_path):
    assert main([str(chapter.with_suffix("")), "--profile", "smoke", "-p", "n=5", "-p", "scale=2",
                 "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "ran.json").read_text()) == {"profile": "smoke", "n": 5, "scale": 2, "name": "demo"}
    assert (tmp_path / "out" / "tiny-smoke.ipynb").exists()
    assert not list((tmp_path / "out").glob("*.input.ipynb")), "the per-process input notebook is removed"


@pytest.mark.parametrize(
    "param, message",
    [("m=5", "unknown parameter 'm'"), ("n=abc", "n='abc' is not allowed: n must be an integer"),
     ("profile=laptop", "not a profile"), ("n=1.5", "n=1.5 is not allowed: n must be an integer")],
)
def test_runner_rejects_bad_parameters_before_any_work(chapter, tmp_path, capsys, param, message):
    assert main([str(chapter), "-p", param, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "unknown" in message:
        assert "n = 3" in err and "scale = 0.5" in err, "the error lists the valid parameters"
    assert not (tmp_path / "ran.json").exists(), "nothing may run after a bad parameter"
    assert not list((tmp_path / "out").glob("*.input.ipynb")), "the input notebook is removed on errors too"


def test_missing_chapter(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "no chapter" in capsys.readouterr().err


def test_parse_and_check_values():
    assert parse_value("3") == 3 and parse_value("[1, 2]") == [1, 2] and parse_value("cpu") == "cpu"
    declared = {"profile": "default_profile()", "lr": "0.001", "flag": "True", "sizes": "[1, 2]", "x": "None"}
    check_parameters(declared, {"lr": 1, "flag": False, "sizes": [3], "x": "anything", "profile": "gpu"})
    with pytest.raises(ParameterError):
        check_parameters(declared, {"flag": 1})


def test_unparsable_parameter_line_is_reported(tmp_path, capsys):
    path = tmp_path / "odd.md"
    path.write_text(CHAPTER.replace('name = "demo"', "name = \"demo\"  # default = demo"))
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert "cannot parse the parameters ['name']" in capsys.readouterr().err
    assert not (tmp_path / "ran.json").exists()


STORE_CHAPTER = CHAPTER.replace(
    """pathlib.Path("ran.json").write_text(json.dumps({"profile": profile, "n": n, "scale": scale, "name": name}))""",
    "import lib\n"
    "from lib.store import ResultsStore\n"
    'ResultsStore(profile).record("tiny", {"n": n}, lambda c: {"twice": 2 * c["n"]})\n'
    'pathlib.Path("ran.json").write_text(json.dumps({"lib": lib.__file__}))',
)
assert "ResultsStore(profile)" in STORE_CHAPTER


def test_runner_from_another_clone_writes_into_that_clone(tmp_path):
    """Started with this checkout's lib on the path, on a chapter of a second clone: the chapter runs
    against the clone's lib and its records land in the clone's results/, not in this checkout's."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(BOOK_ROOT), str(clone)], check=True)
    shutil.copytree(BOOK_ROOT / "lib", clone / "lib", dirs_exist_ok=True,  # the lib under test, committed or not
                    ignore=shutil.ignore_patterns("__pycache__"))
    chapter = clone / "chapters" / "tiny" / "tiny.md"
    chapter.parent.mkdir()
    chapter.write_text(STORE_CHAPTER)
    env = {k: v for k, v in os.environ.items() if k not in ("BOOK_RESULTS", "BOOK_READ_ONLY", "BOOK_PROFILE")}
    env["PYTHONPATH"] = str(BOOK_ROOT)
    proc = subprocess.run([sys.executable, "-m", "lib.run", str(chapter), "--profile", "smoke", "-p", "n=4"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"belongs to the checkout {clone}" in proc.stderr
    assert f"checkout {clone}\n" in proc.stdout and f"store {clone / 'results' / 'smoke'}" in proc.stdout
    records = list((clone / "results" / "smoke" / "tiny").glob("tiny-*.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["result"] == {"twice": 8}
    assert not list((BOOK_ROOT / "results" / "smoke" / "tiny").glob("*.json")), "nothing lands in this checkout"
    assert json.loads((chapter.parent / "ran.json").read_text())["lib"] == str(clone / "lib" / "__init__.py")
    assert (clone / "_build" / "runs" / "tiny-smoke.ipynb").exists()


def test_relative_book_results_is_taken_from_where_the_runner_was_started(tmp_path, monkeypatch):
    chapter = tmp_path / "chapters" / "tiny.md"
    chapter.parent.mkdir()
    chapter.write_text(STORE_CHAPTER)
    typed_in = tmp_path / "here"
    typed_in.mkdir()
    monkeypatch.chdir(typed_in)
    monkeypatch.setenv("PWD", str(typed_in))
    monkeypatch.setenv("BOOK_RESULTS", "my-results")
    assert main([str(chapter), "--profile", "smoke", "--out", str(tmp_path / "out")]) == 0
    assert len(list((typed_in / "my-results" / "smoke" / "tiny").glob("tiny-*.json"))) == 1
    assert not (chapter.parent / "my-results").exists(), "not resolved against the chapter's folder"


def test_every_chapter_declares_readable_parameters_and_a_type_for_none_defaults():
    for source in sorted((BOOK_ROOT / "chapters").glob("*/*.md")):
        notebook = jupytext.read(source)
        if not any("parameters" in c.metadata.get("tags", []) for c in notebook.cells):
            continue
        declared = declared_parameters(notebook)  # raises on a line papermill cannot read or a bad type
        assert "profile" in declared, source
        untyped = [name for name, (default, kind) in declared.items() if default == "None" and kind is None]
        assert not untyped, f"{source.relative_to(BOOK_ROOT)}: {untyped} default to None without a `# type:`"


def test_type_comments_check_domains(tmp_path, capsys):
    path = tmp_path / "typed.md"
    path.write_text(CHAPTER.replace("n = 3", "n = 3  # type: int[1,)").replace(
        'name = "demo"', 'name = "demo"\nseeds = None  # type: list[int[0,)]'))
    for param, message in [("n=0", "n=0 is not allowed: n must be an integer >= 1"),
                           ("seeds=[1,-2]", "seeds=[1, -2] is not allowed: seeds must be a list of integers >= 0"),
                           ("seeds=5", "seeds=5 is not allowed")]:
        assert main([str(path), "-p", param, "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ran.json").exists()


def test_an_error_inside_the_chapter_is_one_readable_line_with_the_notebook(tmp_path, capsys):
    path = tmp_path / "raises.md"
    path.write_text(CHAPTER.replace(
        'import json, pathlib',
        'from lib.config import ConfigError\nraise ConfigError("lr=-1 is not allowed: lr must be a positive number")'))
    assert main([str(path), "--profile", "smoke", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "raised ConfigError: lr=-1 is not allowed: lr must be a positive number" in err
    assert str(tmp_path / "out" / "raises-smoke.ipynb") in err


def test_the_monitor_prints_progress_lines_and_a_heartbeat(tmp_path, capsys):
    import time

    from lib.run import Monitor

    status = tmp_path / "status"
    with Monitor(status, heartbeat=1.0):
        status.write_text("12:00:00 exp: computing {\"i\":0}\n")
        time.sleep(3.5)
    err = capsys.readouterr().err
    assert "exp: computing {\"i\":0}" in err and "... still exp: computing" in err
    assert not status.exists()
