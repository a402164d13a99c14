# Prometheus from Debian's package on the local base image, for `docker-compose up` where Docker Hub's
# prom/prometheus cannot be pulled (no registry): `make image-prometheus`, then PROMETHEUS_IMAGE=oegate-prometheus.
# Same interface as the official image: the binary is the entrypoint, the TSDB lives in /prometheus, user nobody.
ARG BASE_IMAGE=oegate-base:bookworm
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
