"""Checks of the book as readers and graders see it: sources, outputs, PDFs, website.

    python3 scripts/check_book.py sources [FILE.md ...]  chapter sources (static, no build)
    python3 scripts/check_book.py outputs                executed notebooks of `make html`
    python3 scripts/check_book.py pdf                    LaTeX logs and PDFs of `make pdf`
    python3 scripts/check_book.py browser                the website in headless Chromium, offline
    python3 scripts/check_book.py all                    the four, in that order

Each finding is printed as `path:line: rule: message`, grouped by file; the
exit status is 1 when there is any. The rules (what the chapters must do is in
the README, "Checks of the book"):

sources  width (code lines <= --width), exercise (`:nonumber:` and a title in
         the course's numbering), heading-math, figure (caption, name, cited
         with {numref}), plumbing (imports/parameters/glue cells hidden,
         figure code not removed from the website), xref (only {ref} crosses
         homework sets)
outputs  repr (Python object reprs), abspath (absolute paths), stderr,
         output-width (printed lines <= --width), figure (an image from a cell
         without a caption and name)
pdf      missing-char, overfull (beyond --overfull-pt), undefined (references),
         outline (raw TeX, "Index" entries, duplicates), empty-chapter,
         title-page (a hand-in PDF's first page lacks a field)
browser  offline (a request leaves the machine), math (formulas not rendered),
         clipped (a code block with a horizontal scrollbar), broken (a local
         file that does not load, or a link to a file the site lacks, such as
         a hand-in PDF that `make pdf` has not built)
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 80
OVERFULL_PT = 5.0
HIDDEN = {"hide-input", "hide-cell", "remove-input", "remove-cell"}
COURSE_LABEL = re.compile(
    r"(Questions?|Problems?|Exercises?|Parts?|Computer assignment)\b")
TITLE_FIELDS = ("Course:", "Assignment:", "Student:", "Student ID:", "Date:")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"


SUMMARY = False  # --summary: one line per file (counts per rule) instead of every finding


def report(findings: list[Finding], what: str) -> int:
    """Print the findings grouped by file, and a summary line; 1 if any."""
    by_file: dict[str, list[Finding]] = {}
    for f in findings:
        by_file.setdefault(f.path, []).append(f)
    for path in sorted(by_file):
        if SUMMARY:
            counts: dict[str, int] = {}
            for f in by_file[path]:
                counts[f.rule] = counts.get(f.rule, 0) + 1
            print(f"{path}: " + ", ".join(f"{n} {r}" for r, n in sorted(counts.items())))
            continue
        print(f"{path}: {len(by_file[path])} finding(s)")
        for f in sorted(by_file[path], key=lambda f: (f.line, f.rule)):
            print(f"  {f}")
    rules: dict[str, int] = {}
    for f in findings:
        rules[f.rule] = rules.get(f.rule, 0) + 1
    summary = ", ".join(f"{n} {r}" for r, n in sorted(rules.items()))
    print(f"check {what}: {len(findings)} finding(s) in {len(by_file)} file(s)"
          + (f" ({summary})" if summary else ""))
    return 1 if findings else 0


# --- the book's files ---------------------------------------------------------------


def toc_parts(root: Path) -> list[tuple[str, list[str]]]:
    """(caption, docnames) per part of _toc.yml, the root document in its own part."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = [("root", [toc["root"]])]
    for part in toc.get("parts", []):
        docs = []
        for chapter in part["chapters"]:
            docs.append(chapter["file"])
            docs += [s["file"] for s in chapter.get("sections", [])]
        out.append((part["caption"], docs))
    return out


@dataclass
class Cell:
    line: int          # 1-based line of the opening fence
    meta: dict
    lines: list[tuple[int, str]]   # (line number, code line)

    @property
    def tags(self) -> set[str]:
        return set(self.meta.get("tags") or [])

    @property
    def source(self) -> str:
        return "\n".join(text for _, text in self.lines)


FENCE = re.compile(r"^(`{3,}|~{3,}|:{3,})(.*)$")


