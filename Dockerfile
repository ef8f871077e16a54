# syntax=docker/dockerfile:1
#
# The respool operator image: `respool run` as a non-root user on a slim Python base.
#
#   docker build -t ghcr.io/respool/respool:0.1.0 .
#   docker run --rm ghcr.io/respool/respool:0.1.0 --version
#
# The runtime dependencies are pinned below, exactly (the versions the test suite runs with),
# so an image built later installs the same code; update them together with pyproject.toml.
# Nothing here needs a container engine to be reviewed: the Helm chart and manifests/ run this
# image with a read-only root filesystem, so the image writes nothing outside /tmp.

# Pin by digest in release builds (python:3.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/respool
ENV PATH=/opt/respool/bin:$PATH
# Dependencies first (their layer is reused while only the source changes), no resolver
# surprises: every package of the runtime closure is listed, and nothing else is allowed in.
RUN pip install --no-deps \
        aiohappyeyeballs==2.7.1 \
        aiohttp==3.14.5 \
        aiohttp-retry==2.9.1 \
        aiosignal==1.4.0 \
        annotated-types==0.8.0 \
        attrs==26.1.0 \
        certifi==2026.10.18 \
        charset-normalizer==3.5.2 \
        click==8.5.1 \
        durationpy==0.11 \
        frozenlist==1.8.0 \
        idna==3.20 \
        iso8601==2.1.0 \
        jsonpatch==1.47 \
        jsonpointer==3.12 \
        kopf==1.45.2 \
        kubernetes==37.0.2 \
        multidict==7.2.1 \
        oauthlib==4.0.1 \
        prometheus-client==0.26.0 \
        propcache==0.5.4 \
        pydantic==2.14.3 \
        pydantic-core==2.50.4 \
        python-dateutil==4.0.0 \
        python-json-logger==4.2.0 \
        pyyaml==6.0.3 \
        requests==2.34.2 \
        requests-oauthlib==2.0.0 \
        typing-extensions==4.16.0 \
        typing-inspection==0.4.5 \
        tzdata==2026.6 \
        urllib3==2.8.0 \
        websocket-client==1.9.2 \
        yarl==1.25.1 \
    && pip check
# The build backend, pinned too (pyproject.toml asks for setuptools>=68 and wheel), and used
# without build isolation so that nothing unpinned is fetched while building respool.
RUN pip install --no-deps setuptools==84.2.1 wheel==0.48.0
COPY pyproject.toml README.md /src/
COPY operator /src/operator
# --no-deps: the closure above is complete; `pip check` proves it. The build tools are not
# needed at run time and leave with this stage.
RUN pip install --no-deps --no-build-isolation /src \
    && pip uninstall --yes setuptools wheel \
    && pip check \
    && python -m compileall -q /opt/respool

FROM ${PYTHON_IMAGE}
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
# 8080: liveness (/healthz), 9090: Prometheus metrics (both set by the chart's arguments).
EXPOSE 8080 9090
ENTRYPOINT ["respool"]
CMD ["run", "--log-format=json", "--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090", "--metrics-address=0.0.0.0"]
