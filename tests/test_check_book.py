"""The book checks (scripts/check_book.py) find what they are for, and only that."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import check_book  # noqa: E402

CHAPTER = """\
---
jupytext: {}
---

(hw-a-one)=
# A chapter

```{exercise} Question 1.1
:label: ex-1
:nonumber:

Do it.
```

```{exercise} Do it too
:label: ex-2
```

## A section with $x^2$ in its title

```{code-cell} ipython3
:tags: [parameters]

profile = "cpu"
```

```{code-cell} ipython3
import numpy as np
```

```{code-cell} ipython3
---
tags: [remove-input]
mystnb:
  figure:
    caption: ""
    name: fig-hw-a
---
# a comment line that is not a heading
x = 1  # WIDTH
```

See {numref}`fig-other` and {eq}`eq-b` and {ref}`hw-b-one`.

```bash
# a shell comment, not a heading
python -m lib.run chapters/a --profile cpu -p some_parameter=1 -p another=2 -p third=3
```
"""

OTHER = """\
(hw-b-one)=
# B chapter

```{math}
:label: eq-b
x
```
"""


@pytest.fixture
def book(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n"
        "  - caption: A\n    chapters:\n      - file: a\n"
        "  - caption: B\n    chapters:\n      - file: b\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    (tmp_path / "a.md").write_text(CHAPTER.replace("# WIDTH", "#" + "x" * 80))
    (tmp_path / "b.md").write_text(OTHER)
    return tmp_path


def rules(findings):
    return sorted((f.rule, f.line) for f in findings)


def test_parse_markdown_separates_code_from_prose():
    cells, directives, prose, literal = check_book.parse_markdown(CHAPTER)
    assert [c.line for c in cells] == [21, 27, 31]
    assert cells[0].tags == {"parameters"}
    assert cells[2].meta["mystnb"]["figure"]["name"] == "fig-hw-a"
    assert cells[2].lines[0] == (39, "# a comment line that is not a heading")
    assert [(d[0], d[1]) for d in directives] == [("exercise", "Question 1.1"),
                                                  ("exercise", "Do it too")]
    assert "nonumber" in directives[0][2] and "nonumber" not in directives[1][2]
    assert not any("comment" in text for _, text in prose)
    assert [n for n, _ in literal] == [46, 47]
    assert any(text.startswith("## A section") for _, text in prose)


def test_sources_findings(book):
    found = check_book.check_sources(book, None, width=80)
    assert rules(found) == sorted([
        ("exercise", 15), ("exercise", 15),     # no :nonumber:, title not a course label
        ("heading-math", 19),
        ("plumbing", 21),                       # parameters cell not hidden
        ("plumbing", 27),                       # imports cell not hidden
        ("figure", 31), ("figure", 31),         # empty caption, name never cited
        ("plumbing", 31),                       # figure code removed from the website
        ("width", 40),
        ("xref", 43), ("xref", 43),             # numref to nowhere, eq into another homework
        ("width", 47),                          # a line of a plain code block
    ]), found                                   # ...but {ref} to B's chapter is allowed


def test_sources_width_limit_is_a_parameter(book):
    assert not [f for f in check_book.check_sources(book, None, width=200) if f.rule == "width"]


def notebook(cells):
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def code(outputs, meta=None):
    return {"cell_type": "code", "metadata": meta or {}, "outputs": outputs, "source": ""}


def test_outputs_findings(book):
    executed = book / "_build" / "jupyter_execute"
    executed.mkdir(parents=True)
    figure = {"mystnb": {"figure": {"caption": "c", "name": "fig-hw-a"}}}
    image = {"output_type": "display_data", "metadata": {},
             "data": {"image/png": "xx", "text/plain": "<Figure size 640x480 with 1 Axes>"}}
    cells = [
        code([{"output_type": "execute_result", "metadata": {}, "execution_count": 1,
               "data": {"text/plain": "<matplotlib.legend.Legend at 0x7f3a2c1b9d50>"}}]),
        code([{"output_type": "stream", "name": "stdout",
               "text": "wrote /tmp/tmpab12cd/records.json\n"}]),
        code([{"output_type": "stream", "name": "stderr", "text": "UserWarning: careful\n"}]),
        code([image], figure),                 # fine: captioned and named
        code([image]),                         # no caption
        code([{"output_type": "stream", "name": "stdout",
               "text": "see https://example.org/home/page and 0.5 at 0.1\n"}]),
        code([{"output_type": "stream", "name": "stdout", "text": "x" * 81 + "\n"}]),
    ]
    (executed / "a.ipynb").write_text(json.dumps(notebook(cells)))
    found = check_book.check_outputs(book, executed)
    assert [f.rule for f in found] == ["repr", "abspath", "stderr", "figure",
                                      "output-width"], found
    assert found[0].path == "a.md" and found[0].line == 21


LOG = r"""
Missing character: There is no ⧵ (U+29F5) in font [latinmodern-math.otf]/OT:scr
ipt=math;language=dflt;!
Overfull \hbox (70.1234pt too wide) in paragraph at lines 12--14
Overfull \hbox (2.0pt too wide) in paragraph at lines 20--20
LaTeX Warning: Reference `a:fig-x' on page 3 undefined on input line 99.
"""

TEX = r"""\begin{document}
\label{\detokenize{intro::doc}}
x
\label{\detokenize{chapters/a::doc}}
""" + "y\n" * 20


def test_pdf_findings(tmp_path, monkeypatch):
    latex = tmp_path / "work" / "hw" / "_build" / "latex"
    latex.mkdir(parents=True)
    (latex / "hw.log").write_text(LOG)
    (latex / "hw.tex").write_text(TEX)
    (tmp_path / "hw.pdf").write_bytes(b"%PDF")
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"hw": {"course": "Deep Learning", "student": "Ada Lovelace", "date": ""}}))
    outline = [(0, "Introduction", 2), (0, "Bibliography", 5), (0, "Bibliography", 6),
               (0, "Proof Index", 6),
               (0, "A \\(q^\\top k\\) chapter", 7)]
    pages = {1: "Course: Deep Learning Assignment: x Student: Student ID: Date: 1 May",
             2: "lots of words here " * 5, 5: "Chapter 3 Bibliography 17"}
    monkeypatch.setattr(check_book, "pdf_outline", lambda pdf: outline)
    monkeypatch.setattr(check_book, "page_count", lambda pdf: 8)
    monkeypatch.setattr(check_book, "pdftotext",
                        lambda pdf, a, b: " ".join(pages.get(k, "") for k in range(a, b + 1)))
    found = check_book.check_pdfs(tmp_path, tmp_path, overfull_pt=5)
    messages = [(f.rule, f.message) for f in found]
    assert ("missing-char", "no glyph for ⧵ (U+29F5) in "
            "[latinmodern-math.otf]/OT:script=math;language=dflt;") in messages
    assert ("overfull", "70.1234 pt too wide in chapters/a.md (hw.tex line 12)") in messages
    assert not any("2.0" in m for _, m in messages)
    assert ("undefined", "reference a:fig-x undefined (page 3)") in messages
    assert ("outline", "index entry in the outline: 'Proof Index'") in messages
    assert any(r == "outline" and "raw TeX" in m for r, m in messages)
    assert ("outline", "duplicate outline entry 'Bibliography' (page 6)") in messages
    assert ("empty-chapter", "'Bibliography' (pages 5-5) has no content") in messages
    assert ("title-page", "first page lacks the student 'Ada Lovelace'") in messages
    assert not any(r == "empty-chapter" and "Introduction" in m for r, m in messages)
    assert len([r for r, _ in messages if r == "title-page"]) == 1
