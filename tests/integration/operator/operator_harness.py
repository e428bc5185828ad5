"""Helpers for the operator integration tests: operator subprocesses, kubectl wrappers, polling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hybridrec_local.localcluster import LocalCluster
from support.kube import ROOT, SAMPLES, Kube  # noqa: F401 - the suite's tests import them from here
from support.operator import OperatorProcess as _OperatorProcess
from support.stack import wait_for  # noqa: F401 - the suite's tests import it from here

BAD_CRS = ROOT / "tests" / "unit" / "operator" / "bad_crs"
MANAGED = "app.kubernetes.io/managed-by=hybridrec"
OPERATORS: list["OperatorProcess"] = []

# Short clocks so the suite stays fast; the defaults are for real clusters.
FAST_ENV = {
    "HYBRIDREC_RESYNC_SECONDS": "15",
    "HYBRIDREC_PENDING_GRACE_SECONDS": "5",
    "HYBRIDREC_POOL_STATUS_DELAY": "0.3",
    # Leader election: a killed leader is replaced within 8 s (the default is 15 s).
    "HYBRIDREC_LEASE_DURATION_SECONDS": "8",
    "HYBRIDREC_LEASE_RENEW_DEADLINE_SECONDS": "5",
    "HYBRIDREC_LEASE_RETRY_SECONDS": "1",
}


class OperatorProcess(_OperatorProcess):
    """The shared operator subprocess (:mod:`support.operator`) with this suite's fast clocks, registered in
    ``OPERATORS`` so a failing test's report carries its log."""

    def __init__(self, cluster: LocalCluster, log_dir: Path, name: str, args: list[str],
                 env: dict[str, str] | None = None, *, via_kopf: bool = False) -> None:
        super().__init__(cluster, log_dir, name, args, {**FAST_ENV, **(env or {})}, via_kopf=via_kopf)
        OPERATORS.append(self)


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def sample_models(namespace: str, *names: str) -> list[dict[str, Any]]:
    """Sample RecModelDeployments (all or ``names``) moved into ``namespace``."""
    docs = [d for d in load_docs(SAMPLES / "models.yaml") if d.get("kind") == "RecModelDeployment"]
    picked = [d for d in docs if not names or d["metadata"]["name"] in names]
    for doc in picked:
        doc["metadata"]["namespace"] = namespace
    return picked



def rmd_ready(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    rmd = kube.get("rmd", name, namespace)
    if rmd and kube.condition(rmd, "Ready").get("status") == "True" and \
            (rmd.get("status") or {}).get("observedGeneration") == rmd["metadata"]["generation"]:
        return rmd
    return None


