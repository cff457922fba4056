# One-command set-up: `make demo` builds the environment and packs/validates/benchmarks the sample;
# `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=  # e.g. https://download.pytorch.org/whl/cpu where the index serves CUDA builds
OUT ?= out
DATASET ?= data/gsm8k_sample.jsonl
PACKED_DATASET ?= $(OUT)/gsm8k_sample.packed
PACK_OPTS ?= --compression zstd

.PHONY: venv demo test test-fast lint build-dataset bench clean

venv: $(VENV)/.installed

# torch is installed first (from TORCH_INDEX when set) and pinned, so no dependency can pull
# another torch build.
$(VENV)/.installed: pyproject.toml setup.py src/shardpack/format/_speedups.c src/shardpack/codecs/_native_batch.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX))) "torch==$(TORCH_VERSION)"
	echo "torch==$(TORCH_VERSION)" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev,torch,torchdata,remote,dask,plot]"
	# a second step: resolved together with boto3/s3fs, datasets sends pip backtracking for long
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[arrow,pandas,hf]"
	touch $@

# Pack, validate and benchmark the shipped text sample and a generated 50 MB KD mix.
demo: venv
	mkdir -p $(OUT)
	$(PY) -m shardpack pack $(DATASET) --output $(OUT)/gsm8k_sample.packed --compression lz4 --validate
	$(PY) -m shardpack info $(OUT)/gsm8k_sample.packed
	$(PY) benchmarks/gen_kd_mix.py --output $(OUT)/kd_mix.jsonl --target-mb 50
	$(PY) -m shardpack pack $(OUT)/kd_mix.jsonl --output $(OUT)/kd_mix.packed --compression lz4 --validate
	$(PY) -m shardpack info $(OUT)/kd_mix.packed
	$(PY) -m shardpack validate $(OUT)/gsm8k_sample.packed $(OUT)/kd_mix.packed --deep
	$(PY) -m shardpack bench $(OUT)/kd_mix.packed --jsonl $(OUT)/kd_mix.jsonl --repeats 3
	$(PY) -m shardpack bench $(OUT)/gsm8k_sample.packed --jsonl $(DATASET) --repeats 3

test: venv
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

lint: venv
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

build-dataset: venv
	$(PY) -m shardpack pack $(DATASET) --output $(PACKED_DATASET) $(PACK_OPTS) --validate

clean:
	rm -rf $(OUT) .pytest_cache
