"""``RecModelTrainingRun``: one retraining of one RecModelDeployment, its history, phase and conditions.

The operator creates one per due ``spec.training.schedule`` (owned by the model, so deleting the model deletes its
history); a person may create one to train now (``trigger: manual``). The spec is a snapshot taken at creation (what
was trained, on which data, against which serving version) and immutable, so the history stays true after the model
changes. The status is the operator's: phase, pool, the new version, its evaluation, its measured cost.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from hybridrec_operator.api.models import (
    API_VERSION,
    DNS_1035_LABEL,
    MAX_MODEL_NAME,
    ApiModel,
    ApiObject,
    Architecture,
    Condition,
    ModelArtifact,
    Sensitivity,
    Tenancy,
    cel,
)
from hybridrec_operator.api.training import S3_URI

# A run is named "<model>-<yyyymmddhhmm>" (13 more characters) and its Job after it: both fit a 63-character label.
MAX_RUN_NAME = 63


class RunPhase(StrEnum):
    """Where a run is. Terminal: Failed, Rejected, Promoted, RolledBack (and AwaitingPromotion until promoted)."""

    PENDING = "Pending"  # the Job exists, its pod is not running yet
    RUNNING = "Running"
    FAILED = "Failed"  # no admissible pool, the Job failed, or its result is unreadable: the condition says which
    REJECTED = "Rejected"  # trained and evaluated, but the gate refused it: both scores in the condition
    AWAITING_PROMOTION = "AwaitingPromotion"  # passed the gate, promotion: manual
    PROMOTING = "Promoting"  # the model serves the new version; within the bake window
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"


TERMINAL_PHASES = frozenset({RunPhase.FAILED, RunPhase.REJECTED, RunPhase.PROMOTED, RunPhase.ROLLED_BACK})


class RecModelTrainingRunSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [cel("self == oldSelf", "a training run's spec is immutable: create a new run")]}
    )

    model: Annotated[str, Field(pattern=DNS_1035_LABEL, max_length=MAX_MODEL_NAME, description="The RecModelDeployment (same namespace).")]
    trigger: Literal["schedule", "manual"] = "manual"
    data_uri: Annotated[str | None, Field(pattern=S3_URI, max_length=1024, description="Unset: the model's spec.training.dataUri.")] = None
    output_uri: Annotated[str | None, Field(pattern=S3_URI, max_length=1024, description="Unset: the model's spec.training.outputUri.")] = None
    data_sensitivity: Annotated[
        Sensitivity | None,
        Field(description="Class the run is placed by: never less strict than the model's (the operator takes the stricter)."),
    ] = None
    architecture: Architecture | None = None
    epochs: Annotated[int | None, Field(ge=1, le=1000)] = None
    baseline: Annotated[ModelArtifact | None, Field(description="The serving version the run is compared with, when it was created.")] = None


class Evaluation(ApiModel):
    """HR@10 / NDCG@10 on the held-out split, of the new version, the serving version and the popularity baseline."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    hit_rate_at10: Annotated[float, Field(alias="hitRateAt10")]
    ndcg_at10: Annotated[float, Field(alias="ndcgAt10")]
    serving_hit_rate_at10: Annotated[float | None, Field(alias="servingHitRateAt10")] = None
    serving_ndcg_at10: Annotated[float | None, Field(alias="servingNdcgAt10")] = None
    popularity_hit_rate_at10: Annotated[float, Field(alias="popularityHitRateAt10")] = 0.0
    popularity_ndcg_at10: Annotated[float, Field(alias="popularityNdcgAt10")] = 0.0


class BakeStatus(ApiModel):
    """The error-ratio check of the bake window, as last read from Prometheus."""

    model_config = ConfigDict(extra="ignore")

    new_error_ratio: Annotated[float | None, Field(description="5xx and 429 / requests of the new version since the promotion.")] = None
    previous_error_ratio: Annotated[float | None, Field(description="The same of the previous version before the promotion.")] = None
    message: str = ""
    observed_at: str | None = None


class RecModelTrainingRunStatus(ApiModel):
    model_config = ConfigDict(extra="ignore")

    phase: RunPhase = RunPhase.PENDING
    message: str = ""
    pool: str = ""
    tenancy: Tenancy | None = None
    job_name: str = ""
    start_time: str | None = None
    completion_time: str | None = None
    artifact: Annotated[ModelArtifact | None, Field(description="The version this run wrote (uri, manifest sha256, version).")] = None
    evaluation: Evaluation | None = None
    gpu_hours: Annotated[float, Field(ge=0, description="GPU-hours the run's pods held (measured).")] = 0.0
    cost: Annotated[float, Field(ge=0, description="gpuHours x the pool's price per GPU-hour.")] = 0.0
    currency: str = "USD"
    previous: Annotated[ModelArtifact | None, Field(description="What the model served when the run started: the version it was "
                                                         "compared with, and what a rollback restores.")] = None
    promoted_at: str | None = None
    bake: BakeStatus | None = None
    conditions: list[Condition] = Field(default_factory=list)


class RecModelTrainingRun(ApiObject):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(f"size(self.metadata.name) <= {MAX_RUN_NAME}", f"a RecModelTrainingRun name has at most {MAX_RUN_NAME} "
                    "characters (its Job is named after it)"),
            ]
        }
    )

    api_version: Literal["hybridrec.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["RecModelTrainingRun"] = "RecModelTrainingRun"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RecModelTrainingRunSpec
    status: RecModelTrainingRunStatus | None = None

    @model_validator(mode="after")
    def _name_fits(self) -> RecModelTrainingRun:
        if len(self.name) > MAX_RUN_NAME:
            raise ValueError(f"a RecModelTrainingRun name has at most {MAX_RUN_NAME} characters (its Job is named after it)")
        return self


def parse_run(obj: dict[str, Any]) -> RecModelTrainingRun:
    """A RecModelTrainingRun from its API object (status and unknown metadata tolerated)."""
    return RecModelTrainingRun.from_api(obj)