CODE_BLOCKS = {"code-block", "code", "sourcecode"}          # their lines are code
VERBATIM = CODE_BLOCKS | {"math", "raw", "literalinclude"}  # their lines are not prose


def parse_markdown(text: str):
    """Code cells, directives (name, argument, options, line), prose lines and literal
    lines (inside ``` code blocks, not code cells) of a MyST file."""
    lines = text.splitlines()
    cells, directives, prose, literal = [], [], [], []
    i, n = 0, len(lines)
    if lines and lines[0].strip() == "---":            # front matter
        i = next((k for k in range(1, n) if lines[k].strip() == "---"), 0) + 1
    stack: list[tuple[str, str]] = []        # open fences: (fence, "prose"|"code"|"verbatim")
    while i < n:
        line = lines[i]
        m = FENCE.match(line.strip()) if line.strip() else None
        if stack and m and m.group(1)[0] == stack[-1][0][0] \
                and len(m.group(1)) >= len(stack[-1][0]) and not m.group(2).strip():
            stack.pop()
            i += 1
            continue
        kind = stack[-1][1] if stack else "prose"
        if m and kind == "prose":
            info = m.group(2).strip()
            d = re.match(r"\{([\w:-]+)\}\s*(.*)", info)
            if d and d.group(1) == "code-cell" and not stack:
                cell, i = read_cell(lines, i, m.group(1))
                cells.append(cell)
                continue
            if d:
                options, _ = read_options(lines, i + 1)
                directives.append((d.group(1), d.group(2), options, i + 1))
            if d is None:
                kind = "prose" if m.group(1)[0] == ":" else "code"
            else:
                kind = "code" if d.group(1) in CODE_BLOCKS else \
                    "verbatim" if d.group(1) in VERBATIM else "prose"
            stack.append((m.group(1), kind))
            i += 1
            continue
        if kind == "code":
            if not re.match(r"^:[\w-]+:", line):
                literal.append((i + 1, line))
        elif kind == "prose":
            prose.append((i + 1, line))
        i += 1
    return cells, directives, prose, literal


def read_options(lines: list[str], i: int) -> tuple[dict, int]:
    """Directive options: a `---` YAML block or `:key: value` lines starting at i."""
    options: dict = {}
    if i < len(lines) and lines[i].strip() == "---":
        end = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == "---")
        options = yaml.safe_load("\n".join(lines[i + 1:end])) or {}
        return options, end + 1
    while i < len(lines):
        m = re.match(r"^:([\w-]+):\s*(.*)$", lines[i])
        if not m:
            break
        try:
            options[m.group(1)] = yaml.safe_load(m.group(2)) if m.group(2) else True
        except yaml.YAMLError:
            options[m.group(1)] = m.group(2)
        i += 1
    return options, i


def read_cell(lines: list[str], i: int, fence: str) -> tuple[Cell, int]:
    meta, j = read_options(lines, i + 1)
    body = []
    while j < len(lines) and lines[j].rstrip() != fence:
        body.append((j + 1, lines[j]))
        j += 1
    return Cell(i + 1, meta, body), j + 1


# --- sources ----------------------------------------------------------------------------

ROLE = re.compile(r"\{(ref|numref|eq|prf:ref)\}`(?:[^`<]*<)?([^`>]+)>?`")
LABEL = re.compile(r"^\((?P<a>[\w-]+)\)=|:label:\s*(?P<b>[\w-]+)|"
                   r"^\s*:?name:\s*(?P<c>[\w-]+)", re.MULTILINE)


def labels_of(text: str) -> set[str]:
    return {m.group("a") or m.group("b") or m.group("c") for m in LABEL.finditer(text)}


def chapter_labels(text: str) -> set[str]:
    """Labels placed right before a heading (chapter and section labels)."""
    lines = text.splitlines()
    return {m.group(1) for i, line in enumerate(lines[:-1])
            if (m := re.fullmatch(r"\(([\w-]+)\)=", line.strip()))
            and lines[i + 1].startswith("#")}


