# hybridrec: `make demo` runs the main job on the embedded local cluster; `make test` runs every test tier.
# Both install what they need first (Debian packages, the Python virtualenv, the local control-plane binaries).
SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/hybridrec
VENV ?= $(CACHE)/venv
PY := $(VENV)/bin/python
export PATH := $(CACHE)/bin:$(VENV)/bin:$(PATH)

.PHONY: install test test-unit test-integration test-e2e demo demo-down crds manifests bench lint images

install: ## Install everything (idempotent; cached outside the repo).
	bash hack/install.sh

test: install ## All three tiers, cluster tests included (never skipped).
	$(VENV)/bin/pytest tests/unit tests/integration tests/e2e -p no:cacheprovider --durations=30

test-unit: install
	$(VENV)/bin/pytest tests/unit -q

test-integration: install
	$(VENV)/bin/pytest tests/integration -q

test-e2e: install
	$(VENV)/bin/pytest tests/e2e -q

demo: install ## The main job: local cluster, Prometheus, S3, operator, pod runner, traffic with a flash sale, report.
	$(VENV)/bin/hybridrec demo run

demo-down: ## Stop everything the demo started.
	$(VENV)/bin/hybridrec demo down

images: ## Build the operator and model-server images with podman on a debootstrap base (hack/images.sh; cached outside the repo).
	bash hack/images.sh build

crds: ## Regenerate manifests/crds from the pydantic models.
	$(PY) -m hybridrec_operator.api.crds manifests/crds

manifests: crds ## Regenerate manifests/install from the Helm chart.
	bash hack/render-manifests.sh

bench: install ## Benchmarks (not tests); results in benchmarks/results/.
	$(VENV)/bin/pip install -q -e ".[bench]"
	$(PY) benchmarks/reconcile_scale.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/cost_policies.py

-include hack/cluster.mk
-include hack/kind.mk
