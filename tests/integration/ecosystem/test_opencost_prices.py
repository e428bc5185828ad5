"""OpenCost as a price source on a real Prometheus and the real local control plane.

The test serves OpenCost's node series under OpenCost's exact names and labels (``node_gpu_hourly_cost``,
``node_gpu_count``, ``node_total_hourly_cost``, ``kubecost_node_is_spot`` with ``instance, node, instance_type,
region, provider_id, arch, uid``) from a small HTTP exporter (prometheus_client, as OpenCost's Go client emits them),
a real Prometheus scrapes it with ``honor_labels`` as OpenCost's docs configure it, and the operator prices the pool
``oc-spot`` (``pricing.source: opencost``, over the sample aws-spot-l4 nodes) from it. OpenCost itself is not run:
this checks hybridrec against OpenCost's wire format, not OpenCost's pricing.

A public model that may use only ``oc-spot`` and ``oc-static`` (1.0/GPU-hour, the gcp nodes) goes where the GPU-hour
is cheaper: to ``oc-spot`` while OpenCost says 0.40, to ``oc-static`` once the spot price rises to 2.50. NaN prices and
series that vanish fall back to the static 1.5 with a False ``OpenCostPrice`` condition and an event; never zero.
"""

from __future__ import annotations

import copy
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.processes import free_port
from hybridrec_local.promlocal import LocalPrometheus
from support.kube import SAMPLES, Kube, fresh_namespace
from support.operator import OperatorProcess
from support.stack import wait_for

pytestmark = pytest.mark.cluster

SPOT_NODES = ("aws-spot-l4-0", "aws-spot-l4-1", "aws-spot-l4-2")
OTHER_NODES = ("gcp-ondemand-a100-0", "gcp-ondemand-a100-1")
LABELS = ("instance", "node", "instance_type", "region", "provider_id", "arch", "uid")
SAMPLE_POOLS = ["onprem-a100", "onprem-t4", "aws-spot-l4", "gcp-ondemand-a100"]
FAST_ENV = {"HYBRIDREC_RESYNC_SECONDS": "15", "HYBRIDREC_PENDING_GRACE_SECONDS": "5", "HYBRIDREC_POOL_STATUS_DELAY": "0.3",
            "HYBRIDREC_PRICE_REFRESH_SECONDS": "1", "HYBRIDREC_PRICE_MAX_AGE_SECONDS": "15"}


