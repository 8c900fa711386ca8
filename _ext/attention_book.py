"""Sphinx extension: how the Attention Book looks as a website and as hand-in PDFs.

Loaded from `_config.yml` (`sphinx.local_extensions`). What it does:

- Exercises carry the course's numbering: an `{exercise}` with `:nonumber:`
  renders its title alone ("Question 3.1"), not "Exercise (Question 3.1)".
- LaTeX: a proof is a plain paragraph ending in a square, not a box with an
  empty header; a proposition (any sphinx-proof statement) starts on a new
  page rather than leave its header orphaned at the foot of one.
- LaTeX: a `{ref}` to a chapter outside the document being built (a hand-in
  PDF holds one homework set) becomes a link to that chapter on the book's
  website (`html.baseurl` in `_config.yml`), or, with no website address, a
  plain-text mention "*Title* (The Attention Book, <part>)".
- `{handin-pdf}` role: `` {handin-pdf}`nndl_s4` `` links the hand-in PDF of a
  homework set (`pdf/nndl_s4.pdf` on the website; the file name in a PDF).
- HTML: MathJax is served from the site itself (no CDN), and the PDFs that
  `scripts/build_pdfs.py` built are copied into the site under `pdf/`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
MATHJAX = "mathjax/tex-chtml.js"
MATHJAX_PARTS = ("input/tex/extensions", "output/chtml", "ui", "a11y", "sre")


# --- exercises: the course's numbering ---------------------------------------------


class CourseNumberedExercises(SphinxPostTransform):
    """Title of an unnumbered exercise = its subtitle (after sphinx-exercise's titles)."""

    default_priority = 21  # sphinx-exercise resolves titles at 20

    def run(self, **kwargs) -> None:
        from sphinx_exercise.nodes import exercise_node

        for node in self.document.findall(exercise_node):
            title = node.children[0] if node.children else None
            if not isinstance(title, nodes.title) or len(title.children) < 4:
                continue
            kids = list(title.children)
            if kids[1].astext() == " (" and kids[-1].astext() == ")":
                title.children = []
                for kid in kids[2:-1]:
                    title += kid
                node["title"] = title.astext()


# --- proofs and propositions in LaTeX --------------------------------------------------


class PrintableProofs(SphinxPostTransform):
    """LaTeX only: proofs lose their empty admonition header; statements keep together."""

    default_priority = 5
    formats = ("latex",)

    def run(self, **kwargs) -> None:
        from sphinx_proof.nodes import NODE_TYPES, proof_node, unenumerable_node

        for node in list(self.document.findall(proof_node)):
            box = node.children[0] if node.children else None
            if isinstance(box, nodes.admonition):
                body = nodes.container(classes=["bookproof"])
                body.extend(box.children)
                node.replace(box, body)
        statements = tuple(NODE_TYPES.values()) + (unenumerable_node,)
        for node in list(self.document.findall(lambda n: isinstance(n, statements))):
            keep = nodes.raw("", "\n\\needspace{8\\baselineskip}\n", format="latex")
            node.parent.insert(node.parent.index(node), keep)


# --- references to other homework sets --------------------------------------------------


def chapter_labels(root: Path) -> dict[str, dict]:
    """label -> {docname, title, part} for every `(label)=` right before a heading."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found: dict[str, dict] = {}
    for part in toc.get("parts", []):
        docs = []
        for chapter in part["chapters"]:
            docs.append(chapter["file"])
            docs += [s["file"] for s in chapter.get("sections", [])]
        for doc in docs:
            path = root / f"{doc}.md"
            if not path.exists():
                continue
            lines = path.read_text().splitlines()
            if lines and lines[0].strip() == "---":  # front matter: blank it out
                end = next((k for k in range(1, len(lines)) if lines[k].strip() == "---"), 0)
                lines[: end + 1] = [""] * (end + 1)
            for i, line in enumerate(lines[:-1]):
                label = re.fullmatch(r"\(([\w-]+)\)=", line.strip())
                heading = re.match(r"#+\s+(.*)", lines[i + 1])
                if label and heading:
                    first = not any(re.match(r"#\s", x) for x in lines[:i])
                    found[label.group(1)] = {
                        "docname": doc,
                        "title": re.sub(r"\$([^$]*)\$", r"\1", heading.group(1)),
                        "part": part["caption"],
                        "anchor": "" if first else label.group(1),
                    }
    return found


def other_homework_reference(app: Sphinx, env, node, contnode):
    """Resolve a `{ref}` to a chapter that this build does not contain (hand-in PDFs)."""
    if node.get("refdomain") != "std" or node.get("reftype") != "ref":
        return None
    if not hasattr(env, "book_chapter_labels"):
        env.book_chapter_labels = chapter_labels(Path(app.srcdir))
    target = env.book_chapter_labels.get(node["reftarget"])
    if target is None or target["docname"] in env.all_docs:
        return None
    base = (app.config.html_baseurl or "").rstrip("/")
    title = nodes.emphasis(text=target["title"])
    if base:
        anchor = f"#{target['anchor']}" if target["anchor"] else ""
        uri = f"{base}/{target['docname']}.html{anchor}"
        ref = nodes.reference("", "", internal=False, refuri=uri)
        ref += title
        ref += nodes.Text(" (The Attention Book website)")
        return ref
    out = nodes.inline()
    out += title
    out += nodes.Text(f" (The Attention Book, {target['part']})")
    return out


# --- hand-in PDFs on the website ------------------------------------------------------------


def handin_pdf_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    slug = text.strip()
    builder = inliner.document.settings.env.app.builder
    if builder.format == "html":
        ref = nodes.reference(rawtext, "", refuri=f"pdf/{slug}.pdf", internal=False)
        ref += nodes.literal(text=f"{slug}.pdf")
        ref["classes"].append("handin-pdf")
        return [ref], []
    return [nodes.literal(rawtext, f"{slug}.pdf")], []


def mathjax_directory() -> Path:
    """MathJax 3 (tex-chtml and its fonts), as shipped by the pip package sphinx-mathjax-offline."""
    from importlib.metadata import distribution

    dist = distribution("sphinx-mathjax-offline")
    return Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))


def copy_site_assets(app: Sphinx, exc) -> None:
    """After an HTML build: local MathJax, and the PDFs built so far."""
    if exc is not None or app.builder.format != "html":
        return
    source = mathjax_directory()
    target = Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / "tex-chtml.js", target / "tex-chtml.js")
    for part in MATHJAX_PARTS:  # what tex-chtml.js loads on demand
        shutil.copytree(source / part, target / part, dirs_exist_ok=True)
    pdfs = sorted((Path(app.srcdir) / "_build" / "pdf").glob("*.pdf"))
    if pdfs:
        (Path(app.outdir) / "pdf").mkdir(exist_ok=True)
        for pdf in pdfs:
            shutil.copy2(pdf, Path(app.outdir) / "pdf" / pdf.name)


def local_mathjax(app: Sphinx, config) -> None:
    config.mathjax_path = MATHJAX


def setup(app: Sphinx) -> dict:
    # the student on hand-in title pages (read by scripts/build_pdfs.py)
    app.add_config_value("handin_student", "", "env")
    app.add_config_value("handin_student_id", "", "env")
    app.connect("config-inited", local_mathjax, priority=900)
    app.add_post_transform(CourseNumberedExercises)
    app.add_post_transform(PrintableProofs)
    app.connect("missing-reference", other_homework_reference)
    app.add_role("handin-pdf", handin_pdf_role)
    app.connect("build-finished", copy_site_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
