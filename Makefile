# The two commands: `make demo` and `make test`. Everything else is a step they run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
TOOLS  ?= $(CURDIR)/.tools
export SUBAGENT_TELEMETRY_TOOLS := $(TOOLS)

.PHONY: venv tools lint typecheck drift api-docs unit test demo bench render stack

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,otel,redis,dashboards,cost,tools,langgraph,claude-agent-sdk,openai-agents,pydantic-ai]'
	touch $@

tools:
	bash scripts/install-tools.sh $(TOOLS)

lint: venv
	$(VENV)/bin/ruff check exporter tests benchmarks scripts
	$(VENV)/bin/ruff format --check exporter tests benchmarks scripts

typecheck: venv
	$(VENV)/bin/mypy

# Rendered files are committed for the default config; fail when they drift from the renderer.
drift: venv
	$(VENV)/bin/subagent-telemetry render --check --out .

render: venv
	$(VENV)/bin/subagent-telemetry render --out .

# The API reference (pdoc) of every public module; warnings are errors (scripts/api_docs.py).
api-docs: venv
	$(PY) scripts/api_docs.py build/api > /dev/null

test: venv tools lint typecheck drift api-docs
	$(PY) -m pytest

demo: venv
	$(VENV)/bin/subagent-telemetry demo

# The compose stack without Docker (demo, Prometheus, Alertmanager on 127.0.0.1); Ctrl-C stops it.
stack: venv tools
	$(VENV)/bin/subagent-telemetry stack up

bench: venv
	$(PY) benchmarks/run.py
