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

# Any base with python3 >= 3.11 (and its venv module), openssl (the admission webhook makes its
# certificate with it) and groupadd/useradd on PATH: the official
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

# The runtime: the base with the venv and the user, less what only building or other programs
# need, flattened into one layer (files deleted in a layer above the base's would still count
# in the image's size). Removed: ensurepip and the pip/setuptools/wheel it installs from (Debian's
# python3-venv brings them for the build stage), distutils and lib2to3 (gone from Python 3.12
# and 3.13, so nothing in the locked closure, which supports those, imports them), pydoc's help
# topics, IDLE, tkinter and the regression-test package. Where Debian's packages brought them,
# they are purged with dpkg, so that the package database (what image scanners read) lists
# only what is there. The operator's own closure is untouched.
FROM ${BASE} AS runtime
COPY --from=build /opt/respool /opt/respool
# A fixed numeric non-root user (65532, as distroless "nonroot"), so runAsNonRoot can verify it.
RUN set -eu \
    && if command -v dpkg-query >/dev/null; then \
         packages="$(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' python3-venv \
             python3.11-venv python3-pip-whl python3-setuptools-whl python3-distutils \
             python3-lib2to3 2>/dev/null | awk '$1 == "ii" { print $2 }')"; \
         [ -z "$packages" ] || dpkg --purge $packages >/dev/null; \
       fi \
    && stdlib="$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
    && purelib="$(python3 -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
    && rm -rf "$stdlib/ensurepip" "$stdlib/distutils" "$stdlib/lib2to3" "$stdlib/pydoc_data" \
              "$stdlib/idlelib" "$stdlib/tkinter" "$stdlib/turtledemo" "$stdlib/test" \
              /usr/share/python-wheels "$purelib"/pip "$purelib"/pip-* "$purelib"/setuptools \
              "$purelib"/setuptools-* "$purelib"/pkg_resources "$purelib"/_distutils_hack \
              "$purelib"/distutils-precedence.pth "$purelib"/wheel "$purelib"/wheel-* \
              /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/bin/idle* /usr/local/bin/pydoc* \
              /usr/local/bin/2to3* /usr/local/bin/wheel \
    && groupadd --system --gid 65532 respool \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin respool \
    && { command -v openssl >/dev/null \
         || { echo "the base needs the openssl command (the webhook's certificate)" >&2; exit 1; }; } \
    && PYTHONDONTWRITEBYTECODE=1 /opt/respool/bin/respool run --help >/dev/null

FROM scratch
COPY --from=runtime / /
LABEL org.opencontainers.image.title="respool" \
      org.opencontainers.image.description="Kubernetes operator: reservable shared hardware (ResourcePool, ResourceReservation)" \
      org.opencontainers.image.source="https://github.com/respool/respool" \
      org.opencontainers.image.licenses="Apache-2.0"
# One layer from scratch keeps none of the base's configuration: PATH and LANG are set here.
# The byte code was compiled in the build stage; the root filesystem is read-only at run time.
ENV PATH=/opt/respool/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
# 8080: liveness (/healthz), 9090: Prometheus metrics (loopback unless the chart exposes them).
EXPOSE 8080 9090
ENTRYPOINT ["respool"]
CMD ["run", "--log-format=json", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090", "--metrics-address=127.0.0.1"]