def included_lines(path: Path, options: dict) -> list[tuple[int, str]]:
    """The lines a {literalinclude} shows (whole file, :lines: or :pyobject:)."""
    lines = path.read_text().splitlines()
    numbered = list(enumerate(lines, 1))
    if "pyobject" in options:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if getattr(node, "name", None) == options["pyobject"]:
                return numbered[node.lineno - 1 - len(getattr(node, "decorator_list", [])):
                                node.end_lineno]
    if "lines" in options:
        keep: set[int] = set()
        for chunk in str(options["lines"]).split(","):
            a, _, b = chunk.partition("-")
            keep.update(range(int(a), int(b or a) + 1) if b or not _ else
                        range(int(a), len(lines) + 1))
        return [(k, t) for k, t in numbered if k in keep]
    return numbered


def check_sources(root: Path, files: list[Path] | None, width: int) -> list[Finding]:
    parts = toc_parts(root)
    part_of = {doc: k for k, (_, docs) in enumerate(parts) for doc in docs}
    texts = {doc: (root / f"{doc}.md").read_text() for _, docs in parts for doc in docs
             if (root / f"{doc}.md").exists()}
    part_labels = [set().union(*(labels_of(texts.get(d, "")) for d in docs))
                   for _, docs in parts]
    all_chapter_labels = set().union(*(chapter_labels(t) for t in texts.values()))
    docs = [str(f.resolve().relative_to(root.resolve()).with_suffix("")) for f in files] \
        if files else list(texts)
    findings = []
    for doc in docs:
        path = root / f"{doc}.md"
        text = path.read_text()
        rel = str(path.relative_to(root))
        cells, directives, prose, literal = parse_markdown(text)
        add = lambda line, rule, msg: findings.append(Finding(rel, line, rule, msg))  # noqa: E731
        for cell in cells:
            for line, code in cell.lines:
                if len(code) > width:
                    add(line, "width", f"code line of {len(code)} characters (limit {width})")
            check_cell_plumbing(cell, add)
            figure = (cell.meta.get("mystnb") or {}).get("figure")
            if figure is not None:
                if not str(figure.get("caption", "")).strip():
                    add(cell.line, "figure", "figure without a caption")
                name = figure.get("name")
                if not name:
                    add(cell.line, "figure", "figure without a name")
                elif not re.search(r"\{numref\}`(?:[^`<]*<)?" + re.escape(name) + r">?`",
                                   text):
                    add(cell.line, "figure", f"figure {name} is not cited with {{numref}}")
        for line, code in literal:
            if len(code) > width:
                add(line, "width", f"line of {len(code)} characters in a code block "
                    f"(limit {width})")
        for name, argument, options, line in directives:
            if name == "exercise":
                if "nonumber" not in options:
                    add(line, "exercise", "exercise without :nonumber: (the book would "
                        "number it book-wide; use the course's numbering in its title)")
                if not COURSE_LABEL.match(argument.strip()):
                    add(line, "exercise", f"exercise title {argument.strip()!r} does not "
                        "start with the course's label (Question 3.1, Problem 2, ...)")
            if name == "literalinclude":
                target = (path.parent / argument.strip()).resolve()
                if target.exists():
                    for n, code in included_lines(target, options):
                        if len(code) > width:
                            add(line, "width", f"{target.relative_to(root.resolve())}:{n}: "
                                f"included line of {len(code)} characters (limit {width})")
        for line, content in prose:
            if re.match(r"#{1,6}\s", content) and ("$" in content or "{math}" in content):
                add(line, "heading-math", f"math in a heading: {content.strip()!r}")
        k = part_of.get(doc)
        for m in ROLE.finditer(text):
            role, target = m.group(1), m.group(2)
            line = text.count("\n", 0, m.start()) + 1
            if k is None or target in part_labels[k]:
                continue
            if role == "ref" and target in all_chapter_labels:
                continue                       # rendered as a website link in hand-in PDFs
            add(line, "xref", f"{{{role}}}`{target}` points outside this homework set "
                "(only {ref} to a chapter or section label may cross homework sets)")
    return findings


def statements(source: str) -> list[ast.stmt] | None:
    code = "\n".join(line for line in source.splitlines()
                     if not line.lstrip().startswith(("%", "!")))
    try:
        return ast.parse(code).body
    except SyntaxError:
        return None


