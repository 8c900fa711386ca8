"""Build the whole book as one PDF, then one hand-in PDF per homework set (a part of _toc.yml).

Usage: python scripts/build_pdfs.py [--only PART_SLUG ...] [--student NAME] [--student-id ID]
                                    [--date DATE]

Each homework set's PDF is a small Jupyter Book of its own: the part's index
page as root, its chapters in the order of the course's problem sheet, and the
bibliography when the part cites anything (so it holds what the part cites).
It opens with a title page: the course and the assignment (from the `handin`
entry of the index page's front matter), the student's name and ID (from
`--student`/`--student-id`, else `handin_student`/`handin_student_id` in
_config.yml; blank lines to fill in by hand when unset) and the date.

All builds share one fresh jupyter-cache (emptied at the start), so each
chapter executes once per run of this script. The PDFs land in
_build/pdf/<name>.pdf, with _build/pdf/manifest.json recording what each
title page must show (scripts/check_book.py pdf checks it), and are copied
into the website (_build/html/pdf/) when it has been built.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "pdf"
CACHE = OUT / ".jupyter_cache"
_beside_python = Path(sys.executable).parent / "jupyter-book"
JUPYTER_BOOK = str(_beside_python) if _beside_python.exists() else "jupyter-book"


def parts(toc: dict) -> list[tuple[str, str, dict]]:
    """(slug, caption, chapter entry) for each part whose first chapter is a homework index page."""
    found = []
    for part in toc.get("parts", []):
        first = part["chapters"][0]
        if first["file"].endswith("/index"):
            found.append((Path(first["file"]).parent.name, part["caption"], first))
    return found


def front_matter(path: Path) -> dict:
    text = path.read_text()
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}


def cites(files: list[Path]) -> bool:
    return any(re.search(r"\{cite(:\w+)?\}`", f.read_text()) for f in files)


def tex_escape(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}"}
    return "".join(special.get(c, c) for c in text)


def title_page(caption: str, fields: dict[str, str]) -> str:
    """LaTeX for a hand-in title page (replaces Sphinx's \\sphinxmaketitle)."""
    def value(key: str) -> str:
        return tex_escape(fields[key]) if fields[key] else r"\rule[-2pt]{8cm}{0.4pt}"

    rows = [("Course", "course"), ("Assignment", "assignment"), ("Student", "student"),
            ("Student ID", "student_id"), ("Date", "date")]
    table = "\n".join(rf"\textbf{{{label}:}} & {value(key)} \\[8pt]" for label, key in rows)
    return rf"""
\begin{{titlepage}}
  \centering
  \vspace*{{3cm}}
  {{\Large\sffamily The Attention Book\par}}
  \vspace{{1cm}}
  {{\huge\bfseries {tex_escape(caption)}\par}}
  \vspace{{2.5cm}}
  \begin{{tabular}}{{@{{}}r p{{10.5cm}}@{{}}}}
{table}
  \end{{tabular}}
  \vfill
  {{\small Worked solutions, written as an executable book: every number in
  this document is printed by the code beside it.\par}}
\end{{titlepage}}
"""


def build(name: str, title: str, toc: dict, config: dict, maketitle: str | None = None) -> Path:
    work = OUT / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    sphinx = dict(config.get("sphinx", {}))
    sphinx["local_extensions"] = {k: str((ROOT / v).resolve())
                                  for k, v in sphinx.get("local_extensions", {}).items()}
    if maketitle is not None:
        sphinx_config = dict(sphinx.get("config", {}))
        sphinx_config["latex_elements"] = {**sphinx_config.get("latex_elements", {}),
                                           "maketitle": maketitle}
        sphinx["config"] = sphinx_config
    config = {**config, "title": title, "sphinx": sphinx,
              "execute": {**config["execute"], "execute_notebooks": "cache", "cache": str(CACHE)},
              "latex": {**config["latex"], "latex_documents": {"targetname": f"{name}.tex"}}}
    (work / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    (work / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [JUPYTER_BOOK, "build", str(ROOT), "--builder", "pdflatex", "-W", "-n",
           "--keep-going", "--toc", str(work / "_toc.yml"), "--config", str(work / "_config.yml"),
           "--path-output", str(work)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    pdf = OUT / f"{name}.pdf"
    shutil.copyfile(work / "_build" / "latex" / f"{name}.pdf", pdf)
    print(f"PDF: {pdf}", flush=True)
    return pdf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="part slugs to build (default: the whole book and every part)")
    parser.add_argument("--student", help="name on the hand-in title pages")
    parser.add_argument("--student-id", help="student ID on the hand-in title pages")
    parser.add_argument("--date", help="date on the title pages (default: today)")
    args = parser.parse_args()
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    settings = config.get("sphinx", {}).get("config", {})
    student = args.student if args.student is not None else settings.get("handin_student", "")
    student_id = args.student_id if args.student_id is not None \
        else settings.get("handin_student_id", "")
    date = args.date or datetime.date.today().strftime("%-d %B %Y")
    shutil.rmtree(CACHE, ignore_errors=True)
    manifest_path = OUT / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    built = []
    if not args.only:
        built.append(build("attention-book", config["title"], toc, config))
    for slug, caption, entry in parts(toc):
        if args.only and slug not in args.only:
            continue
        sections = [s["file"] for s in entry.get("sections", [])]
        files = [ROOT / f"{f}.md" for f in [entry["file"], *sections]]
        handin = front_matter(ROOT / f"{entry['file']}.md").get("handin", {})
        fields = {"course": handin.get("course", caption),
                  "assignment": handin.get("assignment", caption),
                  "student": student or "", "student_id": student_id or "", "date": date}
        chapters = [{"file": f} for f in sections]
        if cites(files):
            chapters.append({"file": "bibliography"})
        part_toc = {"format": "jb-book", "root": entry["file"], "chapters": chapters}
        built.append(build(slug, f"{config['title']}: {caption}", part_toc, config,
                           maketitle=title_page(caption, fields)))
        manifest[slug] = fields
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    site = ROOT / "_build" / "html"
    if (site / "index.html").exists():
        (site / "pdf").mkdir(exist_ok=True)
        for pdf in built:
            shutil.copy2(pdf, site / "pdf" / pdf.name)
        print(f"copied into the website: {site / 'pdf'}")
    print("\n".join(["built:"] + [f"  {p}" for p in built]))


if __name__ == "__main__":
    main()
