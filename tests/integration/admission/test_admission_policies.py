"""Issue 9 item 3 against the real API server: admission that does not trust labels alone.

* finding 2 (the hostile JSON patch that got a restricted pod bound to a public node) is refused, both for a
  namespace user (only the operator may touch hybridrec's children) and for the operator's own identity (the
  placement rules read the Deployment's old and new labels, both label sets and the model's spec);
* only the operator may create, change or delete objects labelled app.kubernetes.io/managed-by=hybridrec, while the
  garbage collector and the ReplicaSet controller keep working and users' own objects are untouched;
* spec.nodeName on a sensitive pod, disagreeing sensitivity labels, and a pod that says "public" for a restricted
  model are refused;
* a namespace user can get no pod labelled as a model's (which its Service would send traffic to) by any route: a
  bare pod, a relabelled pod of their own, or any built-in workload whose template carries those labels; nor change
  the ReplicaSet of hybridrec's Deployment;
* the same holds for hybridrec's ResourceClaimTemplates (DRA pools, retraining runs).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from admission_support import MALLORY, apply_json, refused
from operator_harness import SAMPLES, Kube

from hybridrec_operator.api.models import parse_pool, parse_rmd
from hybridrec_operator.core.dra import build_claim_template
from hybridrec_operator.core.render import build_deployment, build_service
from support.stack import wait_for

pytestmark = pytest.mark.cluster

PRIVATE_POOL, PUBLIC_POOL = "onprem-a100", "aws-spot-l4"


def pools() -> dict[str, Any]:
    return {p.name: p for p in (parse_pool(d) for d in yaml.safe_load_all((SAMPLES / "pools.yaml").read_text()) if d)}


def model_doc(namespace: str, name: str = "account-recs", sensitivity: str = "restricted") -> dict[str, Any]:
    return {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"uri": "s3://hybridrec-models/account-recs/", "architecture": "two-tower"},
                     "dataSensitivity": sensitivity}}


def as_operator_would(kube: Kube, namespace: str, sensitivity: str = "restricted", pool: str = PRIVATE_POOL,
                      replicas: int = 0) -> dict[str, Any]:
    """The model and its Deployment, written the way the operator writes them (same renderer, admin identity)."""
    doc = model_doc(namespace, sensitivity=sensitivity)
    kube.apply([doc])
    live = kube.get("rmd", "account-recs", namespace)
    rmd = parse_rmd(live)
    deployment = build_deployment(rmd, pools()[pool], replicas)
    deployment["metadata"]["ownerReferences"] = [{
        "apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment", "name": "account-recs",
        "uid": live["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    apply_json(kube, deployment)
    return deployment


def hostile_patch() -> list[dict[str, Any]]:
    """Finding 2: relabel the template public, drop the affinity, point nodeSelector and toleration at a public pool."""
    public = pools()[PUBLIC_POOL]
    return [
        {"op": "replace", "path": "/spec/template/metadata/labels/hybridrec.io~1sensitivity", "value": "public"},
        {"op": "replace", "path": "/spec/template/metadata/labels/hybridrec.io~1tenancy", "value": "public"},
        {"op": "remove", "path": "/spec/template/spec/affinity"},
        {"op": "replace", "path": "/spec/template/spec/nodeSelector", "value": dict(public.spec.node_selector)},
        {"op": "add", "path": "/spec/template/spec/tolerations",
         "value": [{k: v for k, v in t.to_wire().items() if v != ""} for t in public.spec.tolerations] or
         [{"key": "hybridrec.io/public", "operator": "Exists"}]},
    ]


def template_of(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get("deployment", f"account-recs-{PRIVATE_POOL}", namespace)["spec"]["template"]


def test_hostile_patch_by_a_namespace_user_is_refused(installed: Kube, namespace: str) -> None:
    as_operator_would(installed, namespace)
    before = template_of(installed, namespace)
    error = refused(installed, "patch", "deployment", f"account-recs-{PRIVATE_POOL}", "-n", namespace, "--type=json",
                    "-p", json.dumps(hostile_patch()), f"--as={MALLORY}")
    # Several policies refuse it (the API server reports one of them, in no fixed order).
    assert "ValidatingAdmissionPolicy 'hybridrec-" in error and "denied request" in error, error
    assert template_of(installed, namespace) == before
    # Even a harmless edit by this user is refused: the children policy alone, whatever the placement.
    error = refused(installed, "annotate", "deployment", f"account-recs-{PRIVATE_POOL}", "-n", namespace,
                    "example.com/note=hi", f"--as={MALLORY}")
    assert "managed by hybridrec" in error and MALLORY in error, error


def test_hostile_patch_by_the_operator_identity_is_refused_too(installed: Kube, namespace: str) -> None:
    """Labels are not trusted: the old template, the Deployment's own label and the model's spec still say restricted."""
    as_operator_would(installed, namespace)
    before = template_of(installed, namespace)
    deployment = f"account-recs-{PRIVATE_POOL}"
    error = refused(installed, "patch", "deployment", deployment, "-n", namespace, "--type=json",
                    "-p", json.dumps(hostile_patch()))
    # Refused by a placement rule (which one the API server reports first varies), not by the children policy.
    assert "denied request" in error and "restricted" in error and "managed by hybridrec" not in error, error
    # Relabelling the Deployment itself as well does not help: the model's spec decides.
    both = hostile_patch() + [{"op": "replace", "path": "/metadata/labels/hybridrec.io~1sensitivity", "value": "public"}]
    error = refused(installed, "patch", "deployment", deployment, "-n", namespace, "--type=json", "-p", json.dumps(both))
    assert "denied request" in error and "restricted" in error and "managed by hybridrec" not in error, error
    assert template_of(installed, namespace) == before


def test_only_the_operator_touches_managed_objects(installed: Kube, namespace: str) -> None:
    deployment = as_operator_would(installed, namespace)
    name = deployment["metadata"]["name"]
    error = refused(installed, "delete", "deployment", name, "-n", namespace, f"--as={MALLORY}")
    assert "only the hybridrec operator may delete it" in error, error
    error = refused(installed, "label", "deployment", name, "-n", namespace, "app.kubernetes.io/managed-by-", f"--as={MALLORY}")
    assert "managed by hybridrec" in error, error
    # Creating a look-alike child (a Service the operator would own) is refused too.
    service = build_service(parse_rmd(installed.get("rmd", "account-recs", namespace)))
    error = refused(installed, "apply", "-f", "-", f"--as={MALLORY}", input=json.dumps(service))
    assert "only the hybridrec operator may create it" in error, error
    # The user's own objects are none of hybridrec's business.
    own = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mine", "namespace": namespace},
           "spec": {"selector": {"app": "mine"}, "ports": [{"port": 80}]}}
    installed("apply", "-f", "-", f"--as={MALLORY}", input=json.dumps(own))
    installed("delete", "service", "mine", "-n", namespace, f"--as={MALLORY}")
    # The operator's identity may.
    assert installed("label", "deployment", name, "-n", namespace, "example.com/checked=yes", "--overwrite").returncode == 0


def test_controllers_still_work_under_the_policies(installed: Kube, namespace: str) -> None:
    """The ReplicaSet controller creates the restricted pods; the garbage collector deletes the children."""
    as_operator_would(installed, namespace, replicas=1)
    wait_for(lambda: installed.items("pods", namespace, "hybridrec.io/model=account-recs"), 60,
             "the ReplicaSet controller to create the pod")
    installed("delete", "rmd", "account-recs", "-n", namespace)
    wait_for(lambda: not installed.items("deployments", namespace, "hybridrec.io/model=account-recs"), 150,
             "the garbage collector to delete the child Deployment")


def sensitive_pod(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["private"]}]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"hybridrec.io/model": "account-recs", "hybridrec.io/sensitivity": "restricted"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}},
                     **spec}}


def test_node_name_on_a_sensitive_pod_is_refused(installed: Kube, namespace: str) -> None:
    node = installed.items("nodes")[0]["metadata"]["name"]
    pod = sensitive_pod(namespace, "pinned", nodeName=node)
    error = refused(installed, "apply", "-f", "-", input=json.dumps(pod))
    assert "spec.nodeName" in error, error


def test_a_pod_cannot_claim_public_for_a_restricted_model(installed: Kube, namespace: str) -> None:
    installed.apply([model_doc(namespace)])
    pod = sensitive_pod(namespace, "claims-public")
    pod["metadata"]["labels"]["hybridrec.io/sensitivity"] = "public"
    del pod["spec"]["affinity"]
    error = refused(installed, "apply", "-f", "-", input=json.dumps(pod))
    assert "spec.dataSensitivity: restricted" in error, error
    # The same pod with the model's class and the private affinity is admitted.
    installed("apply", "-f", "-", input=json.dumps(sensitive_pod(namespace, "honest")))


def test_deployment_labels_must_agree(installed: Kube, namespace: str) -> None:
    rmd = parse_rmd({**model_doc(namespace, sensitivity="internal")})
    deployment = json.loads(json.dumps(build_deployment(rmd, pools()[PRIVATE_POOL], 0)))  # two independent label maps
    deployment["metadata"]["labels"]["hybridrec.io/sensitivity"] = "restricted"
    error = refused(installed, "apply", "-f", "-", input=json.dumps(deployment))
    assert "the two labels must agree" in error, error


def lookalike_workloads(namespace: str) -> list[dict[str, Any]]:
    """Every route to a pod the model's Service selects: the pod itself and each built-in controller's template."""
    labels = {"app.kubernetes.io/name": "hybridrec-server", "hybridrec.io/model": "trending", "hybridrec.io/sensitivity": "public"}
    pod_spec = {"restartPolicy": "Always", "containers": [{"name": "c", "image": "registry.example/lookalike:1"}]}
    job_spec = {"template": {"metadata": {"labels": labels}, "spec": {**pod_spec, "restartPolicy": "Never"}}}
    template = {"metadata": {"labels": labels}, "spec": pod_spec}
    selector = {"matchLabels": labels}

    def doc(api: str, kind: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
        # Own labels agree with the template's, so only the rule under test has a reason to refuse.
        return {"apiVersion": api, "kind": kind,
                "metadata": {"name": "lookalike", "namespace": namespace, "labels": labels, **meta}, "spec": spec}

    return [
        doc("v1", "Pod", pod_spec, labels=labels),
        {**doc("v1", "Pod", pod_spec, labels={"app.kubernetes.io/managed-by": "hybridrec"}),
         "metadata": {"generateName": "lookalike-", "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "hybridrec"}}},
        doc("apps/v1", "Deployment", {"selector": selector, "template": template}),
        doc("apps/v1", "ReplicaSet", {"selector": selector, "template": template}),
        doc("apps/v1", "StatefulSet", {"serviceName": "lookalike", "selector": selector, "template": template}),
        doc("apps/v1", "DaemonSet", {"selector": selector, "template": template}),
        doc("v1", "ReplicationController", {"selector": labels, "template": template}),
        doc("batch/v1", "Job", job_spec),
        doc("batch/v1", "CronJob", {"schedule": "0 0 * * *", "jobTemplate": {"spec": job_spec}}),
    ]


def test_no_route_to_a_pod_that_claims_a_model(installed: Kube, namespace: str) -> None:
    """A pod labelled hybridrec.io/model receives the model's traffic; a user's such pod on a public node would keep
    receiving it after the model is raised to restricted (the operator never deletes what it did not create). So a
    namespace user gets none, by any route, for a model that does not even exist yet; the operator's own pods still
    come (the ReplicaSet controller creates them) and a cluster admin may still create one."""
    for doc in lookalike_workloads(namespace):
        verb = "create" if "generateName" in doc["metadata"] else "apply"
        error = refused(installed, verb, "--dry-run=server", "-f", "-", f"--as={MALLORY}", input=json.dumps(doc))
        assert "ValidatingAdmissionPolicy 'hybridrec-model-pods'" in error and MALLORY in error, (doc["kind"], error)
        assert "Service of the model sends traffic to" in error, error
    # Relabelling a pod of one's own into the model is refused too; the pod itself is the user's business.
    own = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mine", "namespace": namespace},
           "spec": {"containers": [{"name": "c", "image": "registry.example/mine:1"}]}}
    installed("apply", "-f", "-", f"--as={MALLORY}", input=json.dumps(own))
    error = refused(installed, "label", "pod", "mine", "-n", namespace, "hybridrec.io/model=trending",
                    "hybridrec.io/sensitivity=public", f"--as={MALLORY}")
    assert "hybridrec-model-pods" in error, error
    installed("delete", "pod", "mine", "-n", namespace, f"--as={MALLORY}", "--wait=false")

    # hybridrec's own Deployment: its ReplicaSet and pod are created by kube-system's controllers, and the ReplicaSet
    # (which carries the labels in its template) is out of a namespace user's reach.
    as_operator_would(installed, namespace, sensitivity="public", replicas=1)
    wait_for(lambda: installed.items("pods", namespace, "hybridrec.io/model=account-recs"), 60,
             "the ReplicaSet controller to create the operator's pod")
    [rs] = installed.items("replicasets", namespace, "hybridrec.io/model=account-recs")
    error = refused(installed, "annotate", "replicaset", rs["metadata"]["name"], "-n", namespace, "example.com/x=y",
                    f"--as={MALLORY}")
    assert "hybridrec-model-pods" in error, error
    # A cluster admin is trusted (and the operator's tests rely on creating users' look-alikes that way).
    installed("apply", "--dry-run=server", "-f", "-", input=json.dumps(lookalike_workloads(namespace)[0]))


def test_only_the_operator_touches_managed_resource_claim_templates(installed: Kube, namespace: str) -> None:
    """A ResourceClaimTemplate of hybridrec's (DRA pools, retraining runs) decides which devices its pods get: a
    namespace user may neither create a look-alike nor change or delete ours; their own templates are untouched."""
    labels = {"app.kubernetes.io/managed-by": "hybridrec", "hybridrec.io/model": "account-recs"}
    ours = build_claim_template("account-recs-dra", namespace, labels, "gpu.example.com", [], 1)
    error = refused(installed, "create", "--dry-run=server", "-f", "-", f"--as={MALLORY}", input=json.dumps(ours))
    assert "only the hybridrec operator may create it" in error and "ResourceClaimTemplate" in error, error
    apply_json(installed, ours)  # the operator's identity may
    name = ours["metadata"]["name"]
    error = refused(installed, "delete", "resourceclaimtemplate", name, "-n", namespace, f"--as={MALLORY}")
    assert "only the hybridrec operator may delete it" in error, error
    error = refused(installed, "label", "resourceclaimtemplate", name, "-n", namespace, "app.kubernetes.io/managed-by-",
                    f"--as={MALLORY}")
    assert "managed by hybridrec" in error, error
    # The user's own template (RBAC lets them: the refusals above are the policy's).
    own = build_claim_template("mine", namespace, {"app": "mine"}, "gpu.example.com", [], 1)
    installed("create", "-f", "-", f"--as={MALLORY}", input=json.dumps(own))
    installed("delete", "resourceclaimtemplate", own["metadata"]["name"], "-n", namespace, f"--as={MALLORY}")
    installed("delete", "resourceclaimtemplate", name, "-n", namespace)