class OpenCostExporter:
    """OpenCost's node cost series, settable by the test, served over HTTP on 127.0.0.1."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.gpu = Gauge("node_gpu_hourly_cost", "node_gpu_hourly_cost hourly cost for each gpu on this node", LABELS,
                         registry=self.registry)
        self.count = Gauge("node_gpu_count", "node_gpu_count count of gpu on this node", LABELS, registry=self.registry)
        self.total = Gauge("node_total_hourly_cost", "node_total_hourly_cost Total node cost per hour", LABELS,
                           registry=self.registry)
        self.spot = Gauge("kubecost_node_is_spot", "kubecost_node_is_spot Cloud provider info about node preemptibility",
                          LABELS, registry=self.registry)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_gpu_price(self, node: str, price: float, *, spot: bool, instance_type: str, gpus: int = 4) -> None:
        labels = {"instance": node, "node": node, "instance_type": instance_type, "region": "eu-central-1",
                  "provider_id": f"aws:///eu-central-1a/i-{abs(hash(node)) % 10**8:08d}", "arch": "amd64",
                  "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, node))}
        self.gpu.labels(**labels).set(price)
        self.count.labels(**labels).set(gpus)
        self.total.labels(**labels).set(0.4 * 16 + 0.005 * 64 + gpus * price)
        self.spot.labels(**labels).set(1.0 if spot else 0.0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def pools() -> list[dict[str, Any]]:
    sample = {d["metadata"]["name"]: d for d in yaml.safe_load_all((SAMPLES / "pools.yaml").read_text()) if d}
    spot = copy.deepcopy(sample["aws-spot-l4"])
    spot["metadata"] = {"name": "oc-spot"}
    spot["spec"]["pricing"] = {"pricePerGpuHour": 1.5, "currency": "USD", "capacityType": "spot", "source": "opencost"}
    static = copy.deepcopy(sample["gcp-ondemand-a100"])
    static["metadata"] = {"name": "oc-static"}
    static["spec"]["pricing"] = {"pricePerGpuHour": 1.0, "currency": "USD", "capacityType": "on-demand"}
    static["spec"]["gpu"] = dict(spot["spec"]["gpu"])  # same GPU model: the same capacity, so only price decides
    return [spot, static]


def pool_status(kube: Kube, name: str) -> dict[str, Any]:
    return (kube.get("computepools.hybridrec.io", name) or {}).get("status") or {}


def price_condition(kube: Kube, name: str) -> dict[str, Any]:
    return next((c for c in pool_status(kube, name).get("conditions") or [] if c["type"] == "OpenCostPrice"), {})


@pytest.fixture(scope="module")
def opencost(installed: Kube, cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kube, OpenCostExporter, LocalPrometheus]]:
    exporter = OpenCostExporter()
    for node, price in zip(SPOT_NODES, (0.30, 0.50, 0.40), strict=True):
        exporter.set_gpu_price(node, price, spot=True, instance_type="g6.12xlarge")
    for node in OTHER_NODES:
        exporter.set_gpu_price(node, 3.67, spot=False, instance_type="a2-highgpu-8g", gpus=8)
    prom = LocalPrometheus(Path(tmp_path_factory.mktemp("opencost-prom")), scrape_interval_s=1.0)
    # The operator job's file_sd target list, with honor_labels: the exporter stands where OpenCost's scrape job
    # would be (OpenCost's docs set honor_labels: true so its instance/node labels are kept).
    prom.set_operator_targets([exporter.address])
    prom.start()
    installed.apply(pools())
    op = OperatorProcess(cluster, Path(tmp_path_factory.mktemp("opencost-operator")), "operator-opencost",
                         ["--standalone"], {**FAST_ENV, "HYBRIDREC_OPENCOST_PROMETHEUS_URL": prom.url})
    op.start()
    try:
        yield installed, exporter, prom
    finally:
        op.stop()
        prom.stop()
        exporter.close()
        installed("delete", "computepools.hybridrec.io", "oc-spot", "oc-static", "--ignore-not-found", "--wait=true")


@pytest.fixture
def namespace(opencost: tuple[Kube, OpenCostExporter, LocalPrometheus]) -> Iterator[str]:
    with fresh_namespace(opencost[0], "oc") as name:
        yield name


def placed(kube: Kube, namespace: str, name: str) -> dict[str, int]:
    rmd = kube.get("rmd", name, namespace) or {}
    return {p["pool"]: p["desired"] for p in (rmd.get("status") or {}).get("placements") or [] if p["desired"]}


def test_opencost_prices_move_the_allocator_and_bad_series_fall_back(
        opencost: tuple[Kube, OpenCostExporter, LocalPrometheus], namespace: str) -> None:
    kube, exporter, prom = opencost
    price = wait_for(lambda: (p := pool_status(kube, "oc-spot").get("price")) and p.get("source") == "opencost" and p,
                     60, "oc-spot priced from OpenCost")
    assert price["pricePerGpuHour"] == pytest.approx(0.40)  # mean of 0.30, 0.50, 0.40 over the pool's 3 nodes
    assert (price["nodes"], price["spotNodes"], price["currency"]) == (3, 3, "USD")
    assert "node_gpu_hourly_cost" in price["detail"] and "aws-spot-l4-0" in price["detail"]
    assert price_condition(kube, "oc-spot")["status"] == "True"
    assert "price" not in pool_status(kube, "oc-static")  # a static pool is what its spec says
    # An unchanged price is no news: three refreshes later the pool object has not been rewritten.
    version = kube.get("computepools.hybridrec.io", "oc-spot")["metadata"]["resourceVersion"]
    time.sleep(3)
    assert kube.get("computepools.hybridrec.io", "oc-spot")["metadata"]["resourceVersion"] == version
    assert pool_status(kube, "oc-spot")["price"]["since"] == price["since"]

    model = next(d for d in yaml.safe_load_all((SAMPLES / "models.yaml").read_text())
                 if d and d.get("metadata", {}).get("name") == "trending")
    model["metadata"] = {"name": "deals", "namespace": namespace}
    model["spec"]["replicas"] = 2
    model["spec"]["placement"] = {"forbiddenPools": SAMPLE_POOLS}
    model["spec"].pop("budget", None)
    kube.apply([model])
    wait_for(lambda: placed(kube, namespace, "deals") == {"oc-spot": 2}, 60, "the model on oc-spot (0.40/GPU-hour)")

    # The spot price rises above the static pool's: the allocator moves the model.
    for node in SPOT_NODES:
        exporter.set_gpu_price(node, 2.50, spot=True, instance_type="g6.12xlarge")
    wait_for(lambda: pool_status(kube, "oc-spot").get("price", {}).get("pricePerGpuHour") == pytest.approx(2.5), 30,
             "oc-spot repriced at 2.50")
    wait_for(lambda: placed(kube, namespace, "deals") == {"oc-static": 2}, 60, "the model moved to oc-static (1.00)")

    # NaN from OpenCost: the static price (1.5, never 0), a False condition and a Warning event naming the problem.
    for node in SPOT_NODES:
        exporter.set_gpu_price(node, math.nan, spot=True, instance_type="g6.12xlarge")
    cond = wait_for(lambda: (c := price_condition(kube, "oc-spot")).get("reason") == "PriceInvalid" and c, 30,
                    "OpenCostPrice=False PriceInvalid")
    assert cond["status"] == "False" and "NaN" in cond["message"]
    price = pool_status(kube, "oc-spot")["price"]
    assert (price["source"], price["pricePerGpuHour"]) == ("static", 1.5)
    events = wait_for(lambda: [e for e in kube.items("events", "default") if e["involvedObject"].get("name") == "oc-spot"
                               and e.get("reason") == "PriceInvalid"], 30, "the PriceInvalid event")
    assert events[0]["type"] == "Warning" and "static price 1.5" in events[0]["message"]

    # OpenCost goes away (its target leaves the scrape): the series vanish, the pool keeps the static price.
    prom.set_operator_targets([])
    wait_for(lambda: price_condition(kube, "oc-spot").get("reason") == "SeriesMissing", 60, "OpenCostPrice SeriesMissing")
    assert pool_status(kube, "oc-spot")["price"]["pricePerGpuHour"] == 1.5
    assert placed(kube, namespace, "deals") == {"oc-static": 2}
