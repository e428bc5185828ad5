"""The operator's knobs, read from ``HYBRIDREC_*`` environment variables (``hybridrec operator run`` sets them from
its options, so a plain ``kopf run -m hybridrec_operator.controller.handlers`` is configured the same way)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Where Kubernetes mounts the pod's ServiceAccount; its namespace file names the namespace the operator runs in.
SERVICEACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(raw: str, default: Any, name: str) -> Any:
    if isinstance(default, bool):  # bool("false") is True: spell the words out
        word = raw.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"{name}={raw!r} is not a boolean (true/false)")
    return type(default)(raw)


@dataclass(frozen=True)
class OperatorConfig:
    """Knobs read from ``HYBRIDREC_*`` environment variables (``hybridrec operator run`` sets them from options)."""

    metrics_port: int = 8000  # 0 disables the /metrics server
    metrics_address: str = "0.0.0.0"
    workers: int = 8  # concurrent reconciles (each holds one thread for its API calls)
    resync_seconds: float = 60.0  # cluster-wide re-plan of every model (capacity drift, missed events)
    pending_grace_seconds: float = 60.0  # a pod Unschedulable this long marks its pool "stuck" for the model
    stuck_cooldown_seconds: float = 300.0  # how long a stuck pool stays avoided before it is tried again
    pool_status_delay: float = 1.0  # coalesces bursts of pod events into one pool status write
    # Leader election on a coordination.k8s.io/v1 Lease (client-go's defaults scaled to this operator): every
    # replica watches, only the holder reconciles, writes and runs the cost controller.
    leader_election: bool = True  # False: act alone, whatever other replicas do (tests, one replica)
    lease_name: str = "hybridrec"
    lease_namespace: str = ""  # empty: the namespace the operator runs in (see lease_namespace_or_default)
    lease_duration_seconds: float = 15.0  # a holder silent this long has lost the lease
    lease_renew_deadline_seconds: float = 10.0  # the holder stops acting when it could not renew for this long
    lease_retry_seconds: float = 2.0  # how often the holder renews and the others try to take over
    # The namespaces served, comma-separated (``--namespace``, repeatable); empty: every namespace. Exact names
    # (no globs) need no right to list or watch Namespaces: kopf is told not to scan for them.
    namespaces: str = ""
    # OpenCost prices (controller/pricing.py) for pools with pricing.source opencost: the Prometheus that scrapes
    # OpenCost (empty: HYBRIDREC_PROMETHEUS_URL), how often to read it, and how old a sample may be.
    opencost_prometheus_url: str = ""
    price_refresh_seconds: float = 60.0
    price_max_age_seconds: float = 180.0

    def served_namespaces(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]

    def exact_namespaces(self) -> bool:
        """Served namespaces given by exact name only (a glob or negation needs the Namespace list to expand)."""
        names = self.served_namespaces()
        return bool(names) and not any(c in n for n in names for c in "*?[]!")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str, default: Any) -> Any:
            key = f"HYBRIDREC_{name.upper()}"
            raw = env.get(key)
            return _parse(raw, default, key) if raw not in (None, "") else default

        config = cls(**{f: get(f, getattr(defaults, f)) for f in cls.__dataclass_fields__})
        if config.leader_election and not (
                config.lease_duration_seconds > config.lease_renew_deadline_seconds > config.lease_retry_seconds > 0):
            # The holder must give up (renew deadline) before anyone may take over (duration), and retry in between.
            raise ValueError("leader election needs lease duration > renew deadline > retry period > 0, got "
                             f"{config.lease_duration_seconds:g} > {config.lease_renew_deadline_seconds:g} > "
                             f"{config.lease_retry_seconds:g}")
        return config

    def lease_namespace_or_default(self, env: Mapping[str, str] | None = None) -> str:
        """The Lease's namespace: configured, else the pod's ($POD_NAMESPACE or its ServiceAccount), else default."""
        env = os.environ if env is None else env
        if self.lease_namespace:
            return self.lease_namespace
        if env.get("POD_NAMESPACE"):
            return env["POD_NAMESPACE"]
        try:
            return SERVICEACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"
