# The serving image: ONNX Runtime gRPC server (python -m serve), no PyTorch, no compilers,
# a non-root user, the shipped model repository baked in at /models.
#
#   docker/wheelhouse.sh serve && docker build -f docker/serve.Dockerfile -t imdb-edge/serve:cpu .
#
# Build arguments (see docs/containers.md):
#   BASE_IMAGE    any image with Python 3.11 + venv (default: the local debootstrap image that
#                 docker/build-base.sh makes; air-gapped sites point it at their own)
#   PYTHON        the interpreter in BASE_IMAGE (python3.12 for the GPU base)
#   REQUIREMENTS  wheelhouse group: serve (CPU), gpu (onnxruntime-gpu), client (serve + client,
#                 for batch scoring)
# GPU variant: BASE_IMAGE=imdb-edge/python:3.12-cuda13 (docker/cuda-base.Dockerfile),
# PYTHON=python3.12, REQUIREMENTS=gpu; run with SENTIMENT_DEVICE=cuda and a GPU attached.
# A BASE_IMAGE from a registry is best given by digest (name@sha256:...), not by a moving tag.
#
# Safe defaults (docs/security.md, docs/containers.md): the server listens on the container's
# loopback and the metrics page too. To serve other machines, set SENTIMENT_HOST=0.0.0.0 AND
# give TLS and tokens from a secrets mount (SENTIMENT_TLS_CERT/_KEY, SENTIMENT_AUTH_TOKEN_FILE
# under /run/secrets); without them the server starts but logs a loud warning.
ARG BASE_IMAGE=imdb-edge/python:3.11-bookworm

# ---- build: a virtual environment from the wheelhouse only (no index, no network, every wheel's
# sha256 checked against docker/locks/${REQUIREMENTS}.txt, which wheelhouse.sh copied in) ----
FROM ${BASE_IMAGE} AS build
LABEL imdb-edge.stage=build
ARG PYTHON=python3.11
ARG REQUIREMENTS=serve
COPY docker/.build/wheelhouse/${REQUIREMENTS} /wheelhouse
RUN ${PYTHON} -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse \
        --require-hashes --only-binary=:all: -r /wheelhouse/requirements.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -depth -type d -name tests -path '*/site-packages/*/tests' -exec rm -rf {} + \
    && find /opt/venv -name '*.pyi' -delete
COPY protos /app/protos
COPY runtime /app/runtime
COPY serve /app/serve
COPY client /app/client
COPY docker/healthcheck.py /app/healthcheck.py
# Compiled now: a read-only root filesystem cannot take .pyc files later.
RUN /opt/venv/bin/python -m compileall -q /app

# ---- runtime ----
FROM ${BASE_IMAGE}
ARG REQUIREMENTS=serve
LABEL org.opencontainers.image.title="imdb-sentiment-edge serve" \
      org.opencontainers.image.description="IMDB review sentiment: ONNX Runtime gRPC server (sentiment.v1, KServe v2)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      imdb-edge.requirements="${REQUIREMENTS}"
# The same uid as the training image, so a trainer can add versions to a shared /models volume.
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin imdb
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
COPY --chown=10001:10001 models /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    SENTIMENT_MODEL_REPOSITORY=/models \
    SENTIMENT_HOST=127.0.0.1 \
    SENTIMENT_PORT=8001 \
    SENTIMENT_HTTP_PORT=8000 \
    SENTIMENT_METRICS_HOST=127.0.0.1 \
    SENTIMENT_METRICS_PORT=8002
WORKDIR /app
USER 10001:10001
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
ENTRYPOINT ["python", "-m", "serve"]
