"""Pair each chapter's MyST source (.md) with an .ipynb for Jupyter, without reflowing the source.

``jupytext --sync`` writes *every* paired file from the newer one, re-dumping
each cell's YAML metadata (figure captions) at PyYAML's line width, so a
caption wrapped by hand in the .md is reflowed even when nothing was edited.
This script writes the .md only when the .ipynb really differs from it (an
edit made in Jupyter without jupytext); otherwise it only (re)writes the
.ipynb from the .md, keeping the notebook's outputs.

    python scripts/sync_chapters.py chapters/*/*.md intro.md     (what `make sync` runs)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jupytext


def cells(notebook) -> list[tuple[str, str, dict]]:
    """What an author edits: each cell's type, source and metadata (not outputs or ids)."""
    ignored = {"execution", "collapsed", "scrolled", "jupyter", "id"}
    return [(c.cell_type, c.source.strip(), {k: v for k, v in c.metadata.items() if k not in ignored})
            for c in notebook.cells]


def sync(md: Path) -> str:
    nb = md.with_suffix(".ipynb")
    if nb.exists() and nb.stat().st_mtime > md.stat().st_mtime:
        if cells(jupytext.read(nb)) != cells(jupytext.read(md)):
            subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(md)], check=True)
            return f"{md}: the .ipynb was edited; synced into the .md"
        os.utime(nb, (md.stat().st_atime, md.stat().st_mtime))
        return f"{md}: unchanged"
    update = ["--update"] if nb.exists() else []
    subprocess.run([sys.executable, "-m", "jupytext", "--quiet", *update, "--use-source-timestamp",
                    "--to", "ipynb", str(md)], check=True)
    return f"{md}: wrote {nb.name}"


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(sync(Path(path)))
