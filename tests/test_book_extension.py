"""_ext/attention_book.py: references across homework sets, hand-in PDF links."""

import sys
from pathlib import Path
from types import SimpleNamespace

from docutils import nodes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "_ext"))
import attention_book  # noqa: E402

TOC = """\
format: jb-book
root: intro
parts:
  - caption: Homework A
    chapters:
      - file: a/index
        sections:
          - file: a/one
  - caption: Homework B
    chapters:
      - file: b/index
        sections:
          - file: b/two
"""


def book(tmp_path):
    (tmp_path / "_toc.yml").write_text(TOC)
    for doc, text in {
        "a/index": "(hw-a)=\n# Homework A\n",
        "a/one": "---\n# a comment\nfront: matter\n---\n\n(a-one)=\n# Problem 1: the $x^2$ trick\n\n"
                 "(a-one-part)=\n## A section\n",
        "b/index": "(hw-b)=\n# Homework B\n",
        "b/two": "(b-two)=\n# Question 2\n",
    }.items():
        path = tmp_path / f"{doc}.md"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_chapter_labels(tmp_path):
    labels = attention_book.chapter_labels(book(tmp_path))
    assert labels["a-one"] == {"docname": "a/one", "title": "Problem 1: the x^2 trick",
                               "part": "Homework A", "anchor": ""}
    assert labels["a-one-part"]["anchor"] == "a-one-part"
    assert set(labels) == {"hw-a", "a-one", "a-one-part", "hw-b", "b-two"}


def resolve(tmp_path, target, docs, baseurl=""):
    app = SimpleNamespace(srcdir=str(book(tmp_path)),
                          config=SimpleNamespace(html_baseurl=baseurl))
    env = SimpleNamespace(all_docs=dict.fromkeys(docs))
    node = {"refdomain": "std", "reftype": "ref", "reftarget": target}
    return attention_book.other_homework_reference(app, env, node, nodes.Text("x"))


def test_reference_to_another_homework_becomes_a_website_link(tmp_path):
    ref = resolve(tmp_path, "a-one-part", ["b/index", "b/two"],
                  baseurl="https://book.example.org/")
    assert ref["refuri"] == "https://book.example.org/a/one.html#a-one-part"
    assert ref.astext() == "A section (The Attention Book website)"


def test_reference_to_another_homework_without_a_website_is_plain_text(tmp_path):
    out = resolve(tmp_path, "a-one", ["b/index", "b/two"])
    assert not list(out.findall(nodes.reference))
    assert out.astext() == "Problem 1: the x^2 trick (The Attention Book, Homework A)"


def test_references_inside_the_build_are_left_to_sphinx(tmp_path):
    assert resolve(tmp_path, "a-one", ["a/index", "a/one"]) is None
    assert resolve(tmp_path, "no-such-label", ["b/two"]) is None


def test_handin_pdf_role():
    def role(fmt):
        builder = SimpleNamespace(format=fmt)
        settings = SimpleNamespace(env=SimpleNamespace(app=SimpleNamespace(builder=builder)))
        inliner = SimpleNamespace(document=SimpleNamespace(settings=settings))
        return attention_book.handin_pdf_role("handin-pdf", "", "nndl_s4", 1, inliner)[0][0]

    assert role("html")["refuri"] == "pdf/nndl_s4.pdf"
    assert role("html").astext() == role("latex").astext() == "nndl_s4.pdf"
