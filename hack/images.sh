#!/usr/bin/env bash
# Build and run hybridrec's container images without a Docker engine or a registry: Debian's podman + runc, and a
# base image made here by debootstrap (the Dockerfiles' default bases, python:3.11-slim and the CUDA image, need a
# registry). Idempotent; everything is cached outside the repository, in $HYBRIDREC_CACHE/images:
#
#   containers.conf, storage.conf   podman's configuration (the host's /etc/containers is left alone)
#   storage/                         podman's image store
#   build-<name>.log                 the last build's output
#
#   hack/images.sh build [base|operator|server|all]   build (default all); prints one "<name> <image> <status>" line each
#   hack/images.sh run ARGS...                          `podman run ARGS...` with this configuration
#   hack/images.sh save operator|server FILE            write the image as an OCI archive
#   hack/images.sh podman ARGS...                       any podman command with this configuration
#   hack/images.sh tag operator|server                  print the image reference the chart and the operator use
#
# Caching: the base is built once per machine (keyed by the Debian suite, mirror and packages); the operator image
# goes through `podman build` every time (layer cache: seconds when nothing changed); the server image (CUDA torch,
# several GB) is rebuilt only when the hash of what goes into it changes: its Dockerfile, the files of model_server/
# and the base. The build context holds only the files the Dockerfile copies (tracked and untracked-not-ignored files
# of those paths), so nothing else from the checkout can end up in a layer; HYBRIDREC_IMAGES_REV=<git revision> builds
# those files as committed in that revision instead of the work tree. HYBRIDREC_{OPERATOR,SERVER}_DOCKERFILE replace
# a Dockerfile (the tests' failing build).
#
# HTTPS from a build step may go through an intercepting proxy: pip gets the host's CA bundle mounted read-only for
# the build only (-v <bundle>:/run/host-ca.crt:ro, --build-arg PIP_CERT), never copied into an image.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${HYBRIDREC_CACHE:-$HOME/.cache/hybridrec}"
DIR="$CACHE/images"
HOST_CA="${HYBRIDREC_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
SUITE=bookworm  # Debian 12: python3 is 3.11, the project's version
# What the Dockerfiles expect of python:3.11-slim / the CUDA image: python (and python3), venv, pip, CA certificates.
BASE_PACKAGES="python3,python3-venv,python3-pip,python-is-python3,ca-certificates"
# The image references the chart (helm/hybridrec: image.repository + appVersion) and the operator's default
# spec.serving.image point at; a test checks they agree.
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/helm/hybridrec/Chart.yaml")"
OPERATOR_IMAGE="ghcr.io/hybridrec/operator:$APP_VERSION"
SERVER_IMAGE="ghcr.io/hybridrec/server:$APP_VERSION"
HASH_LABEL="io.hybridrec.content-hash"
mkdir -p "$DIR"
TEMP_DIRS=()
cleanup() { [ ${#TEMP_DIRS[@]} -eq 0 ] || rm -rf "${TEMP_DIRS[@]}"; }
trap cleanup EXIT
log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
stamp() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

install_tools() {
  local need=()
  for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
  [ ${#need[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || die "missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root"
  log "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
}

write_config() {
  # runc, not crun (crun fails on a host with mixed cgroup v1/v2); cgroupfs and file events need no systemd/journald;
  # default ulimits the host's hard limits allow (higher ones make the runtime fail with "setrlimit ... not permitted").
  local nofile; nofile="$(ulimit -Hn)"
  [ "$nofile" = unlimited ] && nofile=1048576
  local nproc=32768
  local hard_nproc; hard_nproc="$(ulimit -Hu)"
  [ "$hard_nproc" != unlimited ] && [ "$hard_nproc" -lt "$nproc" ] && nproc="$hard_nproc"
  cat > "$DIR/containers.conf.new" <<EOF
# Written by hack/images.sh.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$DIR/events.log"
EOF
  mv "$DIR/containers.conf.new" "$DIR/containers.conf"
  cat > "$DIR/storage.conf.new" <<EOF
# Written by hack/images.sh.
[storage]
driver = "overlay"
graphroot = "$DIR/storage"
runroot = "${XDG_RUNTIME_DIR:-/run}/hybridrec-containers"
EOF
  mv "$DIR/storage.conf.new" "$DIR/storage.conf"
}

pod() { CONTAINERS_CONF="$DIR/containers.conf" CONTAINERS_STORAGE_CONF="$DIR/storage.conf" podman "$@"; }

debian_mirror() {
  # The Debian mirror apt is configured with here (a local mirror or proxy keeps working inside the build).
  [ -n "${HYBRIDREC_DEBIAN_MIRROR:-}" ] && { echo "$HYBRIDREC_DEBIAN_MIRROR"; return; }
  local m
  m="$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list \
       | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ')"
  echo "${m:-http://deb.debian.org/debian}"
}

base_image() {
  local mirror key
  mirror="$(debian_mirror)"
  key="$(printf '%s\n' "$SUITE" "$mirror" "$BASE_PACKAGES" "v1" | sha256sum | cut -c1-12)"
  echo "localhost/hybridrec-base:$SUITE-$key"
}

build_base() {
  local image; image="$(base_image)"
  if pod image exists "$image"; then echo "base $image cached"; return; fi
  [ "$(id -u)" = 0 ] || die "debootstrap needs root to build the base image $image"
  local mirror rootfs t0=$SECONDS
  mirror="$(debian_mirror)"
  rootfs="$(mktemp -d "$DIR/rootfs.XXXXXX")"
  TEMP_DIRS+=("$rootfs")
  log "debootstrap --variant=minbase $SUITE from $mirror (log: $DIR/build-base.log)"
  if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror" > "$DIR/build-base.log" 2>&1; then
    tail -n 30 "$DIR/build-base.log" >&2
    die "debootstrap failed (log: $DIR/build-base.log)"
  fi
  # Small and reproducible-ish: no package caches or lists (the Dockerfiles run apt-get update themselves).
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* "$rootfs"/tmp/*
  echo "deb $mirror $SUITE main" > "$rootfs/etc/apt/sources.list"
  tar -C "$rootfs" -cf - . | pod import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$image" > /dev/null
  echo "base $image built in $((SECONDS - t0))s"
}

context_files() {
  # The files of the given repository paths that a build may copy: tracked plus untracked-not-ignored ones in a git
  # checkout (so uncommitted work is what gets built), every regular file otherwise; never caches or build output.
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -co --exclude-standard -- "$@" | while read -r f; do [ -f "$ROOT/$f" ] && echo "$f"; done
  else
    (cd "$ROOT" && find "$@" -type f -not -path '*/__pycache__/*' -not -path '*.egg-info/*')
  fi | LC_ALL=C sort
}

# build_app NAME DOCKERFILE BASE_ARG ALWAYS PATHS...: build one application image from a minimal context.
build_app() {
  local name="$1" dockerfile="$2" base_arg="$3" always="$4"; shift 4
  local image base files ctx key t0=$SECONDS
  [ "$name" = operator ] && image="$OPERATOR_IMAGE" || image="$SERVER_IMAGE"
  case "$dockerfile" in /*) ;; *) dockerfile="$ROOT/$dockerfile" ;; esac
  base="$(base_image)"
  ctx="$(mktemp -d "$DIR/context.XXXXXX")"
  TEMP_DIRS+=("$ctx")
  if [ -n "${HYBRIDREC_IMAGES_REV:-}" ]; then
    # The files as committed in that revision (the Dockerfile still from the work tree): a checkout others are
    # editing builds what is committed.
    local listing
    listing="$(git -C "$ROOT" ls-tree -r "$HYBRIDREC_IMAGES_REV" -- "$@")"
    [ -n "$listing" ] || die "no files for the $name image under $* in $HYBRIDREC_IMAGES_REV"
    key="$( { echo "$base"; cat "$dockerfile"; echo "$listing"; } | sha256sum | cut -c1-16)"
    git -C "$ROOT" archive "$HYBRIDREC_IMAGES_REV" -- "$@" | tar -x -C "$ctx"
  else
    mapfile -t files < <(context_files "$@")
    [ ${#files[@]} -gt 0 ] || die "no files for the $name image under $*"
    key="$( { echo "$base"; cat "$dockerfile"; for f in "${files[@]}"; do echo "== $f"; cat "$ROOT/$f"; done; } \
            | sha256sum | cut -c1-16)"
    (cd "$ROOT" && cp --parents "${files[@]}" "$ctx/")
  fi
  # podman's layer cache keys a COPY by its files' metadata too: one mode and mtime, so equal content hits the cache
  # (the dependency layers, several GB for the server, are reused whatever a checkout or git archive stamped).
  chmod -R u=rwX,go=rX "$ctx"
  find "$ctx" -exec touch -h -d @1 {} +
  if [ "$always" = no ] && pod image exists "$image" \
     && [ "$(pod image inspect --format "{{index .Labels \"$HASH_LABEL\"}}" "$image")" = "$key" ]; then
    echo "$name $image cached $key"; return
  fi
  local ca_args=()
  if [ -f "$HOST_CA" ]; then ca_args=(-v "$HOST_CA:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt); fi
  log "building $image (log: $DIR/build-$name.log)"
  local common=(--network host --pull=never --layers -f "$dockerfile" --build-arg "$base_arg=$base" "${ca_args[@]}")
  # The build stage gets a tag of its own: its layers (the dependencies) are then no dangling images, so pruning the
  # images older builds left behind keeps the cache that makes the next build take seconds.
  if ! { pod build "${common[@]}" --target build -t "localhost/hybridrec-$name-build:latest" "$ctx" \
         && stamp "build stage done" \
         && pod build "${common[@]}" --label "$HASH_LABEL=$key" -t "$image" "$ctx" \
         && stamp "image committed"; } > "$DIR/build-$name.log" 2>&1; then
    log "podman build of $image failed; last lines of $DIR/build-$name.log:"
    tail -n 40 "$DIR/build-$name.log" >&2
    exit 1
  fi
  pod image prune -f > /dev/null 2>&1 || true
  stamp "pruned" >> "$DIR/build-$name.log"
  echo "$name $image built $key $((SECONDS - t0))s"
}

image_of() {
  case "$1" in
    operator) echo "$OPERATOR_IMAGE" ;;
    server) echo "$SERVER_IMAGE" ;;
    *) die "unknown image '$1' (operator or server)" ;;
  esac
}

cmd="${1:-}"; [ $# -gt 0 ] && shift
case "$cmd" in
  build)
    what="${1:-all}"
    # One build at a time per machine (two test sessions, or make images during a test run, share the image store).
    exec 9> "$DIR/build.lock"
    flock 9
    install_tools
    write_config
    case "$what" in
      base) build_base ;;
      operator) build_base; build_app operator "${HYBRIDREC_OPERATOR_DOCKERFILE:-docker/operator.Dockerfile}" PYTHON_IMAGE yes pyproject.toml README.md operator ;;
      server) build_base; build_app server "${HYBRIDREC_SERVER_DOCKERFILE:-docker/server.Dockerfile}" CUDA_IMAGE no model_server ;;
      all)
        build_base
        build_app operator "${HYBRIDREC_OPERATOR_DOCKERFILE:-docker/operator.Dockerfile}" PYTHON_IMAGE yes pyproject.toml README.md operator
        build_app server "${HYBRIDREC_SERVER_DOCKERFILE:-docker/server.Dockerfile}" CUDA_IMAGE no model_server
        ;;
      *) die "build what? base, operator, server or all" ;;
    esac
    ;;
  run) write_config; pod run "$@" ;;
  podman) write_config; pod "$@" ;;
  save)
    [ $# -eq 2 ] || die "usage: hack/images.sh save operator|server FILE"
    write_config
    pod save --format oci-archive -o "$2" "$(image_of "$1")"
    ;;
  tag) image_of "${1:-}" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
