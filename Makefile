# The Attention Book. `make html` and `make test` do all the set-up they need.
#
#   make html      install, unpack the data mirror if present, build the HTML book
#   make test      install, unpack the data mirror if present, pytest + nbval (smoke profile)
#   make pdf       the whole book and one PDF per homework set (installs TeX Live with apt if missing);
#                  make pdf STUDENT="Ada Lovelace" STUDENT_ID=12345 puts a name on the hand-in title pages
#   make check-book  the book as readers see it: sources, outputs, PDFs, the website offline
#                  (after `make html` and `make pdf`; see scripts/check_book.py)
#   make run CHAPTER=chapters/nndl_s4/self_supervised_gaussian PROFILE=cpu PARAMS="-p seed=1"
#                  (PARAMS takes any option of python -m lib.run: --dry-run, --executor pool --workers 2, ...)
#   make sync      pair chapters/**/*.md with .ipynb for Jupyter (an .ipynb edited later than its .md is synced back)

PYTHON ?= python3
SHARED_DATA ?= ../shared/data
PROFILE ?= cpu
export BOOK_DATA_CACHE ?= $(HOME)/.cache/attention-book
export BOOK_BATCH = 1
# chapters, tests and builds import this checkout's lib, whatever another clone pip-installed
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
MIRROR := $(BOOK_DATA_CACHE)/mirror
CHAPTERS := $(shell find chapters -name '*.md' ! -name index.md | sort)

# The offline-data switch: BOOK_DATA_MIRROR. When the shared archives sit beside
# the book (machines without internet), `make data` unpacks them and the switch
# points at them; elsewhere it stays unset and torchvision downloads the data.
# Set BOOK_DATA_MIRROR yourself to use any other ImageFolder mirror.
ifneq ($(wildcard $(SHARED_DATA)/mnist-png.tar.gz),)
export BOOK_DATA_MIRROR ?= $(MIRROR)
endif

.PHONY: install data sync html pdf tex chromium test pytest nbval run clean \
	check-book check-sources check-outputs check-pdf check-browser

# Installs the requirements when they change, and `lib` (editable) when no checkout installed it yet.
# An editable install of another clone is left alone: re-pointing it would change what every other
# clone's scripts import. Make's targets (and `python -m lib.run`) use this checkout's lib anyway,
# through PYTHONPATH above.
_build/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m pip install -q -r requirements.txt
	@$(PYTHON) -I -c "import lib" 2>/dev/null || $(PYTHON) -m pip install -q --no-deps -e .
	@mkdir -p _build && touch $@

install: _build/.installed
	@$(PYTHON) -I -c "import lib, pathlib, sys; sys.exit(pathlib.Path(lib.__file__).resolve().parents[1] != pathlib.Path('$(CURDIR)').resolve())" 2>/dev/null \
	  || echo "note: a plain \`import lib\` outside make resolves to another checkout ($$($(PYTHON) -I -c 'import lib; print(lib.__file__)' 2>/dev/null)); make and python -m lib.run use this one's"

data:
ifneq ($(wildcard $(SHARED_DATA)/mnist-png.tar.gz),)
	@for name in mnist:mnist-png cifar10:cifar10-jpg; do \
	  dir=$(MIRROR)/$${name%%:*}; archive=$(SHARED_DATA)/$${name#*:}.tar.gz; \
	  if [ ! -f $$dir/.unpacked ]; then \
	    echo "unpacking $$archive into $$dir"; mkdir -p $$dir && tar xzf $$archive -C $$dir && touch $$dir/.unpacked; \
	  fi; \
	done
	@echo "data: offline mirror BOOK_DATA_MIRROR=$(BOOK_DATA_MIRROR)"
else
	@echo "data: no archives in $(SHARED_DATA); torchvision will download MNIST/CIFAR-10 (or set BOOK_DATA_MIRROR)"
endif

# `jupytext --sync` rewrites *both* paired files from the newer one, re-dumping each cell's YAML
# metadata at PyYAML's width, which reflows hand-wrapped captions in the .md even when nothing was
# edited; scripts/sync_chapters.py writes the .md only when its .ipynb really was edited.
sync:
	$(PYTHON) scripts/sync_chapters.py $(CHAPTERS) intro.md

html: install data
	BOOK_READ_ONLY=1 jupyter-book build -W -n --keep-going .
	@echo "The book is built: open $(CURDIR)/_build/html/index.html"

# the hand-in title pages: STUDENT and STUDENT_ID override handin_student(_id) in _config.yml
STUDENT ?=
STUDENT_ID ?=
pdf: install data
	@command -v xelatex >/dev/null && command -v latexmk >/dev/null && command -v pdftotext >/dev/null || $(MAKE) tex
	BOOK_READ_ONLY=1 $(PYTHON) scripts/build_pdfs.py $(if $(STUDENT),--student "$(STUDENT)") \
	  $(if $(STUDENT_ID),--student-id "$(STUDENT_ID)")

tex:
	apt-get update && apt-get install -y texlive-xetex texlive-latex-extra texlive-fonts-recommended \
	  texlive-fonts-extra texlive-science latexmk fonts-freefont-otf poppler-utils

chromium:
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }

