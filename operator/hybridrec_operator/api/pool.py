"""ComputePool (``cpool``, cluster-scoped): a set of nodes with one tenancy, capacity type and price.

The schema ``crds.py`` generates the CRD from, with the CEL rules next to the fields they guard.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator


from hybridrec_operator.api.fields import (
    API_VERSION,
    MAX_POOL_NAME,
    DNS_LABEL,
    CURRENCY,
    LABEL_KEY,
    LABEL_VALUE,
    MAX_LABEL_KEY,
    EXTENDED_RESOURCE,
    _DNS_SUBDOMAIN,
    cel,
    POOL_NAME_MESSAGE,
    LABEL_KEY_MESSAGE,
    RESOURCE_NAME_MESSAGE,
    name_rules,
    check_name,
    Sensitivity,
    SENSITIVE,
    Tenancy,
    CapacityType,
    ApiModel,
    ApiObject,
    Condition,
)

# --------------------------------------------------------------------------------------------- ComputePool


class Toleration(ApiModel):
    """A pod toleration, validated as Kubernetes validates one (so a bad pool fails here, not on every pod)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.operator != 'Exists' || size(self.value) == 0",
                    "a toleration with operator Exists must not have a value", ".value"),
                cel("size(self.key) > 0 || self.operator == 'Exists'",
                    "a toleration without a key must use operator Exists (it then tolerates every taint)", ".operator"),
            ]
        }
    )

    key: Annotated[
        str,
        Field(
            max_length=MAX_LABEL_KEY,
            pattern=rf"^$|{LABEL_KEY}",
            description="Taint key: empty (with operator Exists) or a valid label key.",
        ),
    ] = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: Annotated[str, Field(max_length=63, pattern=LABEL_VALUE, description="Taint value (a label value).")] = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] = ""

    @model_validator(mode="after")
    def _operator_rules(self) -> Toleration:
        # Mirrors the CEL rules above (Kubernetes' validateTolerations).
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists must not have a value")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without a key must use operator Exists (it then tolerates every taint)")
        return self


# Dynamic Resource Allocation (resource.k8s.io/v1): a pool may count its GPUs as DRA devices instead.
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"
# The operator's internal name for a DRA pool's devices in its capacity arithmetic (never sent to the API server).
DRA_RESOURCE_PREFIX = "dra.hybridrec.io/"
DEVICE_CLASS_NAME = rf"^{_DNS_SUBDOMAIN}$"
MAX_DRA_SELECTORS = 8
MAX_CEL_EXPRESSION = 4096
DRA_EXCLUSIVE_MESSAGE = (
    "gpu.dra and gpu.resourceName are alternatives: a DRA pool's GPUs are devices of its DeviceClass, not an extended "
    "resource; leave resourceName unset (or nvidia.com/gpu) when dra is set"
)
DEVICE_CLASS_MESSAGE = "gpu.dra.deviceClassName must be a DeviceClass name (a DNS subdomain, e.g. gpu.nvidia.com)"


class DraSpec(ApiModel):
    """GPUs through Dynamic Resource Allocation: each replica claims ``resources.gpus`` devices of the DeviceClass."""

    device_class_name: Annotated[
        str,
        Field(min_length=1, max_length=253,
              description="The DeviceClass every replica's ResourceClaim requests devices of (e.g. gpu.nvidia.com).",
              json_schema_extra={"x-kubernetes-validations": [
                  cel(f"self.matches(r'{DEVICE_CLASS_NAME}')", DEVICE_CLASS_MESSAGE)]}),
    ]
    selectors: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_CEL_EXPRESSION)]],
        Field(max_length=MAX_DRA_SELECTORS,
              description="CEL expressions a device must satisfy besides the class's own (e.g. "
                          "device.attributes[\"gpu.nvidia.com\"].productName == \"NVIDIA A100\"); the scheduler "
                          "evaluates them. Capacity counts every device of the class's driver on the pool's nodes."),
    ] = Field(default_factory=list)

    @field_validator("device_class_name")
    @classmethod
    def _class_name(cls, value: str) -> str:
        # Mirrors the CEL rule (Kubernetes validates DeviceClass names as DNS subdomains).
        if not re.match(DEVICE_CLASS_NAME, value):
            raise ValueError(f"{DEVICE_CLASS_MESSAGE}; got {value!r}")
        return value


class GpuSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(f"!has(self.dra) || !has(self.resourceName) || self.resourceName == '{DEFAULT_GPU_RESOURCE}'",
                    DRA_EXCLUSIVE_MESSAGE, ".resourceName"),
            ]
        }
    )

    resource_name: Annotated[
        str,
        Field(
            max_length=MAX_LABEL_KEY,
            description="Extended resource that counts GPUs (domain-prefixed, e.g. nvidia.com/gpu).",
            json_schema_extra={
                "x-kubernetes-validations": [
                    cel(f"self.matches(r'{EXTENDED_RESOURCE}') && !self.contains('kubernetes.io/') && "
                        "!self.startsWith('requests.')", RESOURCE_NAME_MESSAGE)
                ]
            },
        ),
    ] = DEFAULT_GPU_RESOURCE
    model: Annotated[str, Field(max_length=63, description="GPU model, e.g. NVIDIA-A100-SXM4-80GB.")] = ""
    memory_gib: Annotated[int, Field(ge=0, le=1024, description="Memory per GPU in GiB.")] = 0
    dra: Annotated[
        DraSpec | None,
        Field(description="Count and claim GPUs through Dynamic Resource Allocation (resource.k8s.io/v1) instead of "
                          "resourceName: pods get a ResourceClaimTemplate per model and pool, and free GPUs are the "
                          "class's devices in the ResourceSlices of the pool's nodes minus those allocated."),
    ] = None

    @field_validator("resource_name", mode="before")
    @classmethod
    def _extended(cls, value: Any) -> Any:
        # Mirrors the CEL rule: Kubernetes' IsExtendedResourceName.
        if isinstance(value, str) and (
            not re.match(EXTENDED_RESOURCE, value) or "kubernetes.io/" in value or value.startswith("requests.")
        ):
            raise ValueError(f"{RESOURCE_NAME_MESSAGE}; got {value!r}")
        return value

    @model_validator(mode="after")
    def _dra_or_extended(self) -> GpuSpec:
        # Mirrors the CEL rule above.
        if self.dra is not None and self.resource_name != DEFAULT_GPU_RESOURCE:
            raise ValueError(DRA_EXCLUSIVE_MESSAGE)
        return self

    @property
    def counted_resource(self) -> str:
        """The name capacity counts this pool's GPUs under: the extended resource, or for a DRA pool a name of the
        operator's own (``dra.hybridrec.io/<class>``) that ``core/dra.py`` writes into the nodes' allocatable."""
        return f"{DRA_RESOURCE_PREFIX}{self.dra.device_class_name}" if self.dra is not None else self.resource_name


class PriceSource(StrEnum):
    STATIC = "static"  # spec.pricing.pricePerGpuHour
    OPENCOST = "opencost"  # OpenCost's node_gpu_hourly_cost in Prometheus, averaged over the pool's nodes


class Pricing(ApiModel):
    price_per_gpu_hour: Annotated[float, Field(ge=0, le=1000, description="Price of one GPU for one hour; with "
                                                                          "source opencost, the fallback price.")]
    currency: Annotated[str, Field(pattern=CURRENCY, description="ISO 4217 code of the price.")] = "USD"
    capacity_type: CapacityType = CapacityType.ON_DEMAND
    source: Annotated[
        PriceSource,
        Field(description="static: pricePerGpuHour. opencost: OpenCost's node_gpu_hourly_cost series in Prometheus, "
                          "averaged over the pool's nodes and refreshed on a timer; pricePerGpuHour is used while they "
                          "are missing, stale or invalid (status.price says which price is in use)."),
    ] = PriceSource.STATIC


