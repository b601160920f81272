# skiff's images, one family from this file (docs/tasks/images.md). Each target is an image of the same
# name (components/_image.py names and tags them):
#   skiff       every tabular step but validation, the model server (python -m serving predictor|transformer),
#               the rollout job, skiff stream, skiff api, the Feast feature server (feast serve)
#   skiff-tfdv  the skiff image's contents plus TFDV's own environment (/opt/tfdv) for the validation step
#   skiff-gpu   the skiff image's contents plus TensorFlow with CUDA
# Build from the repository root with BuildKit (Docker >= 23, DOCKER_BUILDKIT=1 on Docker 20.10, or
# podman/buildah): `make images`, or
#   docker build --target skiff -t ghcr.io/skiff-ml/skiff:0.1.0 .
# Build arguments: BASE_IMAGE (any Debian bookworm image with python3 3.11 and python3 -m venv; a site's own
# base), VERSION, REVISION, SOURCE (OCI labels). Build secret `extra_ca`: a PEM bundle trusted, besides the
# base's CAs, for the downloads of the build stages only (corporate TLS inspection):
#   docker build --secret id=extra_ca,src=corp-ca.pem ...
# It is mounted for one command at a time and never written to a layer or a final image.
# Dependencies come only from the hashed locks in requirements/ (`make lock`); skiff itself is installed
# from its wheel without dependencies, so an image holds exactly the locked set.

# checkov:skip=CKV_DOCKER_7: the base is ARG BASE_IMAGE, whose default is a pinned version tag (tests check it)
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

# ---- shared by every stage: the interpreter and the environment variables of a quiet, read-only process
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8

# ---- build tools: a throwaway environment with uv and setuptools (hashed), never copied into an image
FROM base AS build
COPY requirements/build.txt /tmp/requirements/build.txt
# The CA bundle for downloads: the base's, plus the extra_ca secret when one is given.
RUN --mount=type=secret,id=extra_ca \
    ca=/etc/ssl/certs/ca-certificates.crt; \
    if [ -s /run/secrets/extra_ca ]; then cat "$ca" /run/secrets/extra_ca > /tmp/ca.pem; ca=/tmp/ca.pem; fi; \
    python3 -m venv /opt/build \
    && PIP_CERT="$ca" /opt/build/bin/pip install --no-cache-dir --require-hashes -r /tmp/requirements/build.txt \
    && rm -f /tmp/ca.pem \
    && python3 -m venv --without-pip /opt/skiff

# ---- skiff's wheel (the package's own modules: skiff, components, pipelines, serving)
FROM build AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY skiff ./skiff
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
RUN /opt/build/bin/python -m pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheel .

# ---- the locked dependencies of the skiff image (one layer, cached while requirements/skiff.txt is unchanged)
# The dependencies' own test suites (their tests/ folders: pandas/tests, scipy/*/tests, ...; about 130 MB
# with their bytecode) are deleted: nothing at run time imports them, and tests/images imports every skiff
# module inside the image to prove it. Folders named test/ stay: some are APIs (tf.test, onnx.backend.test).
FROM build AS deps
COPY requirements/skiff.txt /tmp/requirements/skiff.txt
RUN --mount=type=secret,id=extra_ca \
    --mount=type=cache,target=/root/.cache/uv \
    ca=/etc/ssl/certs/ca-certificates.crt; \
    if [ -s /run/secrets/extra_ca ]; then cat "$ca" /run/secrets/extra_ca > /tmp/ca.pem; ca=/tmp/ca.pem; fi; \
    SSL_CERT_FILE="$ca" UV_NATIVE_TLS=1 UV_LINK_MODE=copy /opt/build/bin/uv pip install \
        --python /opt/skiff/bin/python --require-hashes --compile-bytecode -r /tmp/requirements/skiff.txt \
    && rm -f /tmp/ca.pem \
    && find /opt/skiff/lib/python3.11/site-packages -mindepth 2 -type d -name tests -prune -exec rm -rf {} +

# ---- the locked dependencies of the GPU image (TensorFlow with CUDA on top of the same set)
FROM build AS deps-gpu
COPY requirements/skiff-gpu.txt /tmp/requirements/skiff-gpu.txt
RUN --mount=type=secret,id=extra_ca \
    --mount=type=cache,target=/root/.cache/uv \
    ca=/etc/ssl/certs/ca-certificates.crt; \
    if [ -s /run/secrets/extra_ca ]; then cat "$ca" /run/secrets/extra_ca > /tmp/ca.pem; ca=/tmp/ca.pem; fi; \
    SSL_CERT_FILE="$ca" UV_NATIVE_TLS=1 UV_LINK_MODE=copy /opt/build/bin/uv pip install \
        --python /opt/skiff/bin/python --require-hashes --compile-bytecode -r /tmp/requirements/skiff-gpu.txt \
    && rm -f /tmp/ca.pem

