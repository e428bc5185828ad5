"""The hard data-sensitivity rule, in exactly one place.

| class        | private pools                     | public pools                                         |
|--------------|-----------------------------------|------------------------------------------------------|
| restricted   | only pools that list `restricted` | never                                                |
| confidential | pools that list it                | never                                                |
| internal     | pools that list it                | only pools that list `internal`, with allowPublicBurst |
| public       | pools that list it                | pools that list it                                   |

Every planner (placement, the global allocator, the simulator) asks this module; nothing else decides it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hybridrec_operator.api.models import SENSITIVE, ComputePoolSpec, Sensitivity, Tenancy

SENSITIVITY_LABEL = "hybridrec.io/sensitivity"
MODEL_LABEL = "hybridrec.io/model"
TENANCY_LABEL = "hybridrec.io/tenancy"
# A retraining Job's pods name their model with this label (core/training.py, which imports this module, defines the
# same value; a unit test keeps the two equal): they read the model's data as much as its inference pods do.
TRAINED_MODEL_LABEL = "hybridrec.io/trained-model"


def pool_admits(sensitivity: Sensitivity, pool: ComputePoolSpec, *, allow_public_burst: bool) -> tuple[bool, str]:
    """Whether data of ``sensitivity`` may run on ``pool``, and why not when it may not."""
    sensitivity = Sensitivity(sensitivity)
    if sensitivity not in pool.allowed_sensitivity:
        return False, f"pool does not allow {sensitivity.value} data"
    # A pool on a remote cluster (Liqo virtual node) is public when either its tenancy or the remote cluster's
    # declared tenancy says so (the CRD already requires both to agree; this holds whatever the input).
    remote_public = pool.remote_cluster is not None and pool.remote_cluster.tenancy == Tenancy.PUBLIC
    if pool.tenancy == Tenancy.PUBLIC or remote_public:
        # Defence in depth: the CRD already refuses public pools that list sensitive classes.
        if sensitivity in SENSITIVE:
            return False, f"{sensitivity.value} data never runs on a public pool"
        if sensitivity == Sensitivity.INTERNAL and not allow_public_burst:
            return False, "internal data bursts to public pools only with placement.allowPublicBurst"
    return True, "allowed"


@dataclass(frozen=True)
class Violation:
    """A pod of a confidential/restricted model bound to a node whose tenancy label is not ``private``."""

    namespace: str
    pod: str
    model: str
    node: str
    node_tenancy: str  # "" when the node has no tenancy label (or is unknown)

    @property
    def message(self) -> str:
        return self.describe(deleted=True)

    @property
    def model_key(self) -> str:
        return f"{self.namespace}/{self.model}"

    def describe(self, *, deleted: bool, failure: str = "") -> str:
        """One sentence for the condition and the event; ``deleted`` False for a pod hybridrec did not create
        (it is reported, never touched), or with ``failure`` when deleting our own pod failed (it is retried)."""
        where = f"labelled {TENANCY_LABEL}={self.node_tenancy}" if self.node_tenancy else f"without a {TENANCY_LABEL} label"
        if failure:
            outcome = f"hybridrec could not delete it ({failure.rstrip('.')}) and keeps trying"
        elif deleted:
            outcome = "the pod is deleted"
        else:
            outcome = "the pod was not created by hybridrec, so it is left alone: move or delete it"
        return (f"pod {self.namespace}/{self.pod} of model {self.model} runs on node {self.node} {where}: "
                f"confidential and restricted data run only on nodes labelled private; {outcome}")


def placement_violations(
    pods: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    sensitive_models: Iterable[str] = (),
) -> list[Violation]:
    """Every bound pod of a sensitive model (an inference pod, ``hybridrec.io/model``, or a retraining pod,
    ``hybridrec.io/trained-model``) on a node not labelled ``hybridrec.io/tenancy=private``, whatever its pool
    says (issue 9 item 4). A pod is sensitive when its model (``<namespace>/<model>`` in ``sensitive_models``, from the
    models' specs) or its own sensitivity label says so: the spec is the truth, the label a fallback for pods whose
    model is gone. Nodes unknown to ``nodes`` count as not private. Pure; sorted by namespace, pod."""
    tenancy_of = {
        str((n.get("metadata") or {}).get("name", "")): str(((n.get("metadata") or {}).get("labels") or {}).get(TENANCY_LABEL, ""))
        for n in nodes
    }
    sensitive = set(sensitive_models)
    found = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        node = str((pod.get("spec") or {}).get("nodeName") or "")
        model = str(labels.get(MODEL_LABEL) or labels.get(TRAINED_MODEL_LABEL) or "")
        namespace = str(meta.get("namespace", "default"))
        if not node or not model or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        claimed = labels.get(SENSITIVITY_LABEL) in {s.value for s in SENSITIVE}
        if f"{namespace}/{model}" not in sensitive and not claimed:
            continue
        tenancy = tenancy_of.get(node, "")
        if tenancy != Tenancy.PRIVATE.value:
            found.append(Violation(namespace, str(meta.get("name", "")), model, node, tenancy))
    return sorted(found, key=lambda v: (v.namespace, v.pod))


MANAGED_BY = ("app.kubernetes.io/managed-by", "hybridrec")


def created_by_hybridrec(pod: Mapping[str, Any], deployments: Iterable[Mapping[str, Any]]) -> bool:
    """Whether ``pod`` (the full object, with ownerReferences) belongs to one of ``deployments`` (hybridrec's own
    children of the pod's model, as the operator indexes them): our labels, a controlling ReplicaSet named
    ``<deployment>-<pod-template-hash>`` (how the Deployment controller names it) of a Deployment that carries our
    label and is controlled by a RecModelDeployment. The invariant check deletes only such pods: a user's pod that
    merely copies our labels is reported, never deleted (hybridrec never touches an object it did not create)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    model, template_hash = labels.get(MODEL_LABEL), labels.get("pod-template-hash")
    if labels.get(MANAGED_BY[0]) != MANAGED_BY[1] or not model or not template_hash:
        return False
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    if owner is None or owner.get("kind") != "ReplicaSet" or owner.get("apiVersion") != "apps/v1":
        return False
    for deployment in deployments:
        dmeta = deployment.get("metadata") or {}
        dlabels = dmeta.get("labels") or {}
        if (dmeta.get("namespace", meta.get("namespace")) != meta.get("namespace") or dlabels.get(MODEL_LABEL) != model
                or dlabels.get(MANAGED_BY[0]) != MANAGED_BY[1]):
            continue
        controlled = any(r.get("controller") and r.get("kind") == "RecModelDeployment" for r in dmeta.get("ownerReferences") or [])
        if controlled and owner.get("name") == f"{dmeta.get('name')}-{template_hash}":
            return True
    return False


def training_job_of_hybridrec(pod: Mapping[str, Any], job: Mapping[str, Any] | None) -> bool:
    """Whether ``pod`` (the full object) is a retraining pod of ``job`` (its controlling Job, as read from the API
    server) and that Job is hybridrec's: our labels on both, the pod controlled by that Job (by name and uid), and the
    Job controlled by a hybridrec.io object (its training run). Such a pod may be deleted like an inference pod; the
    Job's replacement pod has the same required private affinity."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if job is None or labels.get(MANAGED_BY[0]) != MANAGED_BY[1] or not labels.get(TRAINED_MODEL_LABEL):
        return False
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    jmeta = job.get("metadata") or {}
    jlabels = jmeta.get("labels") or {}
    if (owner is None or owner.get("kind") != "Job" or owner.get("apiVersion") != "batch/v1"
            or owner.get("name") != jmeta.get("name") or owner.get("uid") != jmeta.get("uid")
            or jmeta.get("namespace", meta.get("namespace")) != meta.get("namespace")):
        return False
    if jlabels.get(MANAGED_BY[0]) != MANAGED_BY[1] or jlabels.get(TRAINED_MODEL_LABEL) != labels.get(TRAINED_MODEL_LABEL):
        return False
    return any(r.get("controller") and str(r.get("apiVersion", "")).startswith("hybridrec.io/")
               for r in jmeta.get("ownerReferences") or [])