# Liqo (liqo.io) shows a peered remote cluster as one virtual node carrying these labels and this taint.
LIQO_TYPE_LABEL = "liqo.io/type"
LIQO_VIRTUAL_NODE = "virtual-node"
LIQO_CLUSTER_LABEL = "liqo.io/remote-cluster-id"
LIQO_TAINT = "virtual-node.liqo.io/not-allowed"
REMOTE_UNDECLARED_MESSAGE = (
    "a pool that selects Liqo virtual nodes (liqo.io/type: virtual-node or liqo.io/remote-cluster-id) must declare "
    "remoteCluster: the remote cluster's id and its tenancy"
)
REMOTE_TENANCY_MESSAGE = (
    "remoteCluster.tenancy must equal tenancy: a pool of a remote cluster has that cluster's tenancy (any cloud "
    "provider's cluster is public)"
)
REMOTE_SELECTOR_MESSAGE = (
    "a remote pool must select its cluster's virtual node: nodeSelector needs liqo.io/remote-cluster-id equal to "
    "remoteCluster.clusterId"
)


class RemoteCluster(ApiModel):
    """The remote cluster (a Liqo peering) whose virtual node this pool's pods run on."""

    cluster_id: Annotated[
        str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE,
                   description="The remote cluster's id, as Liqo labels its virtual node (liqo.io/remote-cluster-id).")
    ]
    tenancy: Annotated[
        Tenancy, Field(description="Tenancy of the remote cluster, declared by whoever peered it: public for any "
                                   "cloud provider's cluster. Must equal the pool's tenancy.")
    ]


class ComputePoolSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.tenancy == 'private' || !self.allowedSensitivity.exists(s, s == 'confidential' || s == 'restricted')",
                    "a public pool cannot allow confidential or restricted data: such data never leaves private pools",
                    ".allowedSensitivity",
                ),
                cel("!has(self.remoteCluster) || self.remoteCluster.tenancy == self.tenancy", REMOTE_TENANCY_MESSAGE,
                    ".remoteCluster.tenancy"),
                cel(f"has(self.remoteCluster) || !has(self.nodeSelector) || !('{LIQO_CLUSTER_LABEL}' in self.nodeSelector "
                    f"|| ('{LIQO_TYPE_LABEL}' in self.nodeSelector && self.nodeSelector['{LIQO_TYPE_LABEL}'] == "
                    f"'{LIQO_VIRTUAL_NODE}'))", REMOTE_UNDECLARED_MESSAGE, ".nodeSelector"),
                cel(f"!has(self.remoteCluster) || (has(self.nodeSelector) && '{LIQO_CLUSTER_LABEL}' in self.nodeSelector "
                    f"&& self.nodeSelector['{LIQO_CLUSTER_LABEL}'] == self.remoteCluster.clusterId)",
                    REMOTE_SELECTOR_MESSAGE, ".nodeSelector"),
            ]
        }
    )

    tenancy: Tenancy
    provider: Annotated[str, Field(pattern=DNS_LABEL, max_length=63, description="Who runs the nodes: onprem, aws, gcp, azure...")]
    region: Annotated[str, Field(max_length=63)] = ""
    node_selector: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
        Field(
            max_length=64,
            description="Labels that select this pool's nodes.",
            json_schema_extra={
                "x-kubernetes-validations": [
                    cel(f"self.all(k, size(k) <= {MAX_LABEL_KEY} && k.matches(r'{LABEL_KEY}'))", LABEL_KEY_MESSAGE)
                ]
            },
        ),
    ] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    pricing: Pricing
    max_gpus: Annotated[int, Field(ge=0, le=100000, description="Quota: GPUs hybridrec may use in this pool.")]
    allowed_sensitivity: Annotated[
        list[Sensitivity], Field(min_length=1, max_length=4, description="Data classes allowed to run here.")
    ]
    startup_seconds: Annotated[int, Field(ge=0, le=3600, description="Typical time to a ready pod, node provisioning included.")] = 60
    remote_cluster: Annotated[
        RemoteCluster | None,
        Field(description="Set when the nodeSelector picks a Liqo virtual node: the remote cluster behind it. Pods "
                          "then tolerate the virtual node's taint."),
    ] = None

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        # Mirrors the CEL rule on the map (OpenAPI cannot constrain map keys).
        for key in value:
            prefix = key.rsplit("/", 1)[0] if "/" in key else ""
            if len(key) > MAX_LABEL_KEY or len(prefix) > 253 or not re.match(LABEL_KEY, key):
                raise ValueError(f"{LABEL_KEY_MESSAGE}; got {key!r}")
        return value

    @field_validator("allowed_sensitivity")
    @classmethod
    def _unique(cls, value: list[Sensitivity]) -> list[Sensitivity]:
        if len(set(value)) != len(value):
            raise ValueError("allowedSensitivity lists a data class twice")
        return value

    @model_validator(mode="after")
    def _public_pools_refuse_sensitive_data(self) -> ComputePoolSpec:
        if self.tenancy == Tenancy.PUBLIC and SENSITIVE.intersection(self.allowed_sensitivity):
            raise ValueError("a public pool cannot allow confidential or restricted data: such data never leaves private pools")
        return self

    @model_validator(mode="after")
    def _remote_cluster_declared(self) -> ComputePoolSpec:
        # Mirrors the three remoteCluster CEL rules above.
        selects_virtual = LIQO_CLUSTER_LABEL in self.node_selector or \
            self.node_selector.get(LIQO_TYPE_LABEL) == LIQO_VIRTUAL_NODE
        remote = self.remote_cluster
        if remote is None:
            if selects_virtual:
                raise ValueError(REMOTE_UNDECLARED_MESSAGE)
            return self
        if remote.tenancy != self.tenancy:
            raise ValueError(REMOTE_TENANCY_MESSAGE)
        if self.node_selector.get(LIQO_CLUSTER_LABEL) != remote.cluster_id:
            raise ValueError(REMOTE_SELECTOR_MESSAGE)
        return self


