"""Every Grafana panel query, evaluated against a real Prometheus that scraped a real run.

No Grafana server can run here, so this is how the dashboards are proven to show data: the operator (handlers and
cost controller) places two models on the local cluster, the pod runner starts real model servers, paced open-loop
traffic makes the controller decide, and then every (dashboard, panel, expr) of
:func:`hybridrec_local.dashboards.all_panel_queries` runs as a range query over the time the run had data, with the
template variables rendered the way Grafana renders them. A query that errors, or returns no series, or only NaN
(an empty panel in Grafana), fails the test; all failures are reported together.

The models are shaped so every metric family appears: ``dash-costed`` (public data) has a budget and lifecycle
economics and gets more traffic than one replica is sized for, so the cost controller scales it; ``dash-sensitive``
(restricted data) feeds the placement panels (tenancy x sensitivity, capacity shortfall, which is 0 here but
published). A training run of ``dash-costed`` (its input does not exist: the pod runner's trainer exits at once with
bad input, the run fails) still held a GPU for a moment, so the training-spend panel has its measured cost.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from support.manifests import WORKED_EXAMPLE_ECONOMICS, rmd_manifest
from support import MotoS3, OperatorProcess, PacedLoad, PodRunnerProcess, eventually, log_tail, prom_query, steps
from support.stack import E2E_NAMESPACE

from hybridrec_local.dashboards import all_panel_queries, metric_names, render_query
from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.promlocal import LocalPrometheus

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]

# The e2e operator serves only this namespace (tests/e2e/conftest.py).
NS = E2E_NAMESPACE
COSTED = "dash-costed"
SENSITIVE = "dash-sensitive"
MODELS = (COSTED, SENSITIVE)
GROUP, VERSION = "hybridrec.io", "v1alpha1"
TRAINING_RUN = f"{COSTED}-spend"

# dash-costed: 8 RPS against 5 RPS per replica needs 2 replicas, so the cost controller must scale it up (a decision).
COSTED_RPS, COSTED_RPS_PER_REPLICA = 8.0, 5
SENSITIVE_RPS = 3.0
LOAD_BOUND_S = 170.0  # the load stops by itself even if the test hangs
# Grafana's $__rate_interval is max($__interval + scrape, 4 x scrape); the dashboards' 2m default suits real
# clusters. A short run with a 2 s scrape needs a window that fills in seconds, yet smooths a few scrapes.
MIN_RATE_WINDOW_S = 30


def rmd(name: str, s3: MotoS3, sensitivity: str, rps_per_replica: int, max_replicas: int, **extra: Any) -> dict[str, Any]:
    """A RecModelDeployment serving the small test artifact from moto S3."""
    return rmd_manifest(name, NS, s3, sensitivity, rps_per_replica=rps_per_replica, max_replicas=max_replicas,
                        stabilisation_s=60, **extra)


def costed_model(s3: MotoS3) -> dict[str, Any]:
    """Public data with spec.budget (hour and month) and the worked-example spec.economics (ROI, cost per 1k)."""
    return rmd(
        # No placement limits: when an earlier test in the session has filled onprem-t4, the scale-up still has room.
        COSTED, s3, "public", COSTED_RPS_PER_REPLICA, max_replicas=2,
        budget={"maxPerHour": 40, "maxPerMonth": 20000, "currency": "USD"},
        economics=WORKED_EXAMPLE_ECONOMICS,
    )


def training_run(s3: MotoS3) -> dict[str, Any]:
    """A run of dash-costed on an input that does not exist: it is placed and paid for, then fails (bad input)."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RecModelTrainingRun", "metadata": {"name": TRAINING_RUN, "namespace": NS},
            "spec": {"model": COSTED, "dataUri": f"s3://{s3.bucket}/{COSTED}/no-such-interactions.csv",
                     "outputUri": f"s3://{s3.bucket}/{COSTED}/versions"}}


def sensitive_model(s3: MotoS3) -> dict[str, Any]:
    """Restricted data: private pools that list `restricted` only (onprem-a100)."""
    return rmd(SENSITIVE, s3, "restricted", rps_per_replica=20, max_replicas=1)


