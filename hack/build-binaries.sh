#!/usr/bin/env bash
# Build the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd,
# kwok, helm) from the Go module proxy, once, into a cache outside the repository.
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...)
# at v0.0.0 and replaces them with ./staging paths that only exist in its git tree. A tiny module that
# requires k8s.io/kubernetes and replaces each staging module with its published v0.Y.Z builds the
# commands straight from the proxy.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
HELM_VERSION="${HELM_VERSION:-v3.19.0}"
CACHE="${HYBRIDREC_CACHE:-$HOME/.cache/hybridrec}"
BIN="$CACHE/bin"
WORK="$CACHE/build"
mkdir -p "$BIN" "$WORK"
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GOTOOLCHAIN=local

log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Print one progress line every 40 compiled packages instead of hundreds of package names.
progress() { awk -v what="$1" '{n++; if (n % 40 == 0) { printf "[build-binaries] %s: %d packages compiled\n", what, n; fflush() }} END { printf "[build-binaries] %s: %d packages compiled, done\n", what, n }'; }

have() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
mark() { echo "$2" > "$BIN/.$1.version"; }

build_kube() {
  if have kube-apiserver "$KUBE_VERSION" && have kube-controller-manager "$KUBE_VERSION" \
     && have kube-scheduler "$KUBE_VERSION" && have kubectl "$KUBE_VERSION"; then
    log "kubernetes $KUBE_VERSION: cached"; return
  fi
  local dir="$WORK/kube-$KUBE_VERSION" minor staging
  minor="v0.${KUBE_VERSION#v1.}"
  mkdir -p "$dir"
  log "kubernetes $KUBE_VERSION: resolving staging modules (published as $minor)"
  local gomod
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging=$(awk '/^replace/,/^\)/' "$gomod" | grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging' | awk '{print $1}' | sort -u)
  {
    echo "module hybridrec.local/kubebuild"
    echo
    echo "go 1.25"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    for m in $staging; do echo "replace $m => $m $minor"; done
  } > "$dir/go.mod"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1"
  ld="$ld -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
  log "kubernetes $KUBE_VERSION: compiling (several minutes on two cores the first time)"
  (cd "$dir" && go build -v -trimpath -ldflags "$ld" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl 2>&1) | progress kubernetes
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$BIN/$b" ] || { log "ERROR: $b was not built"; exit 1; }
    mark "$b" "$KUBE_VERSION"
  done
}

build_etcd() {
  if have etcd "$ETCD_VERSION"; then log "etcd $ETCD_VERSION: cached"; return; fi
  local dir="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cat > "$dir/go.mod" <<MOD
module hybridrec.local/etcdbuild

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  cat > "$dir/main.go" <<'MAIN'
// Command etcd is etcd's own entry point (etcdmain.Main), built from the published server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
MAIN
  log "etcd $ETCD_VERSION: compiling"
  (cd "$dir" && go build -v -trimpath -ldflags "-s -w" -o "$BIN/etcd" . 2>&1) | progress etcd
  [ -x "$BIN/etcd" ] || { log "ERROR: etcd was not built"; exit 1; }
  mark etcd "$ETCD_VERSION"
}

build_go_install() { # name module version
  if have "$1" "$3"; then log "$1 $3: cached"; return; fi
  log "$1 $3: compiling"
  (GOBIN="$BIN" go install -v -trimpath -ldflags "-s -w" "$2@$3" 2>&1) | progress "$1"
  [ -x "$BIN/$1" ] || { log "ERROR: $1 was not built"; exit 1; }
  mark "$1" "$3"
}

command -v go >/dev/null || { log "ERROR: Go is not installed; it is needed once to build the local control plane"; exit 1; }
build_etcd
build_go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
build_go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
build_kube
log "all binaries ready in $BIN"
