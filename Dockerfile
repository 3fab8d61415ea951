# syntax=docker/dockerfile:1
# Image of the state-exporter daemon.
#
#   docker build -t flujo-state-exporter:0.1.0 .
#   docker run --rm -p 10078:10078 --group-add "$(stat -c %g /var/lib/flujo)" \
#     -v /var/lib/flujo:/var/lib/flujo flujo-state-exporter:0.1.0 run --db /var/lib/flujo/flujo_ops.db
#
# The DB directory is mounted writable and the container joins the app's group: reading a WAL-mode DB
# creates its -wal and -shm files when they are absent, and they must stay writable for the app.  Prepare the
# directory as for the systemd unit (setgid, group-writable; DB 0660): deploy/README.md, "Access to the DB".
#
# The base image is pinned to a patch release; in your registry, pin it by digest too
# (python:3.11.13-slim-bookworm@sha256:...), and let Renovate/Dependabot bump it.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: wheels of the project and of every dependency ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the package build reads (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --wheel-dir /wheels .

# ---- runtime: a venv installed offline from those wheels; no compilers, no build context ----
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="flujo-state-exporter" \
      org.opencontainers.image.description="Prometheus metrics, OTLP traces and maintenance jobs for the SQLite state DB of Flujo" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/state-exporter/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STATE_DIRECTORY=/var/lib/flujo-state-exporter
# pip compiles the bytecode at install time, so a read-only root filesystem costs nothing at start.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/state-exporter \
 && /opt/state-exporter/bin/pip install --no-cache-dir --no-index --find-links=/wheels flujo-state-exporter \
 && /opt/state-exporter/bin/state-exporter --version \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/flujo-state-exporter
# The daemon's own state (span-export watermark); mount a volume here to keep it.
WORKDIR /var/lib/flujo-state-exporter
# Non-root, numeric so that Kubernetes' runAsNonRoot can check it without a passwd entry.
USER 65532:65532
EXPOSE 10078
ENTRYPOINT ["state-exporter"]
CMD ["run", "--config", "/etc/flujo-state-exporter/config.yaml"]