# --------------------------------------------------------------------------------------------- pure helpers


def grafana_multi_value(values: Sequence[str]) -> str:
    """A multi-value template variable as Grafana's Prometheus datasource renders it: ``(a|b)``, or ``a`` alone.

    Grafana escapes regex metacharacters; Kubernetes names have none, which is asserted rather than escaped here.
    """
    assert values and all(v.replace("-", "").replace(".", "").isalnum() for v in values), values
    ordered = sorted(set(values))
    return ordered[0] if len(ordered) == 1 else "(" + "|".join(ordered) + ")"


def rate_window_s(scrape_interval_s: float) -> int:
    """Seconds of ``$__rate_interval`` for this run: at least Grafana's floor of 4 scrapes and ``MIN_RATE_WINDOW_S``."""
    return max(MIN_RATE_WINDOW_S, math.ceil(4 * scrape_interval_s))


def verdict(response: Mapping[str, Any]) -> str | None:
    """Why a Prometheus range-query answer would leave a panel empty, or None when it has data."""
    if response.get("status") != "success":
        return f"{response.get('errorType', 'error')}: {response.get('error', response)}"
    series = response["data"]["result"]
    if not series:
        return "no series"
    finite = [s for s in series if any(math.isfinite(float(v)) for _, v in s.get("values", []))]
    if not finite:
        return f"{len(series)} series, all values NaN/Inf: {[s['metric'] for s in series][:3]}"
    return None


@dataclass(frozen=True)
class Failure:
    dashboard: str
    panel: str
    expr: str
    rendered: str
    came_back: str

    def __str__(self) -> str:
        return f"- {self.dashboard} / {self.panel}\n    expr:     {self.expr}\n    rendered: {self.rendered}\n    got:      {self.came_back}"


# --------------------------------------------------------------------------------------------- I/O helpers


def query_range(url: str, expr: str, start: float, end: float, step_s: float) -> dict[str, Any]:
    """A range query as Grafana sends it (the dashboards' targets are range queries); the JSON body, errors included."""
    try:
        resp = httpx.post(f"{url}/api/v1/query_range", data={"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"},
                          timeout=30.0)
    except httpx.HTTPError as exc:
        return {"status": "error", "errorType": type(exc).__name__, "error": str(exc)}
    try:
        body: dict[str, Any] = resp.json()
    except ValueError:
        return {"status": "error", "errorType": f"HTTP {resp.status_code}", "error": resp.text[:300]}
    if resp.status_code != 200 and body.get("status") == "success":
        body = {"status": "error", "errorType": f"HTTP {resp.status_code}", "error": body}
    return body


def model_pods(core: client.CoreV1Api) -> list[str]:
    """This test's pods that still exist (terminating ones included)."""
    selector = f"hybridrec.io/model in ({','.join(MODELS)})"
    return [p.metadata.name for p in core.list_namespaced_pod(NS, label_selector=selector).items]


def pools_of(apps: client.AppsV1Api) -> list[str]:
    """Pools where this test's models have replicas (from the Deployments the operator wrote)."""
    selector = f"hybridrec.io/model in ({','.join(MODELS)})"
    return sorted({d.metadata.labels["hybridrec.io/pool"] for d in apps.list_namespaced_deployment(NS, label_selector=selector).items
                   if d.spec.replicas})


def scaled_by_controller(url: str) -> bool:
    """Prometheus has scraped a cost-controller scaling decision for dash-costed (not a placement, not a hold)."""
    expr = (f'sum(hybridrec_decisions_total{{namespace="{NS}", model="{COSTED}", reason!="placement", direction!="hold"}})')
    result = prom_query(url, expr)
    return bool(result) and float(result[0]["value"][1]) > 0


# --------------------------------------------------------------------------------------------- the test


