"""The hybridrec API (group ``hybridrec.io``, version ``v1alpha1``): the single source of truth.

Pydantic v2 models of both custom resources. ``crds.py`` generates the CustomResourceDefinition YAML under
``manifests/crds/`` from these models, including the CEL rules declared here, so the API server refuses what the
models refuse. Field names are camelCase on the wire (Kubernetes API conventions) and snake_case in Python.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from hybridrec_operator.api.training import TrainingPolicy, check_training_sensitivity, training_sensitivity_rule

GROUP = "hybridrec.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Children are named "<model>-<pool>"; with these limits the name fits a Deployment's 63-character DNS label.
MAX_MODEL_NAME = 40
MAX_POOL_NAME = 22

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A Service name (what a RecModelDeployment name becomes) must be a DNS-1035 label: it starts with a letter.
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
CURRENCY = r"^[A-Z]{3}$"
# Kubernetes' quantity grammar without a sign (a request is never negative): digits with an optional fraction, then a
# binary suffix (Ki..Ei), a decimal suffix (n u m k M G T P E) or a decimal exponent. "1.2.3Gi" and "-1" do not match.
QUANTITY = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]{1,3})?$"
# Qualified names as Kubernetes validates label keys: optional DNS-subdomain prefix and '/', then a name of at most
# 63 characters. Prefix length (<= 253) is checked by the length bound on the whole key.
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_QUALIFIED_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = rf"^({_DNS_SUBDOMAIN}/)?{_QUALIFIED_NAME}$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
MAX_LABEL_KEY = 253 + 1 + 63
# Extended resources (what counts GPUs) are domain-prefixed qualified names outside the kubernetes.io namespace
# (Kubernetes' IsExtendedResourceName): nvidia.com/gpu, amd.com/gpu... never cpu, memory, pods, hugepages-*.
EXTENDED_RESOURCE = rf"^{_DNS_SUBDOMAIN}/{_QUALIFIED_NAME}$"
MODEL_URI = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?|file:///[^\s]+)$"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry; ``message`` is what ``kubectl apply`` shows a person."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


# ------------------------------------------------------------------------------------- names and syntax
# Each rule is written once as (CEL, message) and mirrored in Python, so the API server and the models agree.

MODEL_NAME_MESSAGE = (
    "a RecModelDeployment name must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and "
    "ending with a letter or digit (it becomes the name of the model's Service, Deployments, PDB and NetworkPolicy)"
)
POOL_NAME_MESSAGE = (
    "a ComputePool name must be lowercase letters, digits and '-', starting and ending with a letter or digit "
    "(it becomes part of the Deployment name <model>-<pool> and of the label hybridrec.io/pool)"
)
LABEL_KEY_MESSAGE = (
    "nodeSelector keys must be valid label keys: an optional DNS subdomain prefix and '/', then at most 63 characters "
    "of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)
RESOURCE_NAME_MESSAGE = (
    "gpu.resourceName must be an extended resource name such as nvidia.com/gpu: a domain prefix, '/', a name; "
    "not cpu, memory, ephemeral-storage, pods, hugepages-* or anything in the kubernetes.io namespace"
)
QUANTITY_MESSAGE = "must be a positive Kubernetes quantity such as 500m, 2, 8Gi or 1.5G"


def name_rules(message: str, pattern: str, limit: int, what: str) -> list[dict[str, str]]:
    """Root CEL rules on ``metadata.name``: syntax and length, each with a message a person understands."""
    return [
        cel(f"self.metadata.name.matches(r'{pattern}')", message),
        cel(f"size(self.metadata.name) <= {limit}", f"a {what} name has at most {limit} characters (child objects are "
            f"named <model>-<pool> and must fit 63 characters)"),
    ]


def check_name(name: str, message: str, pattern: str, limit: int, what: str) -> None:
    """Mirror of ``name_rules``: raises ``ValueError`` with the same messages."""
    if not re.match(pattern, name):
        raise ValueError(f"{message}; got {name!r}")
    if len(name) > limit:
        raise ValueError(f"a {what} name has at most {limit} characters (child objects are named <model>-<pool> and "
                         f"must fit 63 characters)")


def positive_quantity(value: Any) -> Any:
    """``value`` if it is a Kubernetes quantity greater than zero in the strict grammar (mirror of the CEL rule)."""
    if not isinstance(value, str):
        return value  # the str type check reports it
    try:
        ok = bool(re.match(QUANTITY, value)) and parse_quantity(value) > 0
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{QUANTITY_MESSAGE}; got {value!r}")
    return value


# No OpenAPI pattern: the CEL rule carries the grammar, so the API server answers with the readable message only.
Quantity = Annotated[
    str,
    BeforeValidator(positive_quantity),
    Field(
        min_length=1,
        max_length=32,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(f"self.matches(r'{QUANTITY}') && isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))",
                    QUANTITY_MESSAGE)
            ]
        },
    ),
]


class Sensitivity(StrEnum):
    """Data classes, from least to most sensitive."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


