# syntax=docker/dockerfile:1
# tlserve images. Dependencies install from requirements/*.txt with the Makefile's commands, before the source
# is copied, so a code change rebuilds only the last layers.
#   docker build -t tlserve-gateway .                    # the gateway (default target): the thin set, no TensorFlow
#   docker build -t tlserve-trainer --target trainer .   # train / retrain, CUDA-enabled TensorFlow
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 tlserve \
    && useradd --system --uid 10001 --gid tlserve --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin tlserve

# ---- gateway dependencies: only the thin set, requirements/gateway.txt (no TensorFlow, no tensorflow-serving-api:
# the gateway speaks TF Serving's protocol through tlserve/protos/)
FROM python-base AS gateway-deps
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements/ requirements/
RUN python -m pip install -r requirements/gateway.txt \
    && python -m pip check

FROM gateway-deps AS gateway-build
COPY pyproject.toml README.md ./
COPY tlserve/ tlserve/
COPY training/ training/
COPY promotion/ promotion/
COPY service/ service/
RUN python -m pip install --no-deps --no-build-isolation .

# ---- trainer: the full runtime set, with TensorFlow's CUDA build in place of tensorflow-cpu.
# TensorFlow's pip wheels carry CUDA and cuDNN (`tensorflow[and-cuda]`), so a slim Python base is GPU-capable:
# the NVIDIA container runtime injects only the driver. The TF version is read from runtime.txt (one source).
FROM python-base AS trainer-deps
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements/ requirements/
RUN tf_version="$(sed -n 's/^tensorflow-cpu==//p' requirements/runtime.txt)" \
    && test -n "$tf_version" \
    && sed -i '/^tensorflow-cpu==/d' requirements/runtime.txt \
    && python -m pip install "tensorflow[and-cuda]==${tf_version}" -r requirements/runtime.txt \
    && python -m pip install --no-deps -r requirements/no-deps.txt

FROM trainer-deps AS trainer-build
COPY pyproject.toml README.md ./
COPY tlserve/ tlserve/
COPY training/ training/
COPY promotion/ promotion/
COPY service/ service/
RUN python -m pip install --no-deps --no-build-isolation .

FROM python-base AS trainer
# Asks the NVIDIA container runtime for the GPUs and the compute driver libraries.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/tmp \
    KERAS_HOME=/tmp/keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    TLSERVE_MODELS_DIR=/models
COPY --from=trainer-build /opt/venv /opt/venv
COPY scripts/ /opt/tlserve/scripts/
# `tlserve train` writes runs/ under the working directory: give the user one (mount a volume here to keep it).
WORKDIR /work
RUN chown 10001:10001 /work
USER 10001:10001
ENTRYPOINT ["tlserve"]
CMD ["--help"]

# ---- gateway (last stage = default target)
FROM python-base AS gateway
# The system user has no home; anything that caches under $HOME lands in /tmp (a tmpfs/emptyDir when read-only).
ENV HOME=/tmp
COPY --from=gateway-build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000 8500
# Liveness only (/healthz): readiness (/readyz) depends on the model server and is the orchestrator's call.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["tlserve"]
CMD ["serve", "--http-port", "8000", "--grpc-port", "8500"]
