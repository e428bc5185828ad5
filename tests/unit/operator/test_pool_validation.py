"""Issue 9 item 5: ComputePool fields (and resource quantities) are validated as Kubernetes validates them, checked over
random inputs against rules written here from Kubernetes' validation code, independently of api/models.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.utils.quantity import parse_quantity
from pydantic import ValidationError

from hybridrec_operator.api.models import ComputePoolSpec, GpuSpec, Resources, Toleration

# k8s.io/apimachinery/pkg/util/validation: IsQualifiedName, IsValidLabelValue.
QUALIFIED = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def qualified(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return bool(QUALIFIED.fullmatch(key)) and len(name) <= 63 and len(prefix) <= 253


def accepted(model: Any, doc: dict[str, Any]) -> bool:
    try:
        model.model_validate(doc)
    except ValidationError:
        return False
    return True


keys = st.sampled_from(["", "nvidia.com/gpu", "dedicated", "a/b", "bad key", "x/", "/x", "-a", "a.b.c/d_e", "A/b", "k" * 64])
values = st.sampled_from(["", "present", "a b", "-x", "x.y_z", "v" * 64])


@settings(max_examples=300, deadline=None)
@given(key=keys, operator=st.sampled_from(["Equal", "Exists"]), value=values,
       effect=st.sampled_from(["", "NoSchedule", "PreferNoSchedule", "NoExecute"]))
def test_tolerations_follow_kubernetes(key: str, operator: str, value: str, effect: str) -> None:
    # validateTolerations: key empty only with Exists; Exists takes no value; key a qualified name; value a label value.
    kubernetes_ok = (
        (key == "" or qualified(key))
        and (key != "" or operator == "Exists")
        and (operator != "Exists" or value == "")
        and bool(VALUE.fullmatch(value)) and len(value) <= 63
    )
    doc = {"key": key, "operator": operator, "value": value, "effect": effect}
    assert accepted(Toleration, doc) == kubernetes_ok


@pytest.mark.parametrize("name", ["cpu", "memory", "ephemeral-storage", "pods", "hugepages-2Mi", "kubernetes.io/gpu",
                                  "requests.nvidia.com/gpu", "example.kubernetes.io/gpu", "gpu", "nvidia.com/", "Nvidia.com/gpu"])
def test_resource_names_that_are_not_extended_resources_are_refused(name: str) -> None:
    assert not accepted(GpuSpec, {"resourceName": name})


@pytest.mark.parametrize("name", ["nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "example.com/mig-1g.10gb"])
def test_extended_resources_are_accepted(name: str) -> None:
    assert accepted(GpuSpec, {"resourceName": name})


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet="0123456789.+-eEKMGTPimnuk ", max_size=8))
def test_quantities_accepted_are_positive_kubernetes_quantities(text: str) -> None:
    if accepted(Resources, {"cpu": text}):
        assert parse_quantity(text) > 0


@settings(max_examples=200, deadline=None)
@given(whole=st.integers(0, 10**6), fraction=st.none() | st.integers(0, 999),
       suffix=st.sampled_from(["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti", "e3", "E2"]))
def test_well_formed_positive_quantities_are_accepted(whole: int, fraction: int | None, suffix: str) -> None:
    text = f"{whole}{'' if fraction is None else f'.{fraction}'}{suffix}"
    assert accepted(Resources, {"memory": text}) == (parse_quantity(text) > 0)


@settings(max_examples=200, deadline=None)
@given(selector=st.dictionaries(keys, values, max_size=3))
def test_node_selectors_follow_label_syntax(selector: dict[str, str]) -> None:
    doc = {"tenancy": "private", "provider": "onprem", "nodeSelector": selector, "pricing": {"pricePerGpuHour": 1.0},
           "maxGpus": 1, "allowedSensitivity": ["public"]}
    kubernetes_ok = all(qualified(k) for k in selector) and all(VALUE.fullmatch(v) and len(v) <= 63 for v in selector.values())
    assert accepted(ComputePoolSpec, doc) == kubernetes_ok