def check_cell_plumbing(cell: Cell, add) -> None:
    body = statements(cell.source)
    tags = cell.tags
    if "parameters" in tags and not tags & HIDDEN:
        add(cell.line, "plumbing", "parameters cell: tag it hide-cell (hand-in PDFs hide it)")
    if body and all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in body) \
            and not tags & HIDDEN:
        add(cell.line, "plumbing", "imports cell: tag it hide-cell")
    if body and all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
                    and getattr(s.value.func, "id", "") == "glue" for s in body) \
            and not tags & HIDDEN:
        add(cell.line, "plumbing", "glue-only cell: tag it remove-cell or hide-cell")
    if (cell.meta.get("mystnb") or {}).get("figure") is not None \
            and tags & {"remove-input", "remove-cell"}:
        add(cell.line, "plumbing", "figure code removed from the website: use hide-input")


# --- executed outputs -----------------------------------------------------------------

REPR = re.compile(r"<[\w.]+(?: object)? at 0x[0-9a-fA-F]+>|^\[?<(?:matplotlib|mpl_toolkits)"
                  r"\.|^\[?Text\(|^<Figure size |^<Axes", re.MULTILINE)
ABSPATH = re.compile(r"(?<![\w.~:/-])/(?:tmp|root|work|home|usr|opt|var|srv|mnt|private|"
                     r"Users|proc)(?:/[\w.-]+)+")


def output_texts(output: dict) -> list[str]:
    if output["output_type"] == "stream":
        return ["".join(output["text"]) if isinstance(output["text"], list) else output["text"]]
    if output["output_type"] == "error":
        return ["\n".join(output.get("traceback", []))]
    data = output.get("data", {})
    texts = []
    for mime in ("text/plain", "text/html", "text/markdown", "text/latex"):
        if mime in data:
            value = data[mime]
            texts.append("".join(value) if isinstance(value, list) else value)
    return texts


def check_outputs(root: Path, executed: Path, width: int = WIDTH) -> list[Finding]:
    findings = []
    for nb_path in sorted(executed.rglob("*.ipynb")):
        doc = nb_path.relative_to(executed).with_suffix("")
        source = root / f"{doc}.md"
        rel = str(source.relative_to(root)) if source.exists() else str(nb_path)
        md_cells = parse_markdown(source.read_text())[0] if source.exists() else []
        nb = json.loads(nb_path.read_text())
        code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
        for k, cell in enumerate(code_cells):
            line = md_cells[k].line if k < len(md_cells) else 0
            add = lambda rule, msg: findings.append(Finding(rel, line, rule, msg))  # noqa: E731
            meta = cell.get("metadata", {})
            figure = (meta.get("mystnb") or {}).get("figure") or {}
            images = 0
            for out in cell.get("outputs", []):
                if "scrapbook" in out.get("metadata", {}):
                    continue                   # glued values are not shown where they are made
                data = out.get("data", {})
                has_image = any(m.startswith("image/") for m in data)
                images += has_image
                for text in output_texts(out):
                    if has_image and text.startswith("<Figure size"):
                        continue               # the text alternative of a shown image
                    if (out["output_type"] == "execute_result" or
                            out["output_type"] == "stream") and (m := REPR.search(text)):
                        add("repr", f"object repr in an output: {m.group(0)!r}")
                    if m := ABSPATH.search(text):
                        add("abspath", f"absolute path in an output: {m.group(0)!r}")
                if out["output_type"] in ("stream", "execute_result") and not has_image:
                    texts = output_texts(out)[:1]
                    longest = max((len(x) for t in texts for x in t.splitlines()), default=0)
                    if longest > width:
                        add("output-width", f"printed line of {longest} characters "
                            f"(limit {width})")
                if out["output_type"] == "stream" and out.get("name") == "stderr":
                    first = output_texts(out)[0].strip().splitlines()
                    add("stderr", f"stderr output: {first[0][:100] if first else ''!r}")
            if images and not (figure.get("caption") and figure.get("name")):
                add("figure", f"{images} image(s) from a cell without a figure "
                    "caption and name")
            elif images > 1:
                add("figure", f"{images} images from one figure cell (one figure per cell)")
    return findings


