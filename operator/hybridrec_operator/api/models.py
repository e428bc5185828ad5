"""The hybridrec API (group ``hybridrec.io``, version ``v1alpha1``): the single source of truth.

Pydantic v2 models of both custom resources. ``crds.py`` generates the CustomResourceDefinition YAML under
``manifests/crds/`` from these models, including the CEL rules declared here, so the API server refuses what the
models refuse. Field names are camelCase on the wire (Kubernetes API conventions) and snake_case in Python.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from hybridrec_operator.api.training import TrainingPolicy, check_training_sensitivity, training_sensitivity_rule

# The API's import surface: the shared pieces and ComputePool are re-exported so callers import every API name
# from here, whichever module defines it.
from hybridrec_operator.api.fields import (
    GROUP as GROUP,
    VERSION as VERSION,
    API_VERSION as API_VERSION,
    MAX_MODEL_NAME as MAX_MODEL_NAME,
    MAX_POOL_NAME as MAX_POOL_NAME,
    DNS_LABEL as DNS_LABEL,
    DNS_1035_LABEL as DNS_1035_LABEL,
    CURRENCY as CURRENCY,
    QUANTITY as QUANTITY,
    LABEL_KEY as LABEL_KEY,
    LABEL_VALUE as LABEL_VALUE,
    MAX_LABEL_KEY as MAX_LABEL_KEY,
    EXTENDED_RESOURCE as EXTENDED_RESOURCE,
    MODEL_URI as MODEL_URI,
    cel as cel,
    MODEL_NAME_MESSAGE as MODEL_NAME_MESSAGE,
    POOL_NAME_MESSAGE as POOL_NAME_MESSAGE,
    LABEL_KEY_MESSAGE as LABEL_KEY_MESSAGE,
    RESOURCE_NAME_MESSAGE as RESOURCE_NAME_MESSAGE,
    QUANTITY_MESSAGE as QUANTITY_MESSAGE,
    name_rules as name_rules,
    check_name as check_name,
    positive_quantity as positive_quantity,
    Quantity as Quantity,
    Sensitivity as Sensitivity,
    SENSITIVE as SENSITIVE,
    Tenancy as Tenancy,
    CapacityType as CapacityType,
    Architecture as Architecture,
    ApiModel as ApiModel,
    ApiObject as ApiObject,
    Condition as Condition,
)
from hybridrec_operator.api.pool import (
    Toleration as Toleration,
    GpuSpec as GpuSpec,
    PriceSource as PriceSource,
    Pricing as Pricing,
    LIQO_TYPE_LABEL as LIQO_TYPE_LABEL,
    LIQO_VIRTUAL_NODE as LIQO_VIRTUAL_NODE,
    LIQO_CLUSTER_LABEL as LIQO_CLUSTER_LABEL,
    LIQO_TAINT as LIQO_TAINT,
    REMOTE_UNDECLARED_MESSAGE as REMOTE_UNDECLARED_MESSAGE,
    REMOTE_TENANCY_MESSAGE as REMOTE_TENANCY_MESSAGE,
    REMOTE_SELECTOR_MESSAGE as REMOTE_SELECTOR_MESSAGE,
    RemoteCluster as RemoteCluster,
    ComputePoolSpec as ComputePoolSpec,
    PoolPriceStatus as PoolPriceStatus,
    ComputePoolStatus as ComputePoolStatus,
    ComputePool as ComputePool,
    parse_pool as parse_pool,
)

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


class RecModelDeployment(ApiObject):
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

    @model_validator(mode="after")
    def _name_fits(self) -> RecModelDeployment:
        # Mirrors the root CEL rules above. A nameless object (a spec checked on its own) has nothing to check.
        if self.name:
            check_name(self.name, MODEL_NAME_MESSAGE, DNS_1035_LABEL, MAX_MODEL_NAME, "RecModelDeployment")
        return self


def parse_rmd(obj: dict[str, Any]) -> RecModelDeployment:
    """A RecModelDeployment from its API object (status and unknown metadata tolerated)."""
    return RecModelDeployment.from_api(obj)
