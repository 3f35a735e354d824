# ttsfleet: `make demo` and `make test` each build .venv from scratch if needed.
# PyTorch goes in first (TORCH_SPEC; the CPU build here, see README for CUDA) so nothing pulls a second one.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TTSFLEET := $(VENV)/bin/ttsfleet
PYTEST_ARGS ?= -n 2 --dist loadfile --durations=10
GPU_DEVICE ?= cuda:0
GPU_OUT ?= gpu-check-out

.PHONY: demo test test-fast services lint typecheck bench bench-quick bench-fleet bench-bookkeeping bench-books gpu-wheels gpu-check gpu-check-small gpu-wer clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	touch $@

$(VENV)/.voice: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[voice,service]"
	touch $@

$(VENV)/.test: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[voice,kokoro,test]"
	touch $@

demo: $(VENV)/.voice
	$(TTSFLEET) run examples/

services:
	bash .ci/services.sh

test: $(VENV)/.test services
	$(VENV)/bin/ruff check schemas producer worker service tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)/.test
	$(PY) -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

lint: $(VENV)/.test
	$(VENV)/bin/ruff check schemas producer worker service tests bench
	$(VENV)/bin/mypy

# BENCH_DEVICE=cuda:0 runs both benchmarks on a GPU; BENCH_SPEED_ARGS="--broker-url redis://HOST:6379/N" picks
# the Redis the queue contenders use. The last line bench.speed prints is its JSON object.
BENCH_DEVICE ?= cpu
BENCH_SPEED_ARGS ?=

bench-quick: $(VENV)/.test
	$(PY) -m bench.engine --quick --device $(BENCH_DEVICE)
	$(PY) -m bench.speed --quick --device $(BENCH_DEVICE) $(BENCH_SPEED_ARGS)
	$(PY) -m bench.kokoro --quick --device $(BENCH_DEVICE)

# Segment leases measured (1 vs 2 workers, long job + notices FIFO vs segments) beside the simulator's
# predictions, then the 100-card plan (docs/fleet.md). BENCH_SPEED_ARGS picks the Redis, as for bench.
bench-fleet: $(VENV)/.test
	$(PY) -m bench.segments $(BENCH_SPEED_ARGS)

bench: $(VENV)/.test services
	$(PY) -m bench.engine --device $(BENCH_DEVICE)
	$(PY) -m bench.runtimes
	$(PY) -m bench.speed --device $(BENCH_DEVICE) $(BENCH_SPEED_ARGS)
	$(PY) -m bench.kokoro --device $(BENCH_DEVICE)
	$(PY) -m bench.bookkeeping $(BENCH_BOOKKEEPING_ARGS)

# The .m4b after a book's last chapter: one encode at the end against the last chapter's encode + a join.
bench-books: $(VENV)/.test
	$(PY) -m bench.books

# Bookkeeping at GPU speed (docs/benchmarks.md): `submit` and one worker with the model-free `null:` voice on
# Redis, SQLite and PostgreSQL; BENCH_BOOKKEEPING_ARGS="--checkout ../other" measures another checkout.
BENCH_BOOKKEEPING_ARGS ?=
bench-bookkeeping: $(VENV)/.test services
	$(PY) -m bench.bookkeeping $(BENCH_BOOKKEEPING_ARGS)

# The GPU check (docs/benchmarks.md): wheels for a bare device machine, the check itself, its CPU form.
gpu-wheels: $(VENV)/.test
	$(PY) -m bench.gpu_wheels

gpu-check: $(VENV)/.test
	PYTHON=$(PY) OUT=$(GPU_OUT) bash bench/gpu_check.sh --no-wheels --device $(GPU_DEVICE)

gpu-check-small: $(VENV)/.test
	$(PY) -m bench.gpu_check --device cpu --small --out $(GPU_OUT)

gpu-wer: $(VENV)/.test
	$(PY) -m bench.gpu_check --wer $(GPU_OUT)

clean:
	rm -rf $(VENV) ttsfleet-output ttsfleet.db ttsfleet.db-*
