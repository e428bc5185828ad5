# syntax=docker/dockerfile:1
# hybridrec operator (kopf): places RecModelDeployments on private/public GPU pools and steers replicas.
#
#   docker build -f docker/operator.Dockerfile -t hybridrec-operator .
#
# The operator distribution only (../pyproject.toml: kopf, kubernetes, pydantic, scipy, ...): neither the model server
# (torch) nor the local stack (model_server/ and local/ are separate distributions) is copied or installed.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --upgrade pip \
 && pip install . \
 && hybridrec --help > /dev/null \
 && ! python -c "import torch" 2>/dev/null \
 && ! python -c "import hybridrec_local" 2>/dev/null

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 hybridrec \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin hybridrec
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["hybridrec", "operator", "run"]
