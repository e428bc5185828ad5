#!/usr/bin/env bash
# A laptop cluster for users with Docker: kind with four pools of worker nodes (kind-config.yaml), fake
# nvidia.com/gpu capacity, optionally kube-prometheus-stack, then the hybridrec chart (monitoring on) and the samples.
# The chart and manifests are the ones the tests render and install (tests/unit/chart, tests/integration/chart).
#
# Usage: hack/kind-up.sh            (WITH_PROMETHEUS=1 adds kube-prometheus-stack; CLUSTER=name to rename)
#        hack/kind-up.sh --down     delete the cluster
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CLUSTER="${CLUSTER:-hybridrec}"
CONTEXT="kind-$CLUSTER"
NAMESPACE="${NAMESPACE:-hybridrec-system}"
WITH_PROMETHEUS="${WITH_PROMETHEUS:-0}"
PROM_NAMESPACE=monitoring
PROM_RELEASE=kube-prometheus-stack

log() { printf '[kind-up] %s\n' "$*"; }
need() { command -v "$1" >/dev/null || { echo "kind-up: '$1' is required ($2)" >&2; exit 2; }; }

if [ "${1:-}" = "--down" ]; then
  need kind "https://kind.sigs.k8s.io"
  kind delete cluster --name "$CLUSTER"
  exit 0
fi

need docker "kind runs its nodes as Docker containers"
need kind "https://kind.sigs.k8s.io"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"

# 1. The cluster (re-used when it exists).
if kind get clusters | grep -qx "$CLUSTER"; then
  log "cluster $CLUSTER exists: re-using it"
else
  log "creating cluster $CLUSTER from kind-config.yaml"
  kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 180s
fi

# 2. Fake GPUs: the workers advertise nvidia.com/gpu so the scheduler places GPU pods as on the real pools.
log "patching fake nvidia.com/gpu capacity onto the workers"
bash "$ROOT/hack/kind-fake-gpus.sh" "$CONTEXT"

# 3. The operator image, built from this checkout and loaded into the nodes (no registry needed).
IMAGE="ghcr.io/hybridrec/operator:$(awk '/^appVersion:/ {gsub(/"/, "", $2); print $2}' "$ROOT/helm/hybridrec/Chart.yaml")"
log "building $IMAGE and loading it into the cluster"
docker build -q -f "$ROOT/docker/operator.Dockerfile" -t "$IMAGE" "$ROOT" >/dev/null
kind load docker-image "$IMAGE" --name "$CLUSTER"

# 4. Optional monitoring. The selectors are opened so Prometheus picks up hybridrec's ServiceMonitor and rules
#    without a release label, and Grafana's sidecar loads dashboards from every namespace.
monitoring=(--set serviceMonitor.enabled=false --set prometheusRule.enabled=false)
prom_url="http://prometheus-operated.$PROM_NAMESPACE.svc:9090"
if [ "$WITH_PROMETHEUS" = "1" ]; then
  log "installing kube-prometheus-stack into namespace $PROM_NAMESPACE"
  helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
  helm repo update prometheus-community >/dev/null
  helm upgrade --install "$PROM_RELEASE" prometheus-community/kube-prometheus-stack \
    --kube-context "$CONTEXT" --namespace "$PROM_NAMESPACE" --create-namespace --wait --timeout 10m \
    --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
    --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
    --set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false \
    --set grafana.sidecar.dashboards.searchNamespace=ALL
  monitoring=(--set serviceMonitor.enabled=true --set prometheusRule.enabled=true)
fi

# 5. hybridrec: the chart (CRDs included) with the sample pools, then the sample models.
log "installing the hybridrec chart into $NAMESPACE"
helm upgrade --install hybridrec "$ROOT/helm/hybridrec" --kube-context "$CONTEXT" \
  --namespace "$NAMESPACE" --create-namespace --wait --timeout 5m \
  --set samples.computePools.enabled=true --set "operator.prometheusUrl=$prom_url" "${monitoring[@]}"
log "applying the sample RecModelDeployments"
kubectl --context "$CONTEXT" apply -f "$ROOT/manifests/samples/models.yaml"

log "done. Try:"
log "  kubectl --context $CONTEXT get cpool,rmd -A"
[ "$WITH_PROMETHEUS" = "1" ] && log "  kubectl --context $CONTEXT -n $PROM_NAMESPACE port-forward svc/$PROM_RELEASE-grafana 3000:80   # dashboards: hybridrec / ..."
log "  make kind-down   # delete the cluster"