def test_every_dashboard_panel_query_returns_data(
    hybridrec_api: LocalCluster,
    kube_api: ApiClient,
    moto_s3: MotoS3,
    prometheus: LocalPrometheus,
    pod_runner: PodRunnerProcess,
    operator_with_controller: OperatorProcess,
) -> None:
    kubectl = hybridrec_api.kubectl
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    # GPU panels (device busy fraction, device memory) only have data from servers on CUDA; this machine has none,
    # so cuda=False leaves those queries out. The pool-allocation query of the same panel is still checked.
    queries = all_panel_queries(cuda=False)
    assert len(queries) > 20 and not any("gpu_utilization_ratio" in e or "gpu_memory_used" in e for _, _, e in queries)
    window_s = rate_window_s(prometheus.scrape_interval_s)
    window = f"{window_s}s"
    loads: list[PacedLoad] = []
    for body in (costed_model(moto_s3), sensitive_model(moto_s3), training_run(moto_s3)):
        kubectl("apply", "-f", "-", input=json.dumps(body))
    try:
        eventually(lambda: all(pod_runner.servers().get(f"{NS}/{m}") for m in MODELS), 150, 1.0,
                   f"a ready server for each model (pod runner log: {pod_runner.log_path})")

        # Open loop, bounded in time; every 10th user is unknown to the model, so the fallback counter moves too.
        servers = pod_runner.state_dir / "servers.json"
        loads = [
            PacedLoad(servers, f"{NS}/{COSTED}", steps((LOAD_BOUND_S, COSTED_RPS)), LOAD_BOUND_S, unknown_user_every=10).start(),
            PacedLoad(servers, f"{NS}/{SENSITIVE}", steps((LOAD_BOUND_S, SENSITIVE_RPS)), LOAD_BOUND_S, unknown_user_every=10).start(),
        ]
        traffic_from = time.time()
        try:
            eventually(lambda: scaled_by_controller(prometheus.url), 90, 2.0, "a cost-controller scaling decision for dash-costed in Prometheus")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nload: {[(ld.stats.ok, dict(ld.stats.codes)) for ld in loads]}\n"
                                 f"operator log:\n{log_tail(operator_with_controller.log_path)}") from None
        # rate()/increase() need a full window of traffic, and a scrape or two more after the decision's round.
        settle_until = max(traffic_from + window_s + 4 * prometheus.scrape_interval_s, time.time() + 3 * prometheus.scrape_interval_s)
        time.sleep(max(0.0, settle_until - time.time()))
        assert all(ld.stats.ok > 0 for ld in loads), [dict(ld.stats.codes) for ld in loads]

        variables = {"namespace": NS, "model": grafana_multi_value(MODELS), "pool": grafana_multi_value(pools_of(apps)),
                     "__rate_interval": window}
        # From when a full rate window of traffic existed to now, the part of a dashboard's time range with data.
        start, end = traffic_from + window_s, time.time()
        failures: list[Failure] = []
        for dashboard, panel, expr in queries:
            rendered = render_query(expr, variables)
            why = verdict(query_range(prometheus.url, rendered, start, end, prometheus.scrape_interval_s))
            if why is not None:
                failures.append(Failure(dashboard, panel, expr, rendered, why))
        scraped = sorted(prom_query(prometheus.url, f'count by (__name__) ({{__name__=~"hybridrec_.+", namespace="{NS}"}})'),
                         key=lambda s: s["metric"]["__name__"])
        assert not failures, (
            f"{len(failures)} of {len(queries)} panel queries would show no data "
            f"(window {end - start:.0f} s, $__rate_interval={window}, variables {variables}):\n"
            + "\n".join(map(str, failures))
            + f"\nmetric names involved: {sorted(set().union(*(metric_names(f.expr) for f in failures)))}"
            + f"\nhybridrec series in {NS} now: {[s['metric']['__name__'] for s in scraped]}"
        )
    finally:
        for ld in loads:
            ld.stop()
        kubectl("delete", "recmodeltrainingruns.hybridrec.io", "-n", NS, TRAINING_RUN, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "recmodeldeployments.hybridrec.io", "-n", NS, *MODELS, "--ignore-not-found", "--wait=false", check=False)
        # Free the GPUs and the server processes for the tests after this one.
        eventually(lambda: not model_pods(core) and not any(pod_runner.servers().get(f"{NS}/{m}") for m in MODELS), 120, 1.0,
                   "this test's pods and servers gone")