SENSITIVE = frozenset({Sensitivity.CONFIDENTIAL, Sensitivity.RESTRICTED})


class Tenancy(StrEnum):
    PRIVATE = "private"
    PUBLIC = "public"


class CapacityType(StrEnum):
    RESERVED = "reserved"
    ON_DEMAND = "on-demand"
    SPOT = "spot"


class Architecture(StrEnum):
    MATRIX_FACTORIZATION = "matrix-factorization"
    TWO_TOWER = "two-tower"
    SASREC = "sasrec"  # sequential transformer over the user's recent items (hybridrec_server.models.SASRec)


class ApiModel(BaseModel):
    """Base: camelCase on the wire, unknown fields refused (a typo in a CR is an error, not a silent default)."""

    # allow_inf_nan=False: JSON cannot carry them and no computation downstream is defined for them.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False, allow_inf_nan=False
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase, JSON-ready form used in manifests and status patches."""
        return self.model_dump(by_alias=True, mode="json", exclude_none=True)


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


class GpuSpec(ApiModel):
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
    ] = "nvidia.com/gpu"
    model: Annotated[str, Field(max_length=63, description="GPU model, e.g. NVIDIA-A100-SXM4-80GB.")] = ""
    memory_gib: Annotated[int, Field(ge=0, le=1024, description="Memory per GPU in GiB.")] = 0

    @field_validator("resource_name", mode="before")
    @classmethod
    def _extended(cls, value: Any) -> Any:
        # Mirrors the CEL rule: Kubernetes' IsExtendedResourceName.
        if isinstance(value, str) and (
            not re.match(EXTENDED_RESOURCE, value) or "kubernetes.io/" in value or value.startswith("requests.")
        ):
            raise ValueError(f"{RESOURCE_NAME_MESSAGE}; got {value!r}")
        return value


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


class Condition(ApiModel):
    """A status condition following Kubernetes API conventions."""

    model_config = ConfigDict(extra="ignore")

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


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


class ComputePool(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": name_rules(POOL_NAME_MESSAGE, DNS_LABEL, MAX_POOL_NAME, "ComputePool")}
    )

    api_version: Literal["hybridrec.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["ComputePool"] = "ComputePool"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ComputePoolSpec
    status: ComputePoolStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @model_validator(mode="after")
    def _name_fits(self) -> ComputePool:
        # Mirrors the root CEL rules above. A nameless object (a spec checked on its own) has nothing to check.
        if self.name:
            check_name(self.name, POOL_NAME_MESSAGE, DNS_LABEL, MAX_POOL_NAME, "ComputePool")
        return self


# ----------------------------------------------------------------------------------- RecModelDeployment


class ModelArtifact(ApiModel):
    uri: Annotated[str, Field(pattern=MODEL_URI, max_length=1024, description="Artifact prefix: s3://bucket/prefix/ or file:///path.")]
    architecture: Architecture
    sha256: Annotated[str | None, Field(pattern=r"^[a-f0-9]{64}$", description="sha256 of the artifact's manifest.json.")] = None
    version: Annotated[str, Field(max_length=63)] = ""


class Resources(ApiModel):
    gpus: Annotated[int, Field(ge=1, le=16, description="GPUs per replica.")] = 1
    cpu: Annotated[Quantity, Field(description="CPU request per replica.")] = "2"
    memory: Annotated[Quantity, Field(description="Memory request per replica.")] = "8Gi"


# ------------------------------------------------------------------------------------ network peers
# Who may call a confidential/restricted model: rendered into the model's NetworkPolicy (core/render.py).


class LabelSelectorRequirement(ApiModel):
    key: Annotated[str, Field(min_length=1, max_length=MAX_LABEL_KEY, pattern=LABEL_KEY)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Annotated[list[Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]], Field(max_length=64)] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(ApiModel):
    """A Kubernetes label selector (matchLabels AND matchExpressions)."""

    match_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
        Field(
            max_length=32,
            json_schema_extra={
                "x-kubernetes-validations": [
                    cel(f"self.all(k, size(k) <= {MAX_LABEL_KEY} && k.matches(r'{LABEL_KEY}'))",
                        "matchLabels keys must be valid label keys")
                ]
            },
        ),
    ] = Field(default_factory=dict)
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=16)] = Field(default_factory=list)

    @field_validator("match_labels")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if len(key) > MAX_LABEL_KEY or not re.match(LABEL_KEY, key):
                raise ValueError(f"matchLabels keys must be valid label keys; got {key!r}")
        return value


class NetworkPeer(ApiModel):
    """Clients allowed to call the model: pods matching ``podSelector`` in namespaces matching ``namespaceSelector``
    (NetworkPolicy peer semantics: without ``namespaceSelector``, the model's own namespace)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("has(self.namespaceSelector) || has(self.podSelector)",
                    "an allowed client needs a namespaceSelector, a podSelector or both")
            ]
        }
    )

    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> NetworkPeer:
        if self.namespace_selector is None and self.pod_selector is None:
            raise ValueError("an allowed client needs a namespaceSelector, a podSelector or both")
        return self


