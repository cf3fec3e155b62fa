# The training image: PyTorch (CPU build) trains the LSTM, then exports a new version into the
# model repository mounted at /models. Data comes from a mounted volume (read-only is fine).
#
#   docker/wheelhouse.sh train && docker build -f docker/train.Dockerfile -t imdb-edge/train .
#   docker run --rm -v "$PWD/../shared/data:/data:ro" -v imdb-models:/models imdb-edge/train
#
# Build arguments: BASE_IMAGE (Python 3.11 + venv; default the local debootstrap image from
# docker/build-base.sh), PYTHON (its interpreter). The wheelhouse's train group holds
# torch==2.13.0+cpu: the PyPI default torch wheel would add several GB of CUDA libraries.
ARG BASE_IMAGE=imdb-edge/python:3.11-bookworm

FROM ${BASE_IMAGE} AS build
LABEL imdb-edge.stage=build
ARG PYTHON=python3.11
COPY docker/.build/wheelhouse/train /wheelhouse
RUN ${PYTHON} -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheelhouse \
        -r /wheelhouse/requirements.txt \
    && /opt/venv/bin/pip uninstall --yes pip
# export imports runtime (the one loader and writer) and train.*; nothing else is needed.
COPY train /app/train
COPY export /app/export
COPY runtime /app/runtime
COPY protos /app/protos
COPY docker/train-entrypoint.sh /app/train-entrypoint.sh
RUN /opt/venv/bin/python -m compileall -q /app

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="imdb-sentiment-edge train" \
      org.opencontainers.image.description="IMDB review sentiment: PyTorch CPU training and ONNX export" \
      org.opencontainers.image.licenses="Apache-2.0"
# The serving image's uid: the versions written here must be readable (and the next ones
# writable) across both images sharing one /models volume.
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin imdb \
    && mkdir -p /models /runs /data \
    && chown 10001:10001 /models /runs
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    IMDB_DATA=/data/aclImdb_v1-labeled.tar.gz \
    TRAIN_PRESET=full \
    MODEL_REPOSITORY=/models \
    MODEL_NAME=imdb-lstm
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["/app/train-entrypoint.sh"]
