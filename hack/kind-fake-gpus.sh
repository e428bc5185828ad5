#!/usr/bin/env bash
# Advertise fake nvidia.com/gpu capacity on the kind workers created from kind-config.yaml, so the scheduler
# places GPU-requesting model pods as it would on the real pools. The count comes from each node's
# nvidia.com/gpu.count label; the kubelet then mirrors the extended resource into allocatable.
# Usage: bash hack/kind-fake-gpus.sh [kubectl context]   (default: kind-hybridrec)
set -euo pipefail
CONTEXT="${1:-kind-hybridrec}"
KUBECTL=(kubectl --context "$CONTEXT")

nodes=$("${KUBECTL[@]}" get nodes -l hybridrec.io/pool \
  -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.metadata.labels.nvidia\.com/gpu\.count}{"\n"}{end}')
[ -n "$nodes" ] || { echo "no nodes labelled hybridrec.io/pool in context $CONTEXT (created from kind-config.yaml?)" >&2; exit 1; }

while read -r node gpus; do
  [ -n "$node" ] || continue
  # "~1" escapes the "/" of the resource name inside a JSON-pointer path.
  "${KUBECTL[@]}" patch node "$node" --subresource=status --type=json \
    -p "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"${gpus}\"}]" >/dev/null
  echo "$node: nvidia.com/gpu=$gpus"
done <<< "$nodes"

# Wait until every kubelet has copied the new capacity into allocatable.
for _ in $(seq 1 30); do
  missing=$("${KUBECTL[@]}" get nodes -l hybridrec.io/pool \
    -o jsonpath='{range .items[*]}{.metadata.name}{"="}{.status.allocatable.nvidia\.com/gpu}{"\n"}{end}' | grep -c '=$' || true)
  [ "$missing" = "0" ] && { echo "all workers advertise nvidia.com/gpu"; exit 0; }
  sleep 2
done
echo "some workers do not show nvidia.com/gpu in allocatable yet" >&2
exit 1
