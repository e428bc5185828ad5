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
# The base is a build argument: hack/images.sh builds on a Debian bookworm base made with debootstrap (no registry).
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-runtime-ubuntu24.04

# Three stages: `deps` (a venv with the dependencies: torch is several GB), `build` (the model-server distribution,
# installed from its wheel into /opt/hybridrec-server, which a .pth file in the venv puts on sys.path) and the runtime
# image: `deps` plus that one small layer. A code change rebuilds a layer of a few hundred KB, never the venv (copying
# a venv of several GB from a build stage would cost minutes on every build).
FROM ${CUDA_IMAGE} AS deps
# Behind an intercepting HTTPS proxy: the path of a CA bundle mounted for the build only
# (`-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt`); never copied.
ARG PIP_CERT
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 hybridrec \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/cache/hybridrec --shell /usr/sbin/nologin hybridrec \
 && mkdir -p /var/cache/hybridrec && chown 10001:10001 /var/cache/hybridrec
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The dependencies, read from pyproject.toml.
COPY model_server/pyproject.toml /tmp/hybridrec-server/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/hybridrec-server/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install ${PIP_CERT:+--cert "$PIP_CERT"} --upgrade pip \
 && pip install ${PIP_CERT:+--cert "$PIP_CERT"} -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && python -c "import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'hybridrec-server.pth').write_text('/opt/hybridrec-server\n')"

FROM deps AS build
# Build arguments are per stage: pip's isolated build environment (setuptools) needs the bundle here too.
ARG PIP_CERT
WORKDIR /src
COPY model_server ./model_server
# Non-editable install of the model-server distribution only, from its wheel: the image carries no source tree.
RUN pip wheel ${PIP_CERT:+--cert "$PIP_CERT"} --no-deps --wheel-dir /wheels ./model_server \
 && pip install --no-deps --no-index --target /opt/hybridrec-server /wheels/*.whl \
 && pip check \
 && python -c "import torch, safetensors, hybridrec_server.app"

FROM deps
COPY --from=build /opt/hybridrec-server /opt/hybridrec-server
# Read-only root: the only writable place is the cache dir (an emptyDir in the pod spec), which holds
# S3 pulls (staged then renamed into place), temp files and any library cache.
ENV PATH=/opt/hybridrec-server/bin:/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/cache/hybridrec \
    TMPDIR=/var/cache/hybridrec \
    XDG_CACHE_HOME=/var/cache/hybridrec \
    HYBRIDREC_MODEL_CACHE_DIR=/var/cache/hybridrec \
    HYBRIDREC_HOST=0.0.0.0 \
    HYBRIDREC_PORT=8080
RUN python -c "import importlib.metadata as m, shutil; m.version('hybridrec-server'); assert shutil.which('hybridrec-server'); import hybridrec_server.app"
VOLUME ["/var/cache/hybridrec"]
USER 10001:10001
WORKDIR /var/cache/hybridrec
EXPOSE 8080
# SIGTERM: /readyz -> 503, stop accepting, drain in-flight requests, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["hybridrec-server"]
