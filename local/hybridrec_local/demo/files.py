"""Where the demo finds its inputs in the repository and where it keeps its outputs."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
MANIFESTS = REPO_ROOT / "manifests"
SCENARIO_FILE = MANIFESTS / "samples" / "demo-traffic.yaml"
POOLS_FILE = MANIFESTS / "samples" / "pools.yaml"
MODELS_FILE = MANIFESTS / "samples" / "models.yaml"
CRDS_DIR = MANIFESTS / "crds"
POLICY_DIR = MANIFESTS / "policy"
DEFAULT_WORKDIR = Path.home() / ".cache" / "hybridrec" / "demo"
DEFAULT_OUTPUT = Path("demo-output")
