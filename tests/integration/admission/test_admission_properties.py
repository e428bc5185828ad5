"""The class, not the list (issue 9 item 3): random Deployments of a restricted model's pods, written with the
operator's own identity, are sent to the real API server (server-side dry run: admission runs, nothing is stored).
Whatever the labels say, everything admitted keeps the pods on private nodes."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from admission_support import refused
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from operator_harness import Kube
from test_admission_policies import PRIVATE_POOL, model_doc, pools

from hybridrec_operator.api.models import parse_rmd
from hybridrec_operator.core.render import build_deployment
from support.cleanup import delete_namespace

pytestmark = pytest.mark.cluster

CLASSES = ["public", "internal", "confidential", "restricted", None]
TENANCY = "hybridrec.io/tenancy"


def term(values: list[str], operator: str = "In") -> dict[str, Any]:
    return {"matchExpressions": [{"key": TENANCY, "operator": operator, "values": values}]}


terms = st.lists(st.sampled_from([
    term(["private"]), term(["public"]), term(["private", "public"]), term(["public"], "NotIn"),
    {"matchExpressions": [{"key": "hybridrec.io/pool", "operator": "In", "values": ["aws-spot-l4"]}]},
]), max_size=3)


def keeps_private(spec: dict[str, Any]) -> bool:
    """The scheduler can put the pod only on nodes labelled private."""
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    chosen = required.get("nodeSelectorTerms") or []
    every_term = bool(chosen) and all(
        any(e["key"] == TENANCY and e["operator"] == "In" and e.get("values") and set(e["values"]) == {"private"}
            for e in t.get("matchExpressions") or [])
        for t in chosen)
    return every_term and (spec.get("nodeSelector") or {}).get(TENANCY, "private") == "private"


@pytest.fixture(scope="module")
def restricted_model(installed: Kube, kube_api: ApiClient) -> Iterator[tuple[str, dict[str, Any]]]:
    namespace = "adm-properties"
    installed("create", "namespace", namespace, check=False)
    installed.apply([model_doc(namespace)])
    rmd = parse_rmd(installed.get("rmd", "account-recs", namespace))
    base = json.loads(json.dumps(build_deployment(rmd, pools()[PRIVATE_POOL], 1)))
    # Wait until all three policies are active (the first refusal proves it).
    hostile = copy.deepcopy(base)
    del hostile["spec"]["template"]["spec"]["affinity"]
    refused(installed, "apply", "--dry-run=server", "-f", "-", input=json.dumps(hostile))
    yield namespace, base
    # The model would otherwise be served by a later module's operator, its pod taking a private GPU.
    delete_namespace(installed, namespace)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(own=st.sampled_from(CLASSES), template=st.sampled_from(CLASSES), model_on_template=st.booleans(),
       model_on_deployment=st.booleans(), chosen=st.one_of(st.none(), terms),
       selector=st.sampled_from([None, "private", "public"]))
def test_whatever_the_labels_admitted_pods_stay_private(
        restricted_model: tuple[str, dict[str, Any]], kube_api: ApiClient, own: str | None, template: str | None,
        model_on_template: bool, model_on_deployment: bool, chosen: list[dict[str, Any]] | None, selector: str | None) -> None:
    namespace, base = restricted_model
    doc = copy.deepcopy(base)
    labels, template_labels = doc["metadata"]["labels"], doc["spec"]["template"]["metadata"]["labels"]
    for target, value in ((labels, own), (template_labels, template)):
        target.pop("hybridrec.io/sensitivity", None)
        if value is not None:
            target["hybridrec.io/sensitivity"] = value
    if not model_on_deployment:
        labels.pop("hybridrec.io/model")
    if not model_on_template:
        template_labels.pop("hybridrec.io/model")
        doc["spec"]["selector"]["matchLabels"].pop("hybridrec.io/model")
    spec = doc["spec"]["template"]["spec"]
    if chosen is None:
        spec.pop("affinity")
    else:
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] = chosen
    if selector is not None:
        spec["nodeSelector"][TENANCY] = selector
    try:
        client.AppsV1Api(kube_api).create_namespaced_deployment(namespace, doc, dry_run="All")
    except ApiException as exc:
        assert exc.status in (403, 422), exc.body  # refused by admission or schema: fine whatever it was
        event("refused")
        return
    event("admitted")
    names_model = model_on_deployment or model_on_template
    claims_sensitive = {own, template} & {"confidential", "restricted"}
    if names_model or claims_sensitive:
        assert keeps_private(spec), f"admitted a pod of the restricted model that may leave private nodes: {json.dumps(doc)}"
