"""Issue 9, findings 3 and 4, against the real local control plane and the operator process.

3. A node relabelled from private to public under a restricted pod: the pod is deleted within seconds, the model
   says SensitivePlacementViolation (naming pod and node) and gets a Warning event, the metric counts it, and the
   replacement runs on a private node. The pool says TenancyMismatch.
4. A `private` pool whose nodeSelector picks public nodes, at price 0: TenancyMismatch naming them, no capacity,
   no restricted pod ever bound to a public node, and the healthy models' running pods stay where they are.

Retraining pods (a Job's, labelled hybridrec.io/trained-model) are held to the same rule.

And the guard never deletes a pod hybridrec did not create, even one labelled as a restricted model's; it sees such a
pod even when it asks for no GPU, and as soon as its model is raised to restricted (no pod or node event needed).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from invariant_support import ConditionWatch, node_tenancy, relabel, restored_node_labels, user_objects, violations
from operator_harness import MANAGED, Kube, OperatorProcess, rmd_ready, sample_models, wait_for

pytestmark = pytest.mark.cluster

VIOLATION = "SensitivePlacementViolation"
MISMATCH = "TenancyMismatch"


def pods_of(kube: Kube, namespace: str, model: str) -> list[dict[str, Any]]:
    return [p for p in kube.items("pods", namespace, f"{MANAGED},hybridrec.io/model={model}")
            if not p["metadata"].get("deletionTimestamp")]


def pool_condition(kube: Kube, pool: str, type_: str) -> dict[str, Any]:
    body = kube.get("computepool", pool) or {}
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def events(kube: Kube, namespace: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in kube.items("events", namespace) if e.get("reason") == reason]


def test_node_relabelled_public_under_a_restricted_pod(operator: OperatorProcess, kube: Kube, namespace: str,
                                                       kube_api: Any) -> None:
    kube.apply(sample_models(namespace, "account-recs"))
    wait_for(lambda: rmd_ready(kube, namespace, "account-recs"), 90, "account-recs Ready")
    pod = wait_for(lambda: [p for p in pods_of(kube, namespace, "account-recs") if p["spec"].get("nodeName")], 30,
                   "its pod bound")[0]
    name, node, pool = pod["metadata"]["name"], pod["spec"]["nodeName"], pod["metadata"]["labels"]["hybridrec.io/pool"]
    assert node_tenancy(kube)[node] == "private"

    with restored_node_labels(kube), ConditionWatch(kube_api, namespace, "account-recs", VIOLATION) as watch:
        time.sleep(0.5)  # the watch is established
        started = time.monotonic()
        relabel(kube, node, "public")
        wait_for(lambda: kube.get("pod", name, namespace) is None, 10, f"pod {name} deleted", interval=0.1)
        deleted_after = time.monotonic() - started
        print(f"restricted pod deleted {deleted_after:.2f} s after its node was relabelled public")
        assert deleted_after < 5

        # The replacement runs on a private node (required affinity), and the model is Ready again.
        replacement = wait_for(lambda: [p for p in pods_of(kube, namespace, "account-recs")
                                        if p["spec"].get("nodeName") and p["metadata"]["name"] != name], 60,
                               "a replacement pod bound")[0]
        assert replacement["spec"]["nodeName"] != node
        assert node_tenancy(kube)[replacement["spec"]["nodeName"]] == "private"
        wait_for(lambda: rmd_ready(kube, namespace, "account-recs"), 60, "account-recs Ready again")
        wait_for(lambda: watch.statuses()[-1:] == ["False"], 30, f"{VIOLATION} back to False")

    # True while the pod ran there, naming pod and node; False afterwards, still naming them.
    assert "True" in watch.statuses(), watch.seen
    true = next(m for s, _, m in watch.seen if s == "True")
    assert name in true and node in true and "public" in true
    rmd = kube.get("rmd", "account-recs", namespace)
    final = kube.condition(rmd, VIOLATION)
    assert final["status"] == "False" and final["reason"] == "ViolationResolved" and name in final["message"]

    warning = wait_for(lambda: events(kube, namespace, VIOLATION), 10, "a SensitivePlacementViolation event")
    assert warning[0]["type"] == "Warning" and warning[0]["involvedObject"]["name"] == "account-recs"
    assert name in warning[0]["message"] and node in warning[0]["message"]
    assert operator.sample("hybridrec_sensitive_placement_violations_total", namespace=namespace,
                           model="account-recs", node=node) == 1

    # While relabelled, the pool named the node and did not count it as ready; relabelled back, it agrees again.
    wait_for(lambda: pool_condition(kube, pool, MISMATCH).get("status") == "False", 30, f"{pool} agreeing again")
    assert not violations(kube, namespace)


def test_pool_relabelled_node_is_named_and_gives_no_capacity(operator: OperatorProcess, kube: Kube) -> None:
    """The pool side of finding 3: the relabelled node is named by TenancyMismatch and stops counting as ready."""
    nodes = [n for n, t in node_tenancy(kube).items() if n.startswith("onprem-t4")]
    before = (kube.get("computepool", "onprem-t4") or {}).get("status") or {}
    with restored_node_labels(kube):
        relabel(kube, nodes[0], "public")
        cond = wait_for(lambda: pool_condition(kube, "onprem-t4", MISMATCH).get("status") == "True"
                        and pool_condition(kube, "onprem-t4", MISMATCH), 30, "onprem-t4 TenancyMismatch")
        assert nodes[0] in cond["message"] and cond["reason"] == "NodesDisagree"
        status = wait_for(lambda: ((kube.get("computepool", "onprem-t4") or {}).get("status") or {}).get("readyNodes")
                          == before.get("readyNodes", 0) - 1 and kube.get("computepool", "onprem-t4")["status"], 30,
                          "one ready node fewer")
        assert status["nodes"] == before.get("nodes")
        assert [e for e in events(kube, "default", MISMATCH) if e["involvedObject"]["name"] == "onprem-t4"]
    wait_for(lambda: pool_condition(kube, "onprem-t4", MISMATCH).get("status") == "False", 30, "onprem-t4 agreeing")


def test_private_pool_selecting_public_nodes_at_price_zero(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    kube.apply(sample_models(namespace))
    for model in ("account-recs", "homepage-recs", "trending"):
        wait_for(lambda model=model: rmd_ready(kube, namespace, model), 90, f"{model} Ready")
    running = {p["metadata"]["uid"]: p["spec"]["nodeName"] for p in kube.items("pods", namespace, MANAGED)}
    public_nodes = sorted(n for n, t in node_tenancy(kube).items() if t == "public" and n.startswith("aws-spot-l4"))
    rogue = f"rogue-{namespace}"
    kube.apply([{
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "ComputePool", "metadata": {"name": rogue},
        "spec": {"tenancy": "private", "provider": "onprem", "region": "onprem-fra",
                 "nodeSelector": {"hybridrec.io/pool": "aws-spot-l4"},
                 "gpu": {"resourceName": "nvidia.com/gpu", "model": "NVIDIA-L4", "memoryGib": 24},
                 "pricing": {"pricePerGpuHour": 0, "currency": "USD", "capacityType": "reserved"},
                 "maxGpus": 16, "allowedSensitivity": ["public", "internal", "confidential", "restricted"]},
    }])
    try:
        cond = wait_for(lambda: pool_condition(kube, rogue, MISMATCH).get("status") == "True"
                        and pool_condition(kube, rogue, MISMATCH), 30, f"{rogue} TenancyMismatch")
        assert all(n in cond["message"] for n in public_nodes[:5]), cond
        status = kube.get("computepool", rogue)["status"]
        assert status["readyNodes"] == 0 and status["freeGpus"] == 0
        warning = wait_for(lambda: [e for e in events(kube, "default", MISMATCH) if e["involvedObject"]["name"] == rogue],
                           10, "a TenancyMismatch event on the pool")
        assert warning[0]["type"] == "Warning"

        # Every model is re-planned (a pool changed); watch a resync go by too. At no point may a restricted pod be
        # bound to a public node, a model be planned onto the rogue pool, or a healthy pod be taken away.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert not violations(kube, namespace)
            for rmd in kube.items("rmd", namespace):
                pools = {p["pool"] for p in (rmd.get("status") or {}).get("placements") or []}
                assert rogue not in pools, (rmd["metadata"]["name"], pools)
            time.sleep(1)
        now = {p["metadata"]["uid"]: p["spec"]["nodeName"] for p in kube.items("pods", namespace, MANAGED)}
        assert now == running, "healthy models' pods were disrupted"
        for model in ("account-recs", "homepage-recs", "trending"):
            assert rmd_ready(kube, namespace, model), model
    finally:
        kube("delete", "computepool", rogue, "--wait=false", check=False)


def test_a_users_pod_claiming_a_restricted_model_is_reported_never_deleted(
        operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    """hybridrec never deletes what it did not create: a user's pod labelled as a restricted model's, on a node
    relabelled public, keeps running; the model says so (condition, one event), and a restart does not repeat it."""
    kube.apply(sample_models(namespace, "account-recs"))
    wait_for(lambda: rmd_ready(kube, namespace, "account-recs"), 90, "account-recs Ready")
    users = [o for o in user_objects(namespace, gpu_node="onprem-t4-1") if o["kind"] == "Pod"]
    kube.apply(users)
    pod = wait_for(lambda: (kube.get("pod", "user-gpu-job", namespace) or {}).get("status", {}).get("phase") == "Running"
                   and kube.get("pod", "user-gpu-job", namespace), 60, "the user's pod running")
    with restored_node_labels(kube):
        relabel(kube, "onprem-t4-1", "public")
        cond = wait_for(lambda: kube.condition(kube.get("rmd", "account-recs", namespace), VIOLATION).get("status") == "True"
                        and kube.condition(kube.get("rmd", "account-recs", namespace), VIOLATION), 15, f"{VIOLATION}=True")
        assert "user-gpu-job" in cond["message"] and "left alone" in cond["message"]
        operator.kill9()
        operator.start()
        time.sleep(3)  # the restarted operator has looked again
        assert len(events(kube, namespace, VIOLATION)) == 1
        live = kube.get("pod", "user-gpu-job", namespace)
        assert live["metadata"]["uid"] == pod["metadata"]["uid"] and not live["metadata"].get("deletionTimestamp")
    # Relabelled back: no violation remains.
    wait_for(lambda: kube.condition(kube.get("rmd", "account-recs", namespace), VIOLATION).get("status") == "False",
             15, f"{VIOLATION} back to False")


def test_a_model_raised_to_restricted_over_a_users_pod_on_a_public_node_is_reported(
        operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    """A pod carrying a public model's labels (so the model's Service sends it traffic), created by someone else on a
    public node and asking for no GPU; the model is then raised to restricted. Nothing about the pod or its node
    changes, yet the model must say at once that its data class now runs there (the pod is left alone), and say it
    is resolved once the pod goes."""
    kube.apply(sample_models(namespace, "trending"))
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "lookalike", "namespace": namespace,
                        "labels": {"app.kubernetes.io/name": "hybridrec-server", "hybridrec.io/model": "trending",
                                   "hybridrec.io/sensitivity": "public"}},
           "spec": {"nodeSelector": {"hybridrec.io/pool": "aws-spot-l4"}, "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "c", "image": "registry.example/lookalike:1"}]}}
    kube.apply([pod])
    live = wait_for(lambda: (p := kube.get("pod", "lookalike", namespace)) and (p.get("status") or {}).get("phase") == "Running"
                    and p, 60, "the look-alike pod running")
    assert node_tenancy(kube)[live["spec"]["nodeName"]] == "public"
    kube("patch", "rmd", "trending", "-n", namespace, "--type=merge", "-p", '{"spec":{"dataSensitivity":"restricted"}}')

    def reported() -> dict[str, Any] | None:
        cond = kube.condition(kube.get("rmd", "trending", namespace), VIOLATION)
        return cond if cond.get("status") == "True" else None

    cond = wait_for(reported, 15, f"{VIOLATION}=True on trending")
    assert "lookalike" in cond["message"] and live["spec"]["nodeName"] in cond["message"] and "left alone" in cond["message"]
    assert wait_for(lambda: [e for e in events(kube, namespace, VIOLATION) if "lookalike" in e["message"]], 10,
                    "its event")[0]["type"] == "Warning"
    now = kube.get("pod", "lookalike", namespace)
    assert now["metadata"]["uid"] == live["metadata"]["uid"] and not now["metadata"].get("deletionTimestamp")
    kube("delete", "pod", "lookalike", "-n", namespace, "--grace-period=0", "--force")
    wait_for(lambda: kube.condition(kube.get("rmd", "trending", namespace), VIOLATION).get("status") == "False", 15,
             f"{VIOLATION} back to False once the pod is gone")


def test_a_retraining_pod_on_a_node_relabelled_public_is_deleted(operator: OperatorProcess, kube: Kube, namespace: str) -> None:
    """A retraining pod reads its model's data as much as an inference pod does. A Job as hybridrec's training
    controller writes it (its labels, a private affinity, controlled by a hybridrec.io object: here the model, in the
    operator a RecModelTrainingRun); its node relabelled public: the pod is deleted and reported, and the Job's next
    pod lands on a private node. (hybridrec.io/training-run keeps kwok from completing it at once.)"""
    [doc] = sample_models(namespace, "account-recs")
    doc["spec"]["replicas"] = 0  # no inference pod: the retraining pod alone is at stake
    kube.apply([doc])
    rmd = wait_for(lambda: kube.get("rmd", "account-recs", namespace), 30, "the model stored")
    labels = {"app.kubernetes.io/managed-by": "hybridrec", "app.kubernetes.io/component": "training",
              "hybridrec.io/trained-model": "account-recs", "hybridrec.io/training-run": "run-1",
              "hybridrec.io/sensitivity": "restricted"}
    private_only = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["private"]}]}]}}}
    kube.apply([{"apiVersion": "batch/v1", "kind": "Job",
                 "metadata": {"name": "run-1", "namespace": namespace, "labels": labels,
                              "ownerReferences": [{"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
                                                   "name": "account-recs", "uid": rmd["metadata"]["uid"], "controller": True}]},
                 "spec": {"backoffLimit": 4, "activeDeadlineSeconds": 300, "template": {
                     "metadata": {"labels": labels},
                     "spec": {"restartPolicy": "Never", "affinity": private_only, "tolerations": [{"operator": "Exists"}],
                              "nodeSelector": {"hybridrec.io/pool": "onprem-t4"},
                              "containers": [{"name": "trainer", "image": "registry.example/trainer:1"}]}}}}])

    def trainers() -> list[dict[str, Any]]:
        return [p for p in kube.items("pods", namespace, "hybridrec.io/training-run=run-1")
                if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") == "Running"]

    first = wait_for(trainers, 60, "the retraining pod running")[0]
    name, node = first["metadata"]["name"], first["spec"]["nodeName"]
    with restored_node_labels(kube):
        relabel(kube, node, "public")
        wait_for(lambda: kube.get("pod", name, namespace) is None, 10, f"retraining pod {name} deleted", interval=0.2)
        cond = wait_for(lambda: (c := kube.condition(kube.get("rmd", "account-recs", namespace), VIOLATION))
                        and name in c.get("message", "") and c, 15, f"{VIOLATION} naming {name}")
        assert node in cond["message"] and "deleted" in cond["message"]
        replacement = wait_for(lambda: [p for p in trainers() if p["metadata"]["name"] != name], 60, "the Job's next pod")[0]
        assert node_tenancy(kube)[replacement["spec"]["nodeName"]] == "private"
    assert not violations(kube, namespace)
