# Base image for the GPU serving variant: NVIDIA's CUDA 13 runtime with cuDNN 9 (what
# onnxruntime-gpu 1.31 from PyPI is built against) plus the distribution's Python and venv.
#
#   docker build -f docker/cuda-base.Dockerfile -t imdb-edge/python:3.12-cuda13 .
#   docker/wheelhouse.sh gpu
#   docker build -f docker/serve.Dockerfile --build-arg BASE_IMAGE=imdb-edge/python:3.12-cuda13 \
#       --build-arg PYTHON=python3.12 --build-arg REQUIREMENTS=gpu -t imdb-edge/serve:gpu .
#
# CUDA_IMAGE: any CUDA 13.x + cuDNN 9 runtime image (a local mirror's copy on an air-gapped
# site). Ubuntu 24.04's Python is 3.12, hence the gpu wheelhouse group is built for cp312.
# The host needs an NVIDIA driver new enough for CUDA 13 and the NVIDIA container toolkit.
# Pinned by digest (the tag alone moves when NVIDIA republishes it); the digest is the one
# public projects pin for this tag, not pulled and checked here (no registry access): a build
# that fails on it means the tag's index changed, so look the new digest up and review it.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04@sha256:14d94b039cb94bbd5da559f303b46bc4b0d5d6c24ab1a9d7b186e566ed3400dc
FROM ${CUDA_IMAGE}
# The distribution's current python3.12 (security updates included): the CUDA tag is what
# this image pins; an exact Debian-style version pin would break on every Ubuntu update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3.12"]
