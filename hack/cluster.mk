# Local control plane targets; included from the top-level Makefile.
VENV ?= $(HOME)/.cache/hybridrec/venv

.PHONY: cluster-binaries cluster-up cluster-down cluster-status

cluster-binaries: ## Build etcd, kube-*, kubectl, kwok, helm into ~/.cache/hybridrec/bin (once, ~15 min)
	bash hack/build-binaries.sh

cluster-up: ## Start (or re-use) the local control plane with 9 fake GPU nodes
	$(VENV)/bin/hybridrec cluster up

cluster-down: ## Stop the local control plane and every process recorded with it
	$(VENV)/bin/hybridrec cluster down

cluster-status: ## Show the local control plane's processes
	$(VENV)/bin/hybridrec cluster status
