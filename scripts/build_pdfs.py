"""Build the whole book as one PDF, then one PDF per homework set (a part of _toc.yml).

Usage: python scripts/build_pdfs.py [--only PART_SLUG ...]

Each part's PDF is a small Jupyter Book of its own: the part's index page as
root and its chapters, built with a generated table of contents and a copy of
_config.yml with the part's title. All builds share one fresh jupyter-cache
(emptied at the start), so each chapter executes once per run of this script.
The PDFs land in _build/pdf/<name>.pdf.
"""

from __future__ import annotations

import argparse
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


def build(name: str, title: str, toc: dict, config: dict) -> Path:
    work = OUT / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    config = {**config, "title": title,
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
    args = parser.parse_args()
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    shutil.rmtree(CACHE, ignore_errors=True)
    built = []
    if not args.only:
        built.append(build("attention-book", config["title"], toc, config))
    for slug, caption, entry in parts(toc):
        if args.only and slug not in args.only:
            continue
        part_toc = {"format": "jb-book", "root": entry["file"],
                    "chapters": [{"file": s["file"]} for s in entry.get("sections", [])] + [{"file": "bibliography"}]}
        built.append(build(slug, f"{config['title']}: {caption}", part_toc, config))
    print("\n".join(["built:"] + [f"  {p}" for p in built]))


if __name__ == "__main__":
    main()
