# Prometheus from Debian's package on the local base image, for `docker-compose up` where Docker Hub's
# prom/prometheus cannot be pulled (no registry): `make image-prometheus`, then PROMETHEUS_IMAGE=oegate-prometheus.
# As in the official image, the binary is the entrypoint; the TSDB is Debian's default (/var/lib/prometheus/metrics2),
# owned by Debian's `prometheus` user, which runs it.
ARG BASE_IMAGE=oegate-base:bookworm
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o prometheus -g prometheus /var/lib/prometheus/metrics2
# Debian's postinst picks the prometheus user's uid at install time, so there is no fixed number to name here.
# hadolint ignore=DL3066
USER prometheus
WORKDIR /var/lib/prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml"]
