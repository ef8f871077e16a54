# syntax=docker/dockerfile:1
#
# The respool operator image: `respool run` as a non-root user on a slim Python base.
#
#   docker build -t ghcr.io/respool/respool:0.1.0 .
#   docker run --rm ghcr.io/respool/respool:0.1.0 --version
#
# The Python closure is exactly the runtime part of uv.lock (the lock the test suite runs
# with): `uv sync --locked` installs it and nothing else, and refuses to build when
# pyproject.toml and uv.lock disagree; refresh the lock with `.venv/bin/uv lock` (README).
# Nothing here needs a container engine to be reviewed: the Helm chart and manifests/ run this
# image with a read-only root filesystem, so the image writes nothing outside /tmp.

# Any base with python3 >= 3.11 (and its venv module) on PATH and groupadd/useradd: the official
# slim image by default (pin it by digest in release builds: python:3.11-slim-bookworm@sha256:...),
# or, where no registry can be reached, one made from Debian's packages (scripts/image.sh).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# The lock's own installer, at the version the lock pins (the dev extra; a test checks they agree).
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/respool \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
WORKDIR /src
# Behind a TLS-intercepting proxy, give the build its CA bundle as a secret (it never lands in a
# layer): --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt (scripts/image.sh
# does). Without the secret the base image's own trust store is used.
RUN printf '%s\n' 'if [ -s /run/secrets/ca-certificates ]; then' \
        '  export PIP_CERT=/run/secrets/ca-certificates SSL_CERT_FILE=/run/secrets/ca-certificates' \
        'fi' > /src/trust-build-ca.sh
# uv in a venv of its own (a distribution's python3 may refuse pip installs, PEP 668); it stays
# in this stage.
RUN --mount=type=secret,id=ca-certificates,required=false . /src/trust-build-ca.sh \
    && python3 -m venv /opt/uv && /opt/uv/bin/pip install "uv==${UV_VERSION}"
ENV PATH=/opt/uv/bin:$PATH
# Dependencies first (their layer is reused while only the source changes): the runtime
# closure of uv.lock, no extras, nothing resolved anew. The venv uses the base image's python3.
COPY pyproject.toml uv.lock README.md /src/
RUN --mount=type=secret,id=ca-certificates,required=false . /src/trust-build-ca.sh \
    && uv venv --python python3 /opt/respool \
    && uv sync --locked --no-editable --no-install-project
# Then respool itself, as a regular (not editable) install built with the locked build
# backend (pyproject.toml's build-constraint-dependencies).
COPY operator /src/operator
RUN --mount=type=secret,id=ca-certificates,required=false . /src/trust-build-ca.sh \
    && uv sync --locked --no-editable

FROM ${BASE}
LABEL org.opencontainers.image.title="respool" \
      org.opencontainers.image.description="Kubernetes operator: reservable shared hardware (ResourcePool, ResourceReservation)" \
      org.opencontainers.image.source="https://github.com/respool/respool" \
      org.opencontainers.image.licenses="Apache-2.0"
# The byte code was compiled in the build stage; the root filesystem is read-only at run time.
ENV PATH=/opt/respool/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/respool /opt/respool
# A fixed numeric non-root user (65532, as distroless "nonroot"), so runAsNonRoot can verify it.
RUN groupadd --system --gid 65532 respool \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin respool
USER 65532:65532
WORKDIR /tmp
# 8080: liveness (/healthz), 9090: Prometheus metrics (loopback unless the chart exposes them).
EXPOSE 8080 9090
ENTRYPOINT ["respool"]
CMD ["run", "--log-format=json", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090", "--metrics-address=127.0.0.1"]
