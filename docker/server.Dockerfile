# syntax=docker/dockerfile:1
# hybridrec model server: PyTorch recommender behind FastAPI/uvicorn with dynamic batching.
#
#   docker build -f docker/server.Dockerfile -t hybridrec-server .
#   docker run --rm -p 8080:8080 --read-only --tmpfs /var/cache/hybridrec:uid=10001 \
#     -e HYBRIDREC_MODEL_URI=s3://bucket/models/two-tower/ -e AWS_ENDPOINT_URL=... hybridrec-server
#
# The PyPI torch wheel bundles its CUDA user-space libraries; the base image supplies the CUDA
# runtime environment for the NVIDIA container toolkit. Keep its CUDA major version in step with
# `python -c "import torch; print(torch.version.cuda)"` of the installed wheel.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY model_server ./model_server
# Non-editable install of the model-server distribution only: the image carries no source tree.
RUN pip install --upgrade pip \
 && pip install ./model_server \
 && python -c "import torch, safetensors, hybridrec_server.app"

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 hybridrec \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/cache/hybridrec --shell /usr/sbin/nologin hybridrec \
 && mkdir -p /var/cache/hybridrec && chown 10001:10001 /var/cache/hybridrec
COPY --from=build /opt/venv /opt/venv
# Read-only root: the only writable place is the cache dir (an emptyDir in the pod spec), which holds
# S3 pulls (staged then renamed into place), temp files and any library cache.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/cache/hybridrec \
    TMPDIR=/var/cache/hybridrec \
    XDG_CACHE_HOME=/var/cache/hybridrec \
    HYBRIDREC_MODEL_CACHE_DIR=/var/cache/hybridrec \
    HYBRIDREC_HOST=0.0.0.0 \
    HYBRIDREC_PORT=8080
VOLUME ["/var/cache/hybridrec"]
USER 10001:10001
WORKDIR /var/cache/hybridrec
EXPOSE 8080
# SIGTERM: /readyz -> 503, stop accepting, drain in-flight requests, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["hybridrec-server"]