# --- PDFs ---------------------------------------------------------------------------------

MISSING = re.compile(r"Missing character: There is no (\S+ \(U\+[0-9A-F]+\)) in font ([^!\n]+)")
OVERFULL = re.compile(r"Overfull \\hbox \(([\d.]+)pt too wide\) .*?lines? (\d+)")
UNDEFINED = re.compile(r"LaTeX Warning: (Reference|Citation) `([^']+)' on page (\d+) undefined")
DOC_START = re.compile(r"\\label\{\\detokenize\{([^{}]+?)::doc\}\}")


def unwrap_log(text: str) -> str:
    """TeX wraps its log at 79 characters; join the pieces back into lines."""
    out, pending = [], ""
    for line in text.splitlines():
        if len(line) == 79:
            pending += line
        else:
            out.append(pending + line)
            pending = ""
    return "\n".join(out + ([pending] if pending else []))


def doc_at(tex_lines: list[str], line: int) -> str:
    """The source document of a line of Sphinx's .tex (the last ::doc label before it)."""
    for k in range(min(line, len(tex_lines)) - 1, -1, -1):
        if m := DOC_START.search(tex_lines[k]):
            return f"{m.group(1)}.md"
    return "(front matter)"


def pdf_outline(pdf: Path) -> list[tuple[int, str, int]]:
    """(level, title, 1-based page) of every outline entry, in order."""
    from pypdf import PdfReader

    reader = PdfReader(str(pdf))
    out: list[tuple[int, str, int]] = []

    def walk(items, level):
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
            else:
                out.append((level, str(item.title), reader.get_destination_page_number(item) + 1))

    walk(reader.outline, 0)
    return out