class Serving(ApiModel):
    image: Annotated[str, Field(min_length=1, max_length=512)] = "ghcr.io/hybridrec/server:0.1.0"
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    max_batch_size: Annotated[int, Field(ge=1, le=4096)] = 64
    max_batch_delay_ms: Annotated[int, Field(ge=0, le=1000)] = 5
    max_queue: Annotated[int, Field(ge=1, le=1_000_000)] = 1024
    allowed_clients: Annotated[
        list[NetworkPeer] | None,
        Field(
            max_length=32,
            description="Confidential/restricted models only accept traffic from these clients (and metrics scrapes "
            "from the monitoring namespace); unset: pods of the model's own namespace.",
        ),
    ] = None


class Slo(ApiModel):
    p95_latency_ms: Annotated[int, Field(ge=1, le=60000, description="p95 latency target in milliseconds.")] = 100


class ScheduledEvent(ApiModel):
    """A declared demand event (a flash sale): demand is expected at ``multiplier`` x the trend in [start, end)."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [cel("self.end > self.start", "a scheduled event must end after it starts", ".end")]}
    )

    name: Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
    start: datetime
    end: datetime
    multiplier: Annotated[float, Field(gt=0, le=100)]

    @model_validator(mode="after")
    def _ends_after_start(self) -> ScheduledEvent:
        if self.end <= self.start:
            raise ValueError("a scheduled event must end after it starts")
        return self


class CapacityHint(ApiModel):
    """RPS one replica of this model sustains within its SLO on pools whose spec.gpu.model is gpuModel (case-insensitive); measured capacity overrides it."""

    # On the model, not the ComputePool: speed-ups between GPUs differ per model (a small two-tower is host-bound on
    # any GPU, a large one is not), so one relative speed per pool would misprice one of them.

    gpu_model: Annotated[str, Field(min_length=1, max_length=63, description="GPU model as in ComputePool spec.gpu.model, e.g. Tesla-T4.")]
    rps_per_replica: Annotated[float, Field(gt=0, le=1_000_000, description="RPS one replica sustains within the SLO on this GPU.")]


class Scaling(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas", ".minReplicas")
            ]
        }
    )

    min_replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 10
    target_rps_per_replica: Annotated[float, Field(gt=0, le=1_000_000, description="Hint: RPS one replica sustains within the SLO.")] = 50.0
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=86400)] = 300
    schedule: Annotated[list[ScheduledEvent], Field(max_length=64)] = Field(default_factory=list)
    capacity_hints: Annotated[
        list[CapacityHint],
        Field(
            max_length=32,
            description="Per-GPU refinement of targetRpsPerReplica: pools whose spec.gpu.model matches gpuModel are priced "
            "with rpsPerReplica until the operator has measured the capacity there; measurements override hints. Set "
            "per model, not per ComputePool, because the speed-up of one GPU over another differs from model to model.",
        ),
    ] = Field(default_factory=list)

    @model_validator(mode="after")
    def _min_le_max(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


# Upper bounds of every amount and count in the API. They are far above any real deployment and small enough that
# products of them (replicas x GPUs x price, people x hours x rate...) stay finite floats: no input the schema
# admits makes placement or costing overflow.
MAX_PER_HOUR = 1e9
MAX_PER_MONTH = 1e12
MAX_AMOUNT = 1e9  # a unit price, rate or value
MAX_COUNT = 1e12  # GPUs, hours, people, requests, TPS


class Budget(ApiModel):
    max_per_hour: Annotated[float | None, Field(ge=0, le=MAX_PER_HOUR)] = None
    max_per_month: Annotated[float | None, Field(ge=0, le=MAX_PER_MONTH)] = None
    currency: Annotated[str, Field(pattern=CURRENCY)] = "USD"


class Placement(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!self.preferredPools.exists(p, p in self.forbiddenPools)",
                    "a pool cannot be both preferred and forbidden",
                    ".preferredPools",
                )
            ]
        }
    )

    preferred_pools: Annotated[list[Annotated[str, Field(pattern=DNS_LABEL, max_length=MAX_POOL_NAME)]], Field(max_length=32)] = Field(
        default_factory=list
    )
    forbidden_pools: Annotated[list[Annotated[str, Field(pattern=DNS_LABEL, max_length=MAX_POOL_NAME)]], Field(max_length=32)] = Field(
        default_factory=list
    )
    allow_public_burst: Annotated[bool, Field(description="Let internal data burst to public pools that allow it.")] = False

    @model_validator(mode="after")
    def _not_both(self) -> Placement:
        if set(self.preferred_pools) & set(self.forbidden_pools):
            raise ValueError("a pool cannot be both preferred and forbidden")
        return self


class TrainingCost(ApiModel):
    gpus: Annotated[float, Field(ge=0, le=MAX_COUNT)] = 0
    hours: Annotated[float, Field(ge=0, le=MAX_COUNT)] = 0
    price_per_gpu_hour: Annotated[float, Field(ge=0, le=MAX_AMOUNT)] = 0


class DeploymentCost(ApiModel):
    """One-off cost of deploying: GPUs x load-test throughput (TPS) x unit cost per GPU-TPS."""

    gpus: Annotated[float, Field(ge=0, le=MAX_COUNT)] = 0
    tps: Annotated[float, Field(ge=0, le=MAX_COUNT)] = 0
    unit_cost: Annotated[float, Field(ge=0, le=MAX_AMOUNT)] = 0


class MaintenanceCost(ApiModel):
    """Upkeep: people (or units) x hours x rate per hour."""

    people: Annotated[float, Field(ge=0, le=MAX_COUNT)] = 0
    hours: Annotated[float, Field(ge=0, le=MAX_COUNT)] = 0
    rate_per_hour: Annotated[float, Field(ge=0, le=MAX_AMOUNT)] = 0


class BusinessValue(ApiModel):
    """Benefit = requests x click-through rate x conversion rate x value per conversion."""

    requests: Annotated[float, Field(ge=0, le=MAX_COUNT)] = 0
    click_through_rate: Annotated[float, Field(ge=0, le=1)] = 0
    conversion_rate: Annotated[float, Field(ge=0, le=1)] = 0
    value_per_conversion: Annotated[float, Field(ge=0, le=MAX_AMOUNT)] = 0


class Economics(ApiModel):
    currency: Annotated[str, Field(pattern=CURRENCY)] = "USD"
    training: TrainingCost = Field(default_factory=TrainingCost)
    deployment: DeploymentCost = Field(default_factory=DeploymentCost)
    maintenance: MaintenanceCost = Field(default_factory=MaintenanceCost)
    business_value: BusinessValue = Field(default_factory=BusinessValue)


class Training(TrainingPolicy):
    """spec.training: retrain on a schedule, gate, promote (api/training.py; placement in core/training.py)."""

    data_sensitivity: Annotated[
        Sensitivity | None,
        Field(description="Data class of the training input; unset: the model's. Never less strict than the model's."),
    ] = None
    resources: Resources = Field(default_factory=Resources)


class RecModelDeploymentSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(self.dataSensitivity in ['confidential', 'restricted'] && self.placement.allowPublicBurst)",
                    "allowPublicBurst cannot be true for confidential or restricted data: such data never leaves private pools",
                    ".placement.allowPublicBurst",
                ),
                cel(
                    "!has(self.replicas) || self.replicas <= self.scaling.maxReplicas",
                    "replicas must not exceed scaling.maxReplicas",
                    ".replicas",
                ),
                training_sensitivity_rule(),
            ]
        }
    )

    model: ModelArtifact
    data_sensitivity: Sensitivity
    replicas: Annotated[
        int | None, Field(ge=0, le=1000, description="Pins the total replica count (kubectl scale, HPA, KEDA); unset: hybridrec decides.")
    ] = None
    resources: Resources = Field(default_factory=Resources)
    serving: Serving = Field(default_factory=Serving)
    slo: Slo = Field(default_factory=Slo)
    scaling: Scaling = Field(default_factory=Scaling)
    budget: Budget | None = None
    placement: Placement = Field(default_factory=Placement)
    economics: Economics | None = None
    training: Training | None = None

    @model_validator(mode="after")
    def _cross_field_rules(self) -> RecModelDeploymentSpec:
        if self.data_sensitivity in SENSITIVE and self.placement.allow_public_burst:
            raise ValueError("allowPublicBurst cannot be true for confidential or restricted data: such data never leaves private pools")
        if self.replicas is not None and self.replicas > self.scaling.max_replicas:
            raise ValueError("replicas must not exceed scaling.maxReplicas")
        if self.training is not None:
            check_training_sensitivity(self.data_sensitivity.value, self.training.data_sensitivity)
        return self


class PoolPlacement(ApiModel):
    model_config = ConfigDict(extra="ignore")

    pool: str
    tenancy: Tenancy
    desired: int
    ready: int = 0
    price_per_hour: float = 0.0
    currency: str = "USD"
    reason: str = ""
    # Set by the cost controller (absent without it): what one replica serves on this pool at the SLO, where that
    # figure comes from, the RPS the planned replicas serve, and the cost of 1,000 requests at full replica load.
    capacity_rps: float | None = Field(default=None, description="RPS the planned replicas on this pool serve within the SLO.")
    rps_per_replica: float | None = Field(default=None, description="RPS one replica sustains within the SLO on this pool.")
    capacity_source: Literal["measured", "hint", "default"] | None = Field(
        default=None, description="measured (learned from the pool's server metrics), hint (scaling.capacityHints) or default (targetRpsPerReplica).")
    cost_per_1k_requests: float | None = Field(default=None, alias="costPer1kRequests",
                                               description="Cost of 1,000 requests served by a fully loaded replica on this pool.")


class Decision(ApiModel):
    model_config = ConfigDict(extra="ignore")

    time: str
    trigger: str
    message: str


class PromotedModel(ApiModel):
    """A version a training run promoted automatically (spec.training.promotion auto): the servers run ``model``
    instead of spec.model for as long as spec.model is still ``replaces`` (a person's new spec.model wins)."""

    model_config = ConfigDict(extra="ignore")

    run: Annotated[str, Field(max_length=63, description="The RecModelTrainingRun that promoted it.")]
    model: ModelArtifact
    replaces: ModelArtifact


class TrainingSpend(ApiModel):
    """What the model's retraining runs cost, measured (GPU-hours each run's pods held x its pool's price), written by
    the retraining controller; pruned runs stay counted (``retired*``). Summed into the lifecycle ROI over the
    first version's ``spec.economics.training`` (``core/costing.model_lifecycle``)."""

    model_config = ConfigDict(extra="ignore")

    cost: Annotated[
        dict[str, float],
        Field(description="Money spent on the model's training runs, per ISO 4217 currency (no exchange rates)."),
    ] = Field(default_factory=dict)
    gpu_hours: Annotated[float, Field(ge=0, description="GPU-hours the runs' pods held.")] = 0.0
    runs: Annotated[int, Field(ge=0, description="Runs counted (pruned ones included).")] = 0
    retired_cost: Annotated[dict[str, float], Field(description="Part of cost from runs already pruned.")] = Field(default_factory=dict)
    retired_gpu_hours: Annotated[float, Field(ge=0)] = 0.0
    retired_runs: Annotated[int, Field(ge=0)] = 0
    retired_names: Annotated[
        list[Annotated[str, Field(max_length=63)]],
        Field(max_length=100, description="The most recently pruned runs already counted (a prune retried after a failed "
              "delete is not counted twice)."),
    ] = Field(default_factory=list)


class RecModelDeploymentStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    placements: list[PoolPlacement] = Field(default_factory=list)
    replicas: int = 0
    ready_replicas: int = 0
    private_replicas: int = 0
    public_replicas: int = 0
    selector: str = ""
    cost_per_hour: float = 0.0
    currency: str = "USD"
    last_decision: Decision | None = None
    promoted_model: Annotated[
        PromotedModel | None,
        Field(description="Written by the retraining controller (docs/training.md): the version served instead of spec.model."),
    ] = None
    training_spend: Annotated[
        TrainingSpend | None,
        Field(description="Written by the retraining controller: the measured cost of the model's training runs."),
    ] = None


class RecModelDeployment(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": name_rules(MODEL_NAME_MESSAGE, DNS_1035_LABEL, MAX_MODEL_NAME, "RecModelDeployment")
        }
    )

    api_version: Literal["hybridrec.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["RecModelDeployment"] = "RecModelDeployment"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RecModelDeploymentSpec
    status: RecModelDeploymentStatus | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", "default"))

    @model_validator(mode="after")
    def _name_fits(self) -> RecModelDeployment:
        # Mirrors the root CEL rules above. A nameless object (a spec checked on its own) has nothing to check.
        if self.name:
            check_name(self.name, MODEL_NAME_MESSAGE, DNS_1035_LABEL, MAX_MODEL_NAME, "RecModelDeployment")
        return self


def parse_pool(obj: dict[str, Any]) -> ComputePool:
    """A ComputePool from its API object (status and unknown metadata tolerated)."""
    return ComputePool.model_validate({"metadata": obj.get("metadata", {}), "spec": obj.get("spec", {}), "status": obj.get("status")})


def parse_rmd(obj: dict[str, Any]) -> RecModelDeployment:
    """A RecModelDeployment from its API object (status and unknown metadata tolerated)."""
    return RecModelDeployment.model_validate(
        {"metadata": obj.get("metadata", {}), "spec": obj.get("spec", {}), "status": obj.get("status")}
    )
