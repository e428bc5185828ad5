"""Issue 9, finding 1: a RecModelDeployment or ComputePool name the API admits always becomes a valid name for every
child (Deployment ``<model>-<pool>``, Service/PDB/NetworkPolicy ``<model>``, label values). Checked over random
names against Kubernetes' own rules, written here independently of api/models.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hybridrec_operator.api.models import MAX_MODEL_NAME, MAX_POOL_NAME, ComputePool, RecModelDeployment

# k8s.io/apimachinery/pkg/util/validation: IsDNS1035Label (Services), IsDNS1123Label, IsValidLabelValue.
DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# Pods of a Deployment are named <deployment>-<rs hash: up to 10>-<5>; the API server truncates the generated part,
# but hostnames and label values derived from the Deployment name must still fit 63.
MAX_LABEL = 63

names = st.text(alphabet="abz09-._A", min_size=1, max_size=70) | st.sampled_from(
    ["recs.v2", "2recs", "-recs", "recs-", "Recs", "a" * 40, "a" * 41, "x", "a1", "1a", "pool.a", "pool_a"]
)


def rmd(name: str) -> dict[str, Any]:
    return {"apiVersion": "hybridrec.io/v1alpha1", "kind": "RecModelDeployment", "metadata": {"name": name, "namespace": "ns"},
            "spec": {"model": {"uri": "s3://hybridrec-models/m/", "architecture": "two-tower"}, "dataSensitivity": "restricted"}}


def pool(name: str) -> dict[str, Any]:
    return {"apiVersion": "hybridrec.io/v1alpha1", "kind": "ComputePool", "metadata": {"name": name},
            "spec": {"tenancy": "private", "provider": "onprem", "pricing": {"pricePerGpuHour": 1.0}, "maxGpus": 1,
                     "allowedSensitivity": ["restricted"]}}


def accepted(model: type[RecModelDeployment] | type[ComputePool], doc: dict[str, Any]) -> bool:
    try:
        model.model_validate(doc)
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(model=names, pool_name=names)
def test_admitted_names_make_valid_children(model: str, pool_name: str) -> None:
    if not (accepted(RecModelDeployment, rmd(model)) and accepted(ComputePool, pool(pool_name))):
        return
    deployment = f"{model}-{pool_name}"
    assert DNS1035.fullmatch(model) and len(model) <= MAX_LABEL  # Service, PDB, NetworkPolicy
    assert DNS1123_LABEL.fullmatch(deployment) and len(deployment) <= MAX_LABEL  # Deployment (and its pods' prefix)
    for value in (model, pool_name):  # hybridrec.io/model, hybridrec.io/pool
        assert LABEL_VALUE.fullmatch(value) and len(value) <= MAX_LABEL


@settings(max_examples=300, deadline=None)
@given(model=names)
def test_every_service_name_short_enough_is_admitted(model: str) -> None:
    """The rule is no stricter than needed: each DNS-1035 label within the length limit is a valid model name."""
    if DNS1035.fullmatch(model) and len(model) <= MAX_MODEL_NAME:
        assert accepted(RecModelDeployment, rmd(model))
    if DNS1123_LABEL.fullmatch(model) and len(model) <= MAX_POOL_NAME:
        assert accepted(ComputePool, pool(model))


@pytest.mark.parametrize("name", ["recs.v2", "2recs", "Recs", "recs_v2"])
def test_refusal_says_why_in_words(name: str) -> None:
    with pytest.raises(ValidationError) as refused:
        RecModelDeployment.model_validate(rmd(name))
    message = str(refused.value)
    assert "must be a DNS-1035 label" in message and "starting with a letter" in message and repr(name) in message
