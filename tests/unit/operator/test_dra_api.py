"""ComputePool ``gpu.dra``: the DRA alternative to ``gpu.resourceName``, its CEL rules and their pydantic mirrors."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from hybridrec_operator.api import crds
from hybridrec_operator.api.models import parse_pool
from hybridrec_operator.api.pool import DEVICE_CLASS_MESSAGE, DRA_EXCLUSIVE_MESSAGE, GpuSpec

POOL: dict[str, Any] = {"metadata": {"name": "dra-a100"},
                        "spec": {"tenancy": "private", "provider": "onprem", "pricing": {"pricePerGpuHour": 2.0},
                                 "maxGpus": 8, "allowedSensitivity": ["public", "confidential"]}}


def pool_with(gpu: dict[str, Any]) -> dict[str, Any]:
    return {**POOL, "spec": {**POOL["spec"], "gpu": gpu}}


def gpu_schema() -> dict[str, Any]:
    crd = next(c for c in crds.build_crds() if c["spec"]["names"]["kind"] == "ComputePool")
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["gpu"]


def test_a_dra_pool_parses_and_counts_under_its_own_resource_name() -> None:
    pool = parse_pool(pool_with({"dra": {"deviceClassName": "gpu.example.com",
                                         "selectors": ['device.attributes["gpu.example.com"].model == "A100"']}}))
    assert pool.spec.gpu.dra is not None and pool.spec.gpu.dra.device_class_name == "gpu.example.com"
    assert pool.spec.gpu.counted_resource == "dra.hybridrec.io/gpu.example.com"
    assert pool.spec.gpu.to_wire()["dra"]["selectors"] == ['device.attributes["gpu.example.com"].model == "A100"']
    # An extended-resource pool is unchanged.
    assert parse_pool(POOL).spec.gpu.counted_resource == "nvidia.com/gpu"
    assert parse_pool(POOL).spec.gpu.dra is None


@pytest.mark.parametrize("resource", ["nvidia.com/gpu", None])
def test_dra_with_the_default_or_no_resource_name_is_accepted(resource: str | None) -> None:
    gpu: dict[str, Any] = {"dra": {"deviceClassName": "gpu.example.com"}}
    if resource:
        gpu["resourceName"] = resource
    assert GpuSpec.model_validate(gpu).dra is not None


def test_dra_and_another_resource_name_are_refused_with_the_cel_message() -> None:
    with pytest.raises(ValidationError, match=re.escape(DRA_EXCLUSIVE_MESSAGE)):
        parse_pool(pool_with({"resourceName": "amd.com/gpu", "dra": {"deviceClassName": "gpu.example.com"}}))
    [rule] = gpu_schema()["x-kubernetes-validations"]
    assert rule["message"] == DRA_EXCLUSIVE_MESSAGE
    assert "has(self.dra)" in rule["rule"] and "'nvidia.com/gpu'" in rule["rule"]


@pytest.mark.parametrize("name", ["GPU.example.com", "gpu_example", "-gpu", "gpu.", ""])
def test_a_device_class_name_must_be_a_dns_subdomain(name: str) -> None:
    with pytest.raises(ValidationError):
        parse_pool(pool_with({"dra": {"deviceClassName": name}}))
    node = gpu_schema()["properties"]["dra"]["properties"]["deviceClassName"]
    [rule] = node["x-kubernetes-validations"]
    assert rule["message"] == DEVICE_CLASS_MESSAGE
    pattern = re.search(r"self.matches\(r'([^']*)'\)", rule["rule"]).group(1)  # type: ignore[union-attr]
    assert not re.match(pattern, name)
    assert re.match(pattern, "gpu.nvidia.com") and re.match(pattern, "a100")


def test_selectors_are_bounded_and_non_empty() -> None:
    node = gpu_schema()["properties"]["dra"]["properties"]["selectors"]
    assert node["maxItems"] == 8 and node["items"]["minLength"] == 1 and node["items"]["maxLength"] == 4096
    with pytest.raises(ValidationError):
        parse_pool(pool_with({"dra": {"deviceClassName": "gpu.example.com", "selectors": [""]}}))
    with pytest.raises(ValidationError):
        parse_pool(pool_with({"dra": {"deviceClassName": "gpu.example.com", "selectors": ["true"] * 9}}))
    with pytest.raises(ValidationError, match="deviceClassName|device_class_name"):
        parse_pool(pool_with({"dra": {}}))
