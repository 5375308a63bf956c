# syntax=docker/dockerfile:1
# exasol-mlflow-server: one image definition for CPU and CUDA (docs/deploy.md).
#
#   docker build -t exasol-mlflow-server:0.1.0-cpu .
#   docker build --build-arg VARIANT=cuda -t exasol-mlflow-server:0.1.0-cuda .
#   docker run --rm -p 8080:8080 -v "$PWD/out/minilm-int8:/mnt/models:ro" exasol-mlflow-server:0.1.0-cpu
#
# Build arguments:
#   VARIANT     cpu (default): plain onnxruntime, about 280 MB smaller than the GPU wheel and
#               the same CPU execution provider. cuda: onnxruntime-gpu[cuda,cudnn], which
#               brings CUDA and cuDNN as NVIDIA wheels, so both variants share one slim Python
#               base (deploy/image/requirements.py derives the list from pyproject.toml).
#   EXTRAS      optional extras of the package, comma-separated: "mlflow" for models:/ and
#               runs:/ URIs, "export" to export Hugging Face models on first use (adds torch:
#               large; for a CPU image pass PIP_EXTRA_INDEX_URL of PyTorch's CPU wheel index).
#   BASE_IMAGE  any Debian-like image with python3 (>= 3.11) and its venv module.
#
# The server reads every setting from EMS_* variables (README "Settings"). The image sets
# EMS_MODEL=/mnt/models (where KServe's storage initializer puts the model), EMS_HOST=0.0.0.0
# and PORT=8080; PORT is the lowest-precedence source of the port, so Knative's PORT wins over
# the image's and EMS_PORT / --port win over both.
ARG BASE_IMAGE=python:3.12-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG VARIANT=cpu
ARG EXTRAS=""
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# dependencies first: this layer is rebuilt only when pyproject.toml changes
COPY pyproject.toml ./
COPY deploy/image/requirements.py deploy/image/requirements.py
# an optional build secret "pip_cert" (a CA bundle) lets pip work behind a TLS-intercepting
# proxy without the certificate entering any layer: --secret id=pip_cert,src=/path/to/ca.pem
RUN --mount=type=secret,id=pip_cert \
    if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -m venv /opt/venv \
    && python3 deploy/image/requirements.py "${VARIANT}" "${EXTRAS}" > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt
COPY README.md LICENSE ./
COPY exasol_mlflow_server exasol_mlflow_server
COPY exporter exporter
COPY runtime runtime
COPY benchmarks benchmarks
# --no-deps: the requirements above already hold the variant's onnxruntime; the package's own
# marker would add onnxruntime-gpu to the CPU image
RUN --mount=type=secret,id=pip_cert \
    if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /src \
    && /opt/venv/bin/python -I -c "import exasol_mlflow_server.runtime.server"

FROM ${BASE_IMAGE}
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="exasol-mlflow-server" \
      org.opencontainers.image.description="ONNX Runtime serving of Hugging Face models behind MLflow's scoring protocol and Open Inference Protocol v2" \
      org.opencontainers.image.licenses="Apache-2.0" \
      exasol-mlflow-server.variant="${VARIANT}"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=build /opt/venv /opt/venv
COPY deploy/image/healthcheck.py /usr/local/lib/exasol-mlflow-server/healthcheck.py
# cuda: make the CUDA/cuDNN libraries of NVIDIA's wheels visible to the dynamic loader (ONNX
# Runtime's CUDA provider dlopens them by soname); the directories depend on the CUDA major
# version of the onnxruntime-gpu release, so they are found, not written down.
RUN if [ "${VARIANT}" = "cuda" ]; then \
        find /opt/venv/lib -path '*/site-packages/nvidia/*' -name 'lib*.so*' -printf '%h\n' \
            | sort -u > /etc/ld.so.conf.d/zz-nvidia-wheels.conf \
        && ldconfig; \
    fi \
    && groupadd --system --gid 10001 ems \
    && useradd --system --uid 10001 --gid ems --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin ems \
    && mkdir -p /mnt/models /var/cache/exasol-mlflow-server \
    && chown ems:ems /var/cache/exasol-mlflow-server
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    EMS_MODEL=/mnt/models \
    EMS_HOST=0.0.0.0 \
    PORT=8080 \
    EMS_CACHE_DIR=/var/cache/exasol-mlflow-server
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# ready = model loaded and warmed; the start period covers loading (and a first-use export)
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["/opt/venv/bin/python", "/usr/local/lib/exasol-mlflow-server/healthcheck.py", "/v2/health/ready"]
ENTRYPOINT ["/opt/venv/bin/exasol-mlflow-server", "serve"]
