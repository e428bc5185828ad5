"""manifests/ is the chart rendered as plain YAML; the kind path's scripts are valid bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from chart_helpers import ROOT, by_kind, objects, run

SCRIPT = ROOT / "hack" / "render-manifests.sh"


def test_manifests_match_the_chart() -> None:
    proc = run(["bash", str(SCRIPT), "--check"], check=False)
    assert proc.returncode == 0, proc.stderr


def test_check_detects_drift(tmp_path: Path) -> None:
    """--check fails when a rendered file differs (run against a copy of the repository's relevant parts)."""
    copy = tmp_path / "repo"
    for part in ("hack", "helm", "manifests", "operator"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "manifests" / "install" / "hybridrec.yaml"
    target.write_text(target.read_text().replace("replicas: 2", "replicas: 3"))
    proc = subprocess.run(["bash", str(copy / "hack" / "render-manifests.sh"), "--check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "manifests/install/hybridrec.yaml is out of date" in proc.stderr


def test_install_manifest_is_the_default_chart_without_crds() -> None:
    docs = objects((ROOT / "manifests" / "install" / "hybridrec.yaml").read_text())
    assert not by_kind(docs, "CustomResourceDefinition")
    assert {d["metadata"].get("namespace", "hybridrec-system") for d in docs} == {"hybridrec-system"}
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 2


def test_kustomization_lists_crds_and_install() -> None:
    kust = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    crds = sorted(f"crds/{p.name}" for p in (ROOT / "manifests" / "crds").glob("*.yaml"))
    assert kust["resources"] == [*crds, "install/namespace.yaml", "install/hybridrec.yaml"]
    for resource in kust["resources"]:
        assert (ROOT / "manifests" / resource).is_file()


def test_kind_scripts_are_valid_bash() -> None:
    for script in ("kind-up.sh", "render-manifests.sh"):
        run(["bash", "-n", str(ROOT / "hack" / script)])
    makefile = (ROOT / "hack" / "kind.mk").read_text()
    assert "kind-up:" in makefile and "kind-down:" in makefile
