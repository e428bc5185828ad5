# kind path for users with Docker (included from the top-level Makefile). See docs/kind.md.
.PHONY: kind-up kind-down
WITH_PROMETHEUS ?= 0

kind-up: ## kind cluster with fake GPUs, the chart and the samples (WITH_PROMETHEUS=1 adds kube-prometheus-stack)
	WITH_PROMETHEUS=$(WITH_PROMETHEUS) bash hack/kind-up.sh

kind-down: ## Delete the kind cluster
	bash hack/kind-up.sh --down