# ---- TFDV's own environment. pyfarmhash and crcmod build from small sdists, so this stage has a compiler
FROM build AS tfdv-env
# python3-dev: a Debian base has no Python headers (python:3.11-slim has its own; the extra package is harmless).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc=4:12.2.0-3 g++=4:12.2.0-3 python3-dev=3.11.2-1+b1 \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/tfdv.txt /tmp/requirements/tfdv.txt
RUN --mount=type=secret,id=extra_ca \
    --mount=type=cache,target=/root/.cache/uv \
    ca=/etc/ssl/certs/ca-certificates.crt; \
    if [ -s /run/secrets/extra_ca ]; then cat "$ca" /run/secrets/extra_ca > /tmp/ca.pem; ca=/tmp/ca.pem; fi; \
    python3 -m venv --without-pip /opt/tfdv \
    && SSL_CERT_FILE="$ca" UV_NATIVE_TLS=1 UV_LINK_MODE=copy /opt/build/bin/uv pip install \
        --python /opt/tfdv/bin/python --require-hashes --compile-bytecode -r /tmp/requirements/tfdv.txt \
    && rm -f /tmp/ca.pem

# ---- what every final image shares: the user, the labels, the project files, the environment
FROM base AS runtime
RUN groupadd --system --gid 10001 skiff \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/skiff --create-home --shell /usr/sbin/nologin skiff
# Read-only root: everything a process writes goes under /tmp (an emptyDir or --tmpfs /tmp) or a mounted
# volume (the lake, the registry, the pipeline root); caches and config folders point there.
ENV PATH=/opt/skiff/bin:$PATH \
    VIRTUAL_ENV=/opt/skiff \
    HOME=/home/skiff \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    FEAST_USAGE=False \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1
# The pipeline's cluster arguments name /app/feature_repo (pipelines/tabular_run.py); examples/ holds the
# dataset specs skiff's CLI finds by relative path from /app.
WORKDIR /app
COPY feature_repo ./feature_repo
COPY examples ./examples
VOLUME ["/tmp"]
# Batch steps and servers alike: Kubernetes probes the servers (the ServingRuntime and the charts say how).
HEALTHCHECK NONE
CMD ["skiff", "--help"]

# ---- skiff: the locked dependencies, then skiff's wheel installed by the build stage's uv (mounted, not copied)
FROM runtime AS skiff
COPY --from=deps /opt/skiff /opt/skiff
RUN --mount=type=bind,from=build,source=/opt/build,target=/opt/build \
    --mount=type=bind,from=wheel,source=/wheel,target=/wheel \
    /opt/build/bin/uv pip install --python /opt/skiff/bin/python --no-deps --no-cache --compile-bytecode /wheel/skiff-*.whl
# OCI labels last: the revision changes with every commit, and nothing after it is rebuilt for that.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/skiff-ml/skiff
LABEL org.opencontainers.image.title="skiff" \
      org.opencontainers.image.description="Kubernetes-native ML platform on Kubeflow Pipelines and KServe" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001

# ---- skiff-tfdv: the skiff image's layers plus TFDV, which the validation step starts as SKIFF_TFDV_PYTHON.
# TFDV's environment comes before skiff's wheel, so a change to skiff's code rebuilds one small layer.
FROM runtime AS skiff-tfdv
COPY --from=deps /opt/skiff /opt/skiff
COPY --from=tfdv-env /opt/tfdv /opt/tfdv
RUN --mount=type=bind,from=build,source=/opt/build,target=/opt/build \
    --mount=type=bind,from=wheel,source=/wheel,target=/wheel \
    /opt/build/bin/uv pip install --python /opt/skiff/bin/python --no-deps --no-cache --compile-bytecode /wheel/skiff-*.whl
ENV SKIFF_TFDV_PYTHON=/opt/tfdv/bin/python \
    TF_CPP_MIN_LOG_LEVEL=2
# OCI labels last: the revision changes with every commit, and nothing after it is rebuilt for that.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/skiff-ml/skiff
LABEL org.opencontainers.image.title="skiff" \
      org.opencontainers.image.description="Kubernetes-native ML platform on Kubeflow Pipelines and KServe" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001

# ---- skiff-gpu: the same package over the GPU lock (TensorFlow with CUDA's libraries from PyPI)
FROM runtime AS skiff-gpu
COPY --from=deps-gpu /opt/skiff /opt/skiff
RUN --mount=type=bind,from=build,source=/opt/build,target=/opt/build \
    --mount=type=bind,from=wheel,source=/wheel,target=/wheel \
    /opt/build/bin/uv pip install --python /opt/skiff/bin/python --no-deps --no-cache --compile-bytecode /wheel/skiff-*.whl
ENV TF_CPP_MIN_LOG_LEVEL=2
# OCI labels last: the revision changes with every commit, and nothing after it is rebuilt for that.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/skiff-ml/skiff
LABEL org.opencontainers.image.title="skiff" \
      org.opencontainers.image.description="Kubernetes-native ML platform on Kubeflow Pipelines and KServe" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
