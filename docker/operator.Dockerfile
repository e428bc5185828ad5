# syntax=docker/dockerfile:1
# hybridrec operator (kopf): places RecModelDeployments on private/public GPU pools and steers replicas.
#
#   docker build -f docker/operator.Dockerfile -t hybridrec-operator .
#
# The operator distribution only (../pyproject.toml: kopf, kubernetes, pydantic, scipy, ...): neither the model server
# (torch) nor the local stack (model_server/ and local/ are separate distributions) is copied or installed.
# The base is a build argument so a mirror or a locally made base can stand in (hack/images.sh builds on a Debian
# bookworm base made with debootstrap: python3 is 3.11 there too).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
# Behind an intercepting HTTPS proxy: the path of a CA bundle mounted for the build only
# (`-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt`); never copied.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in their own layer (read from pyproject.toml): a code change reinstalls only the package.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install ${PIP_CERT:+--cert "$PIP_CERT"} --upgrade pip \
 && pip install ${PIP_CERT:+--cert "$PIP_CERT"} -r /tmp/requirements.txt
COPY operator ./operator
RUN pip install ${PIP_CERT:+--cert "$PIP_CERT"} --no-deps . \
 && pip check \
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
# The chart's Deployment passes `args: [operator, run, ...]`: Kubernetes args replace CMD, not ENTRYPOINT.
ENTRYPOINT ["hybridrec"]
CMD ["operator", "run"]
