# All set-up happens here: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: test demo bench docs lint format clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/medseg-zoo demo

# A network that makes confident predictions, for the inference benchmark's agreement (fitted once: ~8 min on the
# AVX-512 host of the published tables; ~29 s per step, over an hour, on an AVX2-only 2-core host under load).
BENCH_WEIGHTS := benchmarks/.cache/unetr_brats_synthetic.safetensors

$(BENCH_WEIGHTS): | $(STAMP)
	$(PY) benchmarks/fit_synthetic.py --steps 150 --output $@

bench: $(STAMP) $(BENCH_WEIGHTS)
	$(PY) benchmarks/bench_layers.py --output docs/benchmarks.md
	cd benchmarks && ../$(PY) bench_cpu_paths.py --repeats 5 --output ../docs/benchmarks.md
	$(PY) benchmarks/bench_unetr.py --output docs/benchmarks.md
	$(PY) benchmarks/bench_inference.py --weights $(BENCH_WEIGHTS) --repeats 5 --output docs/benchmarks.md
	$(PY) benchmarks/bench_training.py --epochs 3 --output docs/benchmarks.md
	$(PY) benchmarks/bench_transfer.py --output docs/benchmarks.md --plot docs/images/transfer_curves.png
	$(PY) benchmarks/bench_plan.py --output docs/benchmarks.md

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks examples docs/_hooks
	$(VENV)/bin/ruff check src tests benchmarks examples docs/_hooks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks examples docs/_hooks
	$(VENV)/bin/ruff check --fix src tests benchmarks examples docs/_hooks

clean:
	rm -rf $(VENV) site build .pytest_cache .ruff_cache
