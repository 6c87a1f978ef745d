# Two commands (see README): `make run` sets up and runs the main job; `make test` sets up and runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 8
TARGET ?= results/table6.csv
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM = false

.PHONY: setup corpus-packages run test lint bench clean

$(BIN)/.installed: requirements.txt requirements-embedded.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-embedded.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(BIN)/.installed corpus-packages

# The default corpus is Debian's English text packages; installed when we may (root with apt), else say how.
corpus-packages:
	@if [ ! -d /usr/share/games/fortunes ] || [ ! -f /usr/share/doc/jargon-text/jargon.txt.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fortunes jargon-text) >/dev/null; \
	  else \
	    echo "note: install Debian's 'fortunes' and 'jargon-text' for the default corpus, or set corpus.source: python_docs"; \
	  fi; \
	fi

run: setup
	$(BIN)/snakemake --cores $(CORES) $(TARGET)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/python benchmarks/bench_extraction.py

clean:
	rm -rf results logs benchmarks/*/ .snakemake