class PoolPriceStatus(ApiModel):
    """The price per GPU-hour the operator plans with, and where it comes from (pools with pricing.source opencost)."""

    model_config = ConfigDict(extra="ignore")

    price_per_gpu_hour: float
    currency: str = "USD"
    source: PriceSource
    detail: Annotated[str, Field(max_length=4096, description="Which series and nodes, or why the fallback.")] = ""
    nodes: Annotated[int, Field(description="Nodes whose OpenCost price went into the average.")] = 0
    spot_nodes: Annotated[int | None, Field(description="Of those, nodes OpenCost reports as spot.")] = None
    since: Annotated[str | None, Field(description="When the operator started planning with this price.")] = None


class ComputePoolStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    price: PoolPriceStatus | None = None
    nodes: int = 0
    ready_nodes: int = 0
    allocatable_gpus: int = 0
    used_gpus: Annotated[int, Field(description="GPUs requested by hybridrec pods in this pool.")] = 0
    free_gpus: int = 0
    conditions: list[Condition] = Field(default_factory=list)


class ComputePool(ApiObject):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": name_rules(POOL_NAME_MESSAGE, DNS_LABEL, MAX_POOL_NAME, "ComputePool")}
    )

    api_version: Literal["hybridrec.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["ComputePool"] = "ComputePool"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ComputePoolSpec
    status: ComputePoolStatus | None = None

    @model_validator(mode="after")
    def _name_fits(self) -> ComputePool:
        # Mirrors the root CEL rules above. A nameless object (a spec checked on its own) has nothing to check.
        if self.name:
            check_name(self.name, POOL_NAME_MESSAGE, DNS_LABEL, MAX_POOL_NAME, "ComputePool")
        return self




def parse_pool(obj: dict[str, Any]) -> ComputePool:
    """A ComputePool from its API object (status and unknown metadata tolerated)."""
    return ComputePool.from_api(obj)
