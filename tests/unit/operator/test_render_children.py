"""Child objects rendered for a RecModelDeployment: names, labels, placement constraints, hardening."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_operator.api.models import ComputePool, RecModelDeployment, parse_pool, parse_rmd
from hybridrec_operator.core.placement import PoolView, plan_placement
from hybridrec_operator.core.render import (
    build_children,
    build_deployment,
    build_pdb,
    build_service,
    child_name,
    owner_reference,
    selector_for,
)

REPO = Path(__file__).resolve().parents[3]
CONTRACT_ENV = {
    "HYBRIDREC_MODEL_URI", "HYBRIDREC_MODEL_NAME", "HYBRIDREC_NAMESPACE", "HYBRIDREC_POOL", "HYBRIDREC_PORT",
    "HYBRIDREC_MAX_BATCH_SIZE", "HYBRIDREC_MAX_BATCH_DELAY_MS", "HYBRIDREC_MAX_QUEUE", "HYBRIDREC_MODEL_CACHE_DIR",
}


def pools() -> dict[str, ComputePool]:
    return {p.name: p for p in (parse_pool(d) for d in yaml.safe_load_all((REPO / "manifests/samples/pools.yaml").read_text()) if d)}


def models() -> dict[str, RecModelDeployment]:
    return {m.name: m for m in (parse_rmd(d) for d in yaml.safe_load_all((REPO / "manifests/samples/models.yaml").read_text()) if d)}


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def test_deployment_on_a_private_pool() -> None:
    rmd, pool = models()["account-recs"], pools()["onprem-a100"]
    dep = build_deployment(rmd, pool, 3)
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    assert dep["metadata"]["name"] == "account-recs-onprem-a100" == child_name("account-recs", "onprem-a100")
    assert dep["metadata"]["namespace"] == "default"
    assert "ownerReferences" not in dep["metadata"]
    assert dep["spec"]["replicas"] == 3
    labels = {
        "app.kubernetes.io/name": "hybridrec-server", "app.kubernetes.io/instance": "account-recs",
        "app.kubernetes.io/component": "inference", "app.kubernetes.io/managed-by": "hybridrec",
        "hybridrec.io/model": "account-recs", "hybridrec.io/pool": "onprem-a100", "hybridrec.io/tenancy": "private",
        "hybridrec.io/sensitivity": "restricted",
    }
    assert dep["metadata"]["labels"] == labels == dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items() and selector["hybridrec.io/pool"] == "onprem-a100"
    spec = pod_spec(dep)
    assert spec["nodeSelector"] == {"hybridrec.io/pool": "onprem-a100"}
    assert "tolerations" not in spec
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["private"]}]}]
    assert spec["terminationGracePeriodSeconds"] == 30
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8080"


def test_container_resources_env_probes_and_hardening() -> None:
    rmd, pool = models()["homepage-recs"], pools()["aws-spot-l4"]
    spec = pod_spec(build_deployment(rmd, pool, 1))
    (container,) = spec["containers"]
    assert container["image"] == rmd.spec.serving.image
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert CONTRACT_ENV <= set(env)
    assert env["HYBRIDREC_MODEL_URI"] == "s3://hybridrec-models/homepage-recs/"
    assert env["HYBRIDREC_POOL"] == "aws-spot-l4" and env["HYBRIDREC_NAMESPACE"] == "default"
    assert env["HYBRIDREC_MODEL_NAME"] == "homepage-recs" and env["HYBRIDREC_PORT"] == "8080"
    assert "HYBRIDREC_MODEL_SHA256" not in env  # not set in the sample: never rendered as an empty string
    assert all(isinstance(v, str) for v in env.values())
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001 and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["model-cache"] == env["HYBRIDREC_MODEL_CACHE_DIR"]
    assert {"name": "model-cache", "emptyDir": {}} in spec["volumes"]
    # Public pool: its taint toleration and public tenancy affinity.
    assert spec["tolerations"] == [{"key": "hybridrec.io/tenancy", "operator": "Equal", "value": "public", "effect": "NoSchedule"}]
    expr = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert expr["matchExpressions"][0]["values"] == ["public"]


def test_sha256_and_custom_gpu_resource() -> None:
    rmd = models()["trending"]
    rmd = rmd.model_copy(update={"spec": rmd.spec.model_copy(update={
        "model": rmd.spec.model.model_copy(update={"sha256": "a" * 64}),
    })})
    pool = pools()["onprem-t4"]
    pool = pool.model_copy(update={"spec": pool.spec.model_copy(update={"gpu": pool.spec.gpu.model_copy(update={"resource_name": "amd.com/gpu"})})})
    container = pod_spec(build_deployment(rmd, pool, 2))["containers"][0]
    assert {e["name"]: e["value"] for e in container["env"]}["HYBRIDREC_MODEL_SHA256"] == "a" * 64
    assert container["resources"]["limits"] == {"memory": "1Gi", "amd.com/gpu": "1"}


def test_sensitive_model_on_public_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot run on public pool"):
        build_deployment(models()["account-recs"], pools()["gcp-ondemand-a100"], 1)


def test_service_and_pdb_span_all_pools() -> None:
    rmd = models()["trending"]
    svc, pdb = build_service(rmd), build_pdb(rmd)
    assert svc["apiVersion"] == "v1" and svc["kind"] == "Service" and svc["metadata"]["name"] == "trending"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "hybridrec-server", "hybridrec.io/model": "trending"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert "hybridrec.io/pool" not in svc["metadata"]["labels"] and svc["metadata"]["labels"]["hybridrec.io/model"] == "trending"
    # The selector string the scale subresource publishes selects the same pods.
    assert selector_for(rmd) == "app.kubernetes.io/name=hybridrec-server,hybridrec.io/model=trending"
    dep_labels = build_deployment(rmd, pools()["onprem-t4"], 1)["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= dep_labels.items()


def test_build_children_follows_the_plan() -> None:
    rmd, all_pools = models()["homepage-recs"], pools()
    views = [PoolView(p.name, p.spec, free_gpus={"onprem-t4": 1}.get(p.name, 0 if p.spec.tenancy == "private" else 8))
             for p in all_pools.values()]
    plan = plan_placement(rmd.spec, views, 3)
    assert plan.replicas_by_pool() == {"onprem-t4": 1, "aws-spot-l4": 2}
    children = build_children(rmd, plan, all_pools)
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("Deployment", "homepage-recs-onprem-t4"), ("Deployment", "homepage-recs-aws-spot-l4"),
        ("Service", "homepage-recs"), ("PodDisruptionBudget", "homepage-recs"),
    ]
    assert [c["spec"]["replicas"] for c in children[:2]] == [1, 2]
    kept = build_children(rmd, plan, all_pools, keep_pools=["onprem-a100", "gone-pool", "onprem-t4"])
    assert [(c["metadata"]["name"], c["spec"].get("replicas")) for c in kept if c["kind"] == "Deployment"] == [
        ("homepage-recs-onprem-t4", 1), ("homepage-recs-aws-spot-l4", 2), ("homepage-recs-onprem-a100", 0),
    ]
    # A pool that no longer admits the model is never kept around, not even at zero.
    restricted = models()["account-recs"]
    plan = plan_placement(restricted.spec, views, 1)
    names = [c["metadata"]["name"] for c in build_children(restricted, plan, all_pools, keep_pools=["aws-spot-l4"])]
    assert "account-recs-aws-spot-l4" not in names


def test_children_names_fit_a_dns_label() -> None:
    longest = "m" * 40 + "-" + "p" * 22
    assert len(longest) <= 63 and child_name("m" * 40, "p" * 22) == longest


def test_owner_reference() -> None:
    body = {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment", "metadata": {"name": "trending", "uid": "123"}}
    assert owner_reference(body) == {
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment", "name": "trending", "uid": "123",
        "controller": True, "blockOwnerDeletion": True,
    }


def test_rendered_objects_are_plain_json() -> None:
    rmd, pool = models()["trending"], pools()["onprem-t4"]
    for obj in (build_deployment(rmd, pool, 1), build_service(rmd), build_pdb(rmd)):
        assert yaml.safe_load(yaml.safe_dump(obj)) == obj
