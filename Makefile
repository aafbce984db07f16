# Two commands for a fresh machine: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install demo test test-fast lint bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh examples/plugins/rootfree-examples/pyproject.toml
	bash scripts/install.sh $(VENV)
	touch $@

demo: install
	$(VENV)/bin/rootfree demo

test: install
	bash scripts/ensure_services.sh
	$(PY) -m ruff check optimizers search_spaces workers service tests bench
	@# Two runs: what starts no Ray on three workers (pytest-xdist: they wait on subprocesses and
	@# PostgreSQL too; 2 min 33 s vs 3 min 21 s on two), then the tests that start Ray (marker `ray`,
	@# tests/conftest.py) one at a time. Tried and measured worse (README): two Ray tests at a time,
	@# and the no-Ray tests beside the Ray ones under nice; on 2 cores both starve timed tests.
	$(PY) -m pytest -q -x -n 3 -m "not ray" --durations=10
	$(PY) -m pytest -q -x -m ray --durations=15

# For iterating: unit and API tests only (no Ray, no PostgreSQL, nothing over ~3 s), on both cores.
test-fast: install
	$(PY) -m ruff check optimizers search_spaces workers service tests bench
	$(PY) -m pytest -q -x -n 2 -m "not slow and not postgres"

bench: install
	$(PY) bench/optimizer_step.py
	$(PY) bench/half_matmul.py
	$(PY) bench/trial_overhead.py
	$(PY) bench/api_latency.py
	$(PY) bench/scheduler.py
	$(PY) bench/search_cost.py
