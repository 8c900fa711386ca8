import json
import textwrap

import pytest

from lib.run import ParameterError, check_parameters, main, parse_value

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
