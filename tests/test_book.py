"""Checks of the book's sources that the builds would only catch late."""

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import check_book  # noqa: E402
REFERENCE = re.compile(r"\{(?:prf:ref|eq|numref|ref)\}`(?:[^`<]*<)?([^`>]+)>?`")
LABEL = re.compile(r"^\((?P<a>[\w-]+)\)=|:label: (?P<b>[\w-]+)|name: (?P<c>[\w-]+)", re.MULTILINE)


def parts() -> list[list[Path]]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    out = []
    for part in toc["parts"]:
        files = []
        for chapter in part["chapters"]:
            files.append(ROOT / f"{chapter['file']}.md")
            files += [ROOT / f"{s['file']}.md" for s in chapter.get("sections", [])]
        out.append(files)
    return out


def test_every_toc_file_exists():
    for files in parts():
        for f in files:
            assert f.exists(), f


def test_references_resolve_within_their_homework():
    """Each homework is also built as its own PDF, so a reference must point into the same
    part; only a {ref} to a chapter or section label may cross (the hand-in PDF turns it into
    a link to the website, _ext/attention_book.py)."""
    labels = {m.group("a") or m.group("b") or m.group("c")
              for files in parts() for f in files for m in LABEL.finditer(f.read_text())}
    for f in (f for files in parts() for f in files):
        for target in REFERENCE.findall(f.read_text()):
            assert target in labels, f"{f.relative_to(ROOT)} refers to {target!r}, defined nowhere"
    crossing = [f for f in check_book.check_sources(ROOT, None, width=10_000) if f.rule == "xref"]
    assert not crossing, "\n".join(map(str, crossing))


def test_no_citation_in_a_heading():
    """A {cite} inside a section title breaks the LaTeX build (TeX capacity exceeded)."""
    for files in parts():
        for f in files:
            for line in f.read_text().splitlines():
                assert not (line.startswith("#") and "{cite}" in line), f"{f.relative_to(ROOT)}: {line}"
