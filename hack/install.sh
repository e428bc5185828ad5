#!/usr/bin/env bash
# Install everything hybridrec's tests and demo need on a fresh Debian machine, idempotently:
# Debian packages (prometheus + promtool), a virtualenv with the project and its extras, MovieLens 100K
# (inside the recbole wheel, installed without its dependencies) and the local control-plane binaries.
# The Go build runs while pip installs; both are cached outside the repository.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${HYBRIDREC_CACHE:-$HOME/.cache/hybridrec}"
VENV="$CACHE/venv"
mkdir -p "$CACHE"
log() { printf '[install %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# 1. Control-plane binaries in the background: the longest step on a cold machine.
log "building the local control plane in the background (log: $CACHE/build.log)"
bash "$ROOT/hack/build-binaries.sh" > "$CACHE/build.log" 2>&1 &
build_pid=$!

# 2. Debian packages.
need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
# The image tests build and run the images with podman + runc on a debootstrap base (hack/images.sh).
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || need_apt+=("$tool"); done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" > /dev/null
  # The Debian package starts a system Prometheus on :9090; the tests start their own on free ports.
  (systemctl stop prometheus 2>/dev/null || service prometheus stop 2>/dev/null || pkill -x prometheus || true) >/dev/null 2>&1
fi

# 3. Python: one virtualenv outside the repo.
stamp="$CACHE/.venv-stamp"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/model_server/pyproject.toml" "$ROOT/local/pyproject.toml" | sha256sum | cut -c1-16)"
# Three distributions: the operator (no torch), the model server, and the local stack for tests and the demo.
editables=(-e "$ROOT[test]" -e "$ROOT/model_server" -e "$ROOT/local")
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  log "pip install (torch is several GB the first time; pip shows progress)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install --progress-bar on "${editables[@]}" 2>&1 | grep -vE '^(Requirement already|  )' || true
  "$VENV/bin/python" -c 'import torch, kopf, fastapi, moto, hybridrec_operator, hybridrec_server, hybridrec_local' || { log "ERROR: pip install failed"; exit 1; }
  # MovieLens 100K ships inside the recbole wheel; its own dependencies are not needed to read the file.
  "$VENV/bin/pip" install -q --no-deps "recbole==1.2.1"
  echo "$want" > "$stamp"
else
  "$VENV/bin/pip" install -q --no-deps "${editables[@]}" >/dev/null 2>&1 || true
  log "virtualenv up to date ($VENV)"
fi

# 4. Wait for the Go build, showing its progress lines.
while kill -0 "$build_pid" 2>/dev/null; do
  sleep 15
  log "control plane build: $(tail -n 1 "$CACHE/build.log")"
done
if ! wait "$build_pid"; then
  log "ERROR: building the control plane failed:"; tail -n 30 "$CACHE/build.log"; exit 1
fi
log "ready: venv $VENV, binaries $CACHE/bin"
