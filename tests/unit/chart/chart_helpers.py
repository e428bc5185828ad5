"""Shared helpers of the chart unit tests: locate and run the real helm and promtool binaries, parse their output."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "hybridrec"
BIN = Path(os.environ.get("HYBRIDREC_BIN", Path.home() / ".cache" / "hybridrec" / "bin"))
# helm built with `go install` assumes Kubernetes v1.20 unless told; the chart needs >= 1.30.
KUBE_VERSION = "v1.35.4"


def binary(name: str) -> str:
    path = BIN / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found in {BIN} or PATH: run `make install`")
    return found


def run(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; on ``check`` failure the error shows stderr."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def template(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``helm template hybridrec CHART -n hybridrec-system`` with extra arguments."""
    return run([helm, "template", "hybridrec", str(CHART), "--namespace", "hybridrec-system", "--kube-version", KUBE_VERSION, *args], check=check)


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate mapping keys (kubectl's strict decoding does too)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    duplicated = {k for k in keys if keys.count(k) > 1}
    if duplicated:
        raise AssertionError(f"duplicate keys {sorted(map(str, duplicated))} at line {node.start_mark.line + 1}")
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def objects(rendered: str) -> list[dict[str, Any]]:
    """The Kubernetes objects of a multi-document YAML stream (duplicate keys are an error)."""
    return [doc for doc in yaml.load_all(rendered, Loader=_StrictLoader) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def exposed_names(registry: "CollectorRegistry") -> set[str]:
    """Series names a registry exposes (counters with _total, histograms with _bucket/_sum/_count)."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update({f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"})
        else:
            names.add(family.name)
    return names


def known_metrics() -> set[str]:
    """Every series name the operator and the model server export (the only names dashboards and alerts may use)."""
    from hybridrec_operator.controller.metrics import REGISTRY
    from hybridrec_server.metrics import GPU_METRIC_NAMES, ServerMetrics

    return exposed_names(REGISTRY) | exposed_names(ServerMetrics("ns", "m", "p").registry) | set(GPU_METRIC_NAMES)
