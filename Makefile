# vidcap: `make demo` captions sample videos with a tiny model on this machine; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
export OMP_NUM_THREADS ?= 1
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

# submit / caption options (make submit MANIFEST=data.csv MODEL=llava-hf/llava-v1.6-mistral-7b-hf ...)
MANIFEST ?= manifests/example.csv
RUN ?= runs/$(basename $(notdir $(MANIFEST)))
MODEL ?=
ENGINE ?= hf
EXECUTOR ?= slurm
SHARDS ?= 8
PROFILE ?=
ARGS ?=
# one shell word, whatever the value holds (spaces, quotes, $): $(call q,$(MANIFEST))
q = '$(subst ','\'',$(1))'

.PHONY: help setup test demo submit status resume merge bench cluster-up cluster-down clean

help:
	@echo "make setup        create .venv (torch==2.13.0 CPU first, then vidcap with every extra)"
	@echo "make demo         caption sample videos end to end with a tiny random model (local executor)"
	@echo "make test         setup + test Slurm cluster + the whole test suite"
	@echo "make submit       MANIFEST=... MODEL=... [RUN=...] [SHARDS=8] [PROFILE=slurm/profiles/x.toml] [ARGS=...]"
	@echo "make status|resume|merge RUN=..."
	@echo "make bench        run the benchmarks in bench/"
	@echo "make cluster-up / cluster-down   the single-node test Slurm cluster on loopback"

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -c constraints.txt -e '.[all,test]'
	@touch $(STAMP)

test: setup cluster-up
	VIDCAP_REQUIRE_SLURM=1 $(BIN)/python -m pytest -q

demo: setup
	$(BIN)/python -m vidcap demo --dir demo

submit: setup
	@test -n "$(MODEL)" || { echo "make submit needs MODEL=... (e.g. llava-hf/llava-v1.6-mistral-7b-hf)"; exit 2; }
	$(BIN)/vidcap submit $(call q,$(MANIFEST)) --run $(call q,$(RUN)) --engine $(call q,$(ENGINE)) \
		--model $(call q,$(MODEL)) --shards $(call q,$(SHARDS)) --executor $(call q,$(EXECUTOR)) \
		$(if $(PROFILE),--profile $(call q,$(PROFILE))) $(ARGS)

status: setup
	$(BIN)/vidcap status $(call q,$(RUN))

resume: setup
	$(BIN)/vidcap resume $(call q,$(RUN)) $(ARGS)

merge: setup
	$(BIN)/vidcap merge $(call q,$(RUN)) --output $(call q,$(RUN)/captions.csv)

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

cluster-up:
	bash slurm/cluster-up.sh

cluster-down:
	bash slurm/cluster-down.sh

clean:
	rm -rf demo .pytest_cache
