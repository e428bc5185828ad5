"""Objects the schema let through but the operator cannot use end as a condition and an event on the object, never
only as a log line or a crash loop (issue 9 item 5).

The CRDs refuse nearly every bad input at admission now, so the bad objects here are stored the way they reach a
real cluster: under an older, laxer schema (the CRD's validation rules are stripped while the object is created, then
the CRD is restored; stored objects are not validated again). One of them, a nodeSelector key whose DNS prefix is over
253 characters, the current CRD accepts too (found while writing this test; the API's CEL rule should refuse it).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from operator_harness import ROOT, SAMPLES, Kube, OperatorProcess, load_docs, rmd_ready, sample_models, wait_for

pytestmark = pytest.mark.cluster


def _lax(schema: Any) -> Any:
    """The schema without CEL rules, patterns and bounds (what an older CRD version might have had)."""
    if isinstance(schema, dict):
        return {k: _lax(v) for k, v in schema.items()
                if k not in ("x-kubernetes-validations", "pattern", "maxLength", "minimum", "maximum", "enum")}
    if isinstance(schema, list):
        return [_lax(v) for v in schema]
    return schema


@contextlib.contextmanager
def older_schema(kube: Kube, crd: str) -> Iterator[None]:
    path = ROOT / "manifests" / "crds" / f"hybridrec.io_{crd.split('.')[0]}.yaml"
    live = kube.get("crd", crd)
    lax = yaml.safe_load(path.read_text())
    for version in lax["spec"]["versions"]:
        version["schema"] = _lax(version["schema"])
    lax["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    kube("replace", "-f", "-", input=json.dumps(lax))
    try:
        yield
    finally:
        strict = yaml.safe_load(path.read_text())
        strict["metadata"]["resourceVersion"] = kube.get("crd", crd)["metadata"]["resourceVersion"]
        kube("replace", "-f", "-", input=json.dumps(strict))


def _events_about(kube: Kube, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.items("events", namespace)
            if e.get("reason") == reason and e["involvedObject"].get("name") == name]


def _pool(name: str, **spec: Any) -> dict[str, Any]:
    base = next(d for d in load_docs(SAMPLES / "pools.yaml") if d["metadata"]["name"] == "onprem-t4")
    body = {"apiVersion": base["apiVersion"], "kind": "ComputePool", "metadata": {"name": name}, "spec": dict(base["spec"])}
    body["spec"].update(spec)
    return body


@pytest.mark.parametrize("case", ["old-schema", "current-schema"])
def test_an_unusable_pool_gets_a_condition_and_an_event_and_models_carry_on(
        operator: OperatorProcess, kube: Kube, namespace: str, case: str) -> None:
    name = f"bad-{case.split('-')[0]}"
    if case == "old-schema":
        # gpu.resourceName cpu: every replica planned there would ask for CPUs as if they were GPUs.
        with older_schema(kube, "computepools.hybridrec.io"):
            kube.apply([_pool(name, gpu={"resourceName": "cpu"})])
    else:
        # A label key's prefix is at most 253 characters (264 here). The current CRD accepts it (its CEL rule checks
        # the key's length and syntax, not the prefix's length); stored under the older schema all the same, so this
        # test keeps working once the CRD refuses it too.
        long_prefix = ("a" * 60 + ".") * 4 + "b" * 20 + "/x"
        with older_schema(kube, "computepools.hybridrec.io"):
            kube.apply([_pool(name, nodeSelector={"hybridrec.io/pool": "onprem-t4", long_prefix: "on-prem"})])
    try:
        def refused() -> dict[str, Any] | None:
            pool = kube.get("computepool", name)
            ready = kube.condition(pool, "Ready")
            return pool if ready.get("status") == "False" and ready.get("reason") == "InvalidSpec" else None

        pool = wait_for(refused, 60, f"ComputePool {name} Ready=False (InvalidSpec)")
        message = kube.condition(pool, "Ready")["message"]
        assert ("resourceName" in message) if case == "old-schema" else ("nodeSelector" in message or "label" in message), message
        assert pool["status"]["observedGeneration"] == pool["metadata"]["generation"]
        events = wait_for(lambda: _events_about(kube, "default", name, "InvalidSpec"), 30, "the pool's event")
        assert events[-1]["type"] == "Warning" and events[-1]["involvedObject"]["kind"] == "ComputePool"
        # The other pools still serve: a model is placed as usual.
        kube.apply(sample_models(namespace, "trending"))
        rmd = wait_for(lambda: rmd_ready(kube, namespace, "trending"), 90, "trending Ready beside the unusable pool")
        assert name not in {p["pool"] for p in rmd["status"]["placements"]}
        assert operator.running, "the operator died"
    finally:
        kube("delete", "computepool", name, "--ignore-not-found")


def test_a_model_stored_under_an_older_schema_gets_a_condition_and_an_event(
        operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    [doc] = sample_models(namespace, "account-recs")
    doc["spec"]["resources"]["cpu"] = "-1"  # matches no quantity the server can run
    doc["spec"]["budget"] = {"maxPerHour": 1e308, "currency": "USD"}
    with older_schema(kube, "recmodeldeployments.hybridrec.io"):
        kube.apply([doc])

    def invalid() -> dict[str, Any] | None:
        rmd = kube.get("rmd", "account-recs", namespace)
        placed = kube.condition(rmd, "Placed")
        return rmd if placed.get("status") == "False" and placed.get("reason") == "InvalidSpec" else None

    rmd = wait_for(invalid, 60, "Placed=False (InvalidSpec)")
    assert "cpu" in kube.condition(rmd, "Placed")["message"]
    assert rmd["status"]["observedGeneration"] == rmd["metadata"]["generation"]
    events = wait_for(lambda: _events_about(kube, namespace, "account-recs", "InvalidSpec"), 30, "the model's event")
    assert events[-1]["type"] == "Warning"
    assert not kube.items("deployments", namespace, "hybridrec.io/model=account-recs")  # nothing guessed from it
    assert operator.running, "the operator died"