def pdftotext(pdf: Path, first: int, last: int) -> str:
    return subprocess.run(["pdftotext", "-layout", "-f", str(first), "-l", str(last),
                           str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def page_count(pdf: Path) -> int:
    from pypdf import PdfReader

    return len(PdfReader(str(pdf)).pages)


def check_pdfs(root: Path, pdf_dir: Path, overfull_pt: float) -> list[Finding]:
    findings = []
    manifest_path = pdf_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    pdfs = sorted(pdf_dir.glob("*.pdf"))
    if not pdfs:
        return [Finding(str(pdf_dir), 0, "missing", "no PDF built (run `make pdf`)")]
    for pdf in pdfs:
        name = pdf.stem
        rel = str(pdf.relative_to(root)) if pdf.is_relative_to(root) else str(pdf)
        latex = pdf_dir / "work" / name / "_build" / "latex"
        log, tex = latex / f"{name}.log", latex / f"{name}.tex"
        if log.exists():
            log_text = unwrap_log(log.read_text(errors="replace"))
            tex_lines = tex.read_text(errors="replace").splitlines() if tex.exists() else []
            seen = set()
            for m in MISSING.finditer(log_text):
                if m.group(1) not in seen:
                    seen.add(m.group(1))
                    findings.append(Finding(rel, 0, "missing-char",
                                            f"no glyph for {m.group(1)} in {m.group(2)}"))
            for m in OVERFULL.finditer(log_text):
                if float(m.group(1)) > overfull_pt:
                    line = int(m.group(2))
                    findings.append(Finding(rel, 0, "overfull",
                                            f"{m.group(1)} pt too wide in {doc_at(tex_lines, line)} "
                                            f"({name}.tex line {line})"))
            for kind, key, page in sorted(set(UNDEFINED.findall(log_text))):
                findings.append(Finding(rel, 0, "undefined",
                                        f"{kind.lower()} {key} undefined (page {page})"))
        else:
            findings.append(Finding(rel, 0, "missing", f"no LaTeX log at {log}"))
        outline = pdf_outline(pdf)
        last_at_level: dict[int, str] = {}
        for level, title, page in outline:
            if re.search(r"\\[A-Za-z]|\$|\^\{|_\{|\\\(", title):
                findings.append(Finding(rel, 0, "outline", f"raw TeX in the outline: {title!r}"))
            if re.search(r"\bIndex\b", title):
                findings.append(Finding(rel, 0, "outline", f"index entry in the outline: {title!r}"))
            if last_at_level.get(level) == title:
                findings.append(Finding(rel, 0, "outline",
                                        f"duplicate outline entry {title!r} (page {page})"))
            last_at_level = {k: v for k, v in last_at_level.items() if k < level}
            last_at_level[level] = title
        pages = page_count(pdf)
        for k, (level, title, page) in enumerate(outline):
            nxt = next((p for lv, _, p in outline[k + 1:] if lv <= level), pages + 1)
            if nxt <= page:
                continue
            if not chapter_has_text(pdftotext(pdf, page, nxt - 1), title):
                findings.append(Finding(rel, 0, "empty-chapter",
                                        f"{title!r} (pages {page}-{nxt - 1}) has no content"))
        if name in manifest:
            first = " ".join(pdftotext(pdf, 1, 1).split())
            for field in TITLE_FIELDS:
                if field not in first:
                    findings.append(Finding(rel, 1, "title-page", f"first page lacks {field!r}"))
            for key, value in manifest[name].items():
                if value and " ".join(str(value).split()) not in first:
                    findings.append(Finding(rel, 1, "title-page",
                                            f"first page lacks the {key} {value!r}"))
    return findings


def chapter_has_text(text: str, title: str) -> bool:
    """Anything on these pages besides the heading, running heads and page numbers?"""
    words = set(re.findall(r"\w+", title.lower())) | {"chapter", "contents"}
    rest = [w for w in re.findall(r"[^\W\d_]{2,}", text.lower()) if w not in words]
    return len(rest) >= 15


def pdf_summary(pdf_dir: Path, overfull_pt: float) -> None:
    """Page counts and overfull-box counts (printed, not judged)."""
    for pdf in sorted(pdf_dir.glob("*.pdf")):
        log = pdf_dir / "work" / pdf.stem / "_build" / "latex" / f"{pdf.stem}.log"
        boxes = [float(m.group(1)) for m in OVERFULL.finditer(log.read_text(errors="replace"))] \
            if log.exists() else []
        big = sum(b > overfull_pt for b in boxes)
        print(f"{pdf.name}: {page_count(pdf)} pages, {len(boxes)} overfull boxes "
              f"({big} beyond {overfull_pt:g} pt, widest {max(boxes, default=0):.1f} pt)")


# --- the website in headless Chromium -------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-extensions", "--disable-sync",
                  "--mute-audio", "--hide-scrollbars",
                  # the network: every host name resolves to nothing but this machine
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                  "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1"]

PAGE_PROBE = r"""
(async () => {
  const deadline = Date.now() + 10000;
  const loading = document.querySelector('script[src*="mathjax"]');
  while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)
         && loading && document.querySelector('.math') && Date.now() < deadline)
    await new Promise(r => setTimeout(r, 100));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise)
    await MathJax.startup.promise;
  const math = [...document.querySelectorAll('span.math, div.math')];
  const unrendered = math.filter(e => !e.querySelector('mjx-container'))
                         .map(e => e.textContent.slice(0, 60));
  const prose = document.querySelector('article') || document.body;
  const copy = prose.cloneNode(true);
  copy.querySelectorAll('pre, code, script, style, mjx-container, .math')
      .forEach(e => e.remove());
  const text = copy.innerText || copy.textContent;
  const raw = (text.match(/\$\$|\\\(|\\\[|\\begin\{/g) || []).length;
  const pres = [...document.querySelectorAll('div.highlight pre, div.output pre')]
     .filter(p => p.offsetParent !== null);
  const clipped = pres.filter(p => p.scrollWidth > p.clientWidth + 1)
     .map(p => ({lines: p.textContent.split('\n').reduce((a, l) => Math.max(a, l.length), 0),
                 first: p.textContent.split('\n')[0].slice(0, 60)}));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href)
     .filter(h => h.startsWith(location.origin)).map(h => h.split('#')[0].split('?')[0]);
  return JSON.stringify({links: [...new Set(links)], math: math.length, rendered: document.querySelectorAll('mjx-container').length,
                         unrendered, raw, pres: pres.length, clipped});
})()
"""

WIDTH_PROBE = r"""
(() => {
  const pre = document.querySelector('div.cell_input div.highlight pre')
           || document.querySelector('div.highlight pre');
  if (!pre) return JSON.stringify(null);
  const style = getComputedStyle(pre);
  const span = document.createElement('span');
  span.textContent = '0'.repeat(200);
  span.style.font = style.font;
  span.style.whiteSpace = 'pre';
  pre.appendChild(span);
  const char = span.getBoundingClientRect().width / 200;
  span.remove();
  const inner = pre.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return JSON.stringify({viewport: window.innerWidth, font: style.fontSize,
                         chars: Math.floor(inner / char + 1e-6)});
})()
"""


class Chromium:
    """A headless Chromium on a pipe-free DevTools websocket (tornado's client)."""

    def __init__(self, width: int = 1280, height: int = 900):
        exe = shutil.which("chromium") or shutil.which("chromium-browser") \
            or shutil.which("google-chrome")
        if exe is None:
            raise SystemExit("headless Chromium is missing: apt-get install -y chromium")
        self.profile = tempfile.mkdtemp(prefix="book-chromium-")
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.time() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise SystemExit("headless Chromium did not start")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        import urllib.request

        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        page = next(t for t in targets if t["type"] == "page")
        from tornado.ioloop import IOLoop
        from tornado.websocket import websocket_connect

        self.loop = IOLoop()
        self.ws = self.loop.run_sync(lambda: websocket_connect(page["webSocketDebuggerUrl"],
                                                               max_message_size=1 << 28))
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable")

    def call(self, method: str, timeout: float = 60, **params):
        self.next_id += 1
        ident = self.next_id

        async def go():
            await self.ws.write_message(json.dumps({"id": ident, "method": method,
                                                    "params": params}))
            while True:
                msg = json.loads(await self.ws.read_message())
                if msg.get("id") == ident:
                    return msg
                self.events.append(msg)

        msg = self.loop.run_sync(go, timeout=timeout)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg["result"]

    def wait_for(self, method: str, timeout: float = 60) -> None:
        async def go():
            while True:
                msg = json.loads(await self.ws.read_message())
                self.events.append(msg)
                if msg.get("method") == method:
                    return

        self.loop.run_sync(go, timeout=timeout)

    def open(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, script: str):
        result = self.call("Runtime.evaluate", expression=script, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails'].get('text')}")
        return json.loads(result["result"]["value"])

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        import base64

        params = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"],
                              "height": min(size["height"], 6000), "scale": 1}
            params["captureBeyondViewport"] = True
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))

    def close(self) -> None:
        try:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - best effort
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def serve(directory: Path):
    """A static HTTP server for the site on 127.0.0.1 (a free port), in a thread."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def site_pages(html: Path) -> list[Path]:
    skip = {"genindex.html", "search.html", "prf-prf.html", "py-modindex.html"}
    return [p for p in sorted(html.rglob("*.html"))
            if p.name not in skip and not {"_static", "_sources", "reports"} & set(p.parts)
            and 'http-equiv="Refresh"' not in p.read_text(errors="replace")[:2000]]


def check_browser(root: Path, html: Path, screenshots: Path | None,
                  width: int = 1280) -> list[Finding]:
    if not (html / "index.html").exists():
        return [Finding(str(html), 0, "missing", "no website built (run `make html`)")]
    server = serve(html)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    browser = Chromium(width=width)
    findings = []
    try:
        for page in site_pages(html):
            rel_html = page.relative_to(html)
            source = root / rel_html.with_suffix(".md")
            rel = str(source.relative_to(root)) if source.exists() else f"_build/html/{rel_html}"
            browser.open(f"{base}/{rel_html.as_posix()}")
            probe = browser.evaluate(PAGE_PROBE)
            for event in browser.events:
                if event.get("method") == "Network.requestWillBeSent":
                    url = event["params"]["request"]["url"]
                    if not url.startswith((base, "data:", "blob:", "about:")):
                        findings.append(Finding(rel, 0, "offline", f"requests {url[:120]}"))
                if event.get("method") == "Network.responseReceived":
                    response = event["params"]["response"]
                    if response["status"] >= 400 and not response["url"].endswith("/favicon.ico"):
                        findings.append(Finding(rel, 0, "broken",
                                                f"{response['status']} for {response['url']}"))
            for link in probe["links"]:
                target = html / link[len(base) + 1:]
                if target.is_dir():
                    target = target / "index.html"
                if not target.exists():
                    findings.append(Finding(rel, 0, "broken", f"link to a missing file: "
                                            f"{link[len(base) + 1:]}"))
            if probe["unrendered"]:
                findings.append(Finding(rel, 0, "math", f"{len(probe['unrendered'])} of "
                                        f"{probe['math']} formulas not rendered, e.g. "
                                        f"{probe['unrendered'][0]!r}"))
            if probe["raw"]:
                findings.append(Finding(rel, 0, "math", f"{probe['raw']} raw TeX delimiters "
                                        "in the page text"))
            for clip in probe["clipped"]:
                findings.append(Finding(rel, 0, "clipped",
                                        f"code block with a scrollbar ({clip['lines']} characters"
                                        f" wide): {clip['first']!r}"))
            print(f"  {rel_html}: {probe['rendered']} formulas rendered of {probe['math']}, "
                  f"{len(probe['clipped'])} of {probe['pres']} code blocks clipped", flush=True)
            if screenshots is not None:
                screenshots.mkdir(parents=True, exist_ok=True)
                browser.screenshot(screenshots / f"{rel_html.with_suffix('').as_posix().replace('/', '--')}.png",
                                   full_page=True)
    finally:
        browser.close()
        server.shutdown()
    return findings


def measure_code_width(html: Path, widths: list[int]) -> None:
    """How many characters of code fit on one line of the HTML theme, per window width."""
    server = serve(html)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    pages = [p for p in site_pages(html) if "chapters" in p.parts and p.name != "index.html"]
    try:
        for width in widths:
            browser = Chromium(width=width)
            try:
                browser.open(f"{base}/{pages[0].relative_to(html).as_posix()}")
                print(f"window {width}px: {browser.evaluate(WIDTH_PROBE)}")
            finally:
                browser.close()
    finally:
        server.shutdown()


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["sources", "outputs", "pdf", "browser", "all",
                                         "measure-width"])
    parser.add_argument("files", nargs="*", type=Path, help="chapter sources (sources only)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the book's checkout")
    parser.add_argument("--width", type=int, default=WIDTH, help="longest code line allowed")
    parser.add_argument("--overfull-pt", type=float, default=OVERFULL_PT,
                        help="overfull boxes wider than this fail")
    parser.add_argument("--screenshots", type=Path, help="save a PNG of every page here")
    parser.add_argument("--window", type=int, default=1280, help="browser window width")
    parser.add_argument("--summary", action="store_true",
                        help="one line per file: how many findings of each rule")
    args = parser.parse_intermixed_args(argv)
    global SUMMARY
    SUMMARY = args.summary
    root = args.root.resolve()
    status = 0
    start = time.time()
    if args.what in ("sources", "all"):
        files = [f.resolve() for f in args.files] or None
        status |= report(check_sources(root, files, args.width), "sources")
    if args.what in ("outputs", "all"):
        status |= report(check_outputs(root, root / "_build" / "jupyter_execute", args.width),
                         "outputs")
    if args.what in ("pdf", "all"):
        pdf_summary(root / "_build" / "pdf", args.overfull_pt)
        status |= report(check_pdfs(root, root / "_build" / "pdf", args.overfull_pt), "pdf")
    if args.what in ("browser", "all"):
        status |= report(check_browser(root, root / "_build" / "html", args.screenshots,
                                       args.window), "browser")
    if args.what == "measure-width":
        measure_code_width(root / "_build" / "html", [1024, 1280, 1440, 1920])
    print(f"check {args.what}: {time.time() - start:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