# The book as readers and graders see it (issue 16). Each prints its findings per file
# (`path:line: rule: message`) and fails on any; the rules are in scripts/check_book.py.
# CHECK_ARGS=--summary prints one line per file instead.
CHECK_ARGS ?=
check-sources: install
	$(PYTHON) scripts/check_book.py sources $(CHECK_ARGS)
check-outputs: install       # needs `make html` (reads _build/jupyter_execute)
	$(PYTHON) scripts/check_book.py outputs $(CHECK_ARGS)
check-pdf: install           # needs `make pdf`
	@command -v pdftotext >/dev/null || $(MAKE) tex
	$(PYTHON) scripts/check_book.py pdf $(CHECK_ARGS)
check-browser: install chromium   # needs `make html`: the site in headless Chromium, network blocked
	$(PYTHON) scripts/check_book.py browser $(CHECK_ARGS)
check-book:
	@status=0; for check in sources outputs pdf browser; do \
	  $(MAKE) --no-print-directory check-$$check || status=1; done; exit $$status

pytest: install
	$(PYTHON) -m pytest -q tests

# smoke records are recomputed on every run, so a change in lib is always exercised. nbval executes
# notebooks generated from the .md sources into _build/nbval (same folder layout): the sources, and
# any .ipynb an author keeps beside them, are never written.
NBVAL_DIR := _build/nbval
nbval: install data
	rm -rf $(CURDIR)/_build/smoke-results $(NBVAL_DIR)
	$(PYTHON) -c 'import jupytext, pathlib, sys; [(out.parent.mkdir(parents=True, exist_ok=True), jupytext.write(jupytext.read(md), out)) for md in sys.argv[2:] for out in [pathlib.Path(sys.argv[1], md).with_suffix(".ipynb")]]' \
	  $(NBVAL_DIR) $(CHAPTERS) intro.md
	BOOK_PROFILE=smoke BOOK_RESULTS=$(CURDIR)/_build/smoke-results $(PYTHON) -m pytest -q -p no:cacheprovider \
	  --nbval-lax --nbval-kernel-name python3 $(addprefix $(NBVAL_DIR)/,$(CHAPTERS:.md=.ipynb)) $(NBVAL_DIR)/intro.ipynb

# `make test` must leave the tree as it found it: the state of tracked files (and the list of
# untracked ones) is compared before and after; executing chapters must not rewrite any source.
TREE_STATE = git status --porcelain 2>/dev/null; git diff 2>/dev/null
test:
	@$(SHELL) -c '$(TREE_STATE)' > _build/.tree-before 2>/dev/null || { mkdir -p _build && $(SHELL) -c '$(TREE_STATE)' > _build/.tree-before; }
	$(MAKE) pytest nbval
	@$(SHELL) -c '$(TREE_STATE)' > _build/.tree-after
	@cmp -s _build/.tree-before _build/.tree-after || { echo "make test changed the source tree:"; \
	  diff _build/.tree-before _build/.tree-after | head -40; exit 1; }
	@echo "make test: the source tree is unchanged"

# CHAPTER and PROFILE are checked before anything is installed, and the parameters (runner --check)
# before the data is unpacked or anything runs
run:
	@test -n "$(CHAPTER)" || { echo "make run needs CHAPTER=chapters/<part>/<name>, e.g." \
	  "make run CHAPTER=chapters/nndl_s4/self_supervised_gaussian PROFILE=smoke"; exit 2; }
	@test -f "$(CHAPTER)" -o -f "$(CHAPTER).md" || { echo "make run: no chapter $(CHAPTER) (nor $(CHAPTER).md);" \
	  "chapters are:"; find chapters -name '*.md' ! -name index.md | sed 's/\.md$$//; s/^/  /' | sort; exit 2; }
	@case "$(PROFILE)" in smoke|cpu|gpu) ;; *) echo "make run: PROFILE=$(PROFILE) is not a profile; valid: smoke, cpu, gpu"; exit 2;; esac
	@$(MAKE) --no-print-directory install
	@$(PYTHON) -m lib.run $(CHAPTER) --profile $(PROFILE) $(PARAMS) --check >/dev/null
	@$(MAKE) --no-print-directory data
	$(PYTHON) -m lib.run $(CHAPTER) --profile $(PROFILE) $(PARAMS)

clean:
	rm -rf _build chapters/**/*.ipynb intro.ipynb
