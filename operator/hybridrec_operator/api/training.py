"""``spec.training`` of a RecModelDeployment: retrain on a schedule, gate on an offline evaluation, promote.

This module is the policy part of the API and imports nothing from ``api/models.py``: ``models.py`` extends
``TrainingPolicy`` with the fields that need its own types (the training input's data class, the per-run resources)
and hangs the result on ``RecModelDeploymentSpec.training``. One direction of import keeps the API free of cycles.
The run objects (``RecModelTrainingRun``) are in ``api/training_run.py``.

Sensitivity of the training input (``spec.training.dataSensitivity``): it defaults to the model's
``spec.dataSensitivity`` and may be stricter, never less strict (a CEL rule on the model spec refuses it). The
interactions a model is trained on are at least the data it serves on (the same users, the same items), so a
confidential model's input cannot be declared public to reach a cheap spot pool. A stricter input is allowed: the
raw log may be restricted while the owner classes the model derived from it as confidential; the run then trains
only where restricted data may run, and the artifact serves under the model's class. The operator places each run by
the stricter of the two classes whatever the spec says (``core/training.effective_sensitivity``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

# Five fields (minute hour day-of-month month day-of-week), each of digits, '*', '/', ',', '-' or names (MON, JAN).
# The schema tells the shape; croniter (the Python mirror) also tells the ranges ("61 * * * *").
CRON = r"^\s*([0-9A-Za-z*/,?-]+\s+){4}[0-9A-Za-z*/,?-]+\s*$"
CRON_MESSAGE = "schedule must be a cron expression of five fields (minute hour day-of-month month day-of-week), e.g. '0 3 * * *'"
# Interactions and new versions live in S3: a bucket name, then an optional key prefix.
S3_URI = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$"
S3_MESSAGE = "must be an s3://bucket/key URI"


class _Wire(BaseModel):
    """camelCase on the wire and unknown fields refused, as every hybridrec API object (``api/models.ApiModel``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", allow_inf_nan=False)


class EvaluationGate(_Wire):
    """When a trained version may replace the serving one. Every bound is checked on the held-out test split."""

    min_hit_rate_at10: Annotated[
        float, Field(ge=0, le=1, alias="minHitRateAt10", description="HR@10 the new version must reach at least.")
    ] = 0.0
    min_improvement: Annotated[
        float,
        Field(ge=-1, le=1, description="HR@10 the new version must add over the serving version's (absolute; 0.01 = one "
              "point). Negative tolerates a small loss, e.g. to refresh a model on new items."),
    ] = 0.0
    beat_popularity: Annotated[
        bool, Field(description="The new version must also beat the popularity baseline's HR@10 on the same split.")
    ] = True


class TrainingPolicy(_Wire):
    """What to retrain on, when, and what happens to a better version. ``models.Training`` adds dataSensitivity and
    resources."""

    schedule: Annotated[
        str,
        Field(
            min_length=1,
            max_length=128,
            description="Cron expression (UTC) of the runs. Two runs of one model never overlap: a run due while one "
            "is active is skipped (concurrencyPolicy Forbid).",
            json_schema_extra={"x-kubernetes-validations": [{"rule": f"self.matches(r'{CRON}')", "message": CRON_MESSAGE}]},
        ),
    ]
    data_uri: Annotated[
        str,
        Field(pattern=S3_URI, max_length=1024, description="Interactions to train on: s3://bucket/key of a CSV file "
              "user_id,item_id,rating,timestamp (a header line optional; MovieLens u.data tab-separated also read)."),
    ]
    output_uri: Annotated[
        str,
        Field(pattern=S3_URI, max_length=1024, description="Prefix under which each run writes its version "
              "(<outputUri>/<run>/) and its checkpoints (<outputUri>/<run>/checkpoints/). Never the serving version's."),
    ]
    epochs: Annotated[int, Field(ge=1, le=1000, description="Maximum epochs (early stopping on validation HR@10).")] = 10
    gate: EvaluationGate = Field(default_factory=EvaluationGate)
    promotion: Annotated[
        Literal["auto", "manual"],
        Field(description="manual: a version that passes the gate waits in phase AwaitingPromotion until the model's "
              "spec.model names it (the run's message gives the kubectl patch). auto: the operator writes it into the "
              "model's status.promotedModel, served over spec.model while spec.model is unchanged; rolled out "
              "make-before-break and rolled back if not rolled out max(bakeSeconds, 120 s) after the promotion, or if "
              "its error ratio rises within bakeSeconds."),
    ] = "manual"
    bake_seconds: Annotated[
        int, Field(ge=0, le=86400, description="After a promotion, how long the model must stay Ready with the new "
                   "version rolled out before the run is Promoted; within it the operator compares the new version's "
                   "error ratio (5xx and 429 of /v1/recommend, from Prometheus) with the previous version's.")
    ] = 300
    max_error_ratio: Annotated[
        float | None,
        Field(ge=0, le=1, description="Roll back when the new version's error ratio within the bake window exceeds this, "
              "whatever the previous version's was. Unset: only the comparison with the previous version."),
    ] = None
    max_error_ratio_increase: Annotated[
        float,
        Field(ge=0, le=1, description="Roll back when the new version's error ratio within the bake window exceeds the "
              "previous version's (before the promotion) by more than this (absolute; 0.02 = two points)."),
    ] = 0.02
    backoff_limit: Annotated[
        int, Field(ge=0, le=20, description="Retries of a failed training pod (a spot reclaim is not counted: the pod "
                   "resumes from its last checkpoint).")
    ] = 3
    active_deadline_seconds: Annotated[int, Field(ge=60, le=7 * 86400, description="Longest a run may take.")] = 6 * 3600
    history_limit: Annotated[int, Field(ge=1, le=100, description="Finished runs kept per model.")] = 5
    suspend: Annotated[bool, Field(description="No new scheduled runs while true (active runs finish).")] = False

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        # Mirrors the CEL shape and adds what CEL cannot tell: every field in range.
        if not re.match(CRON, value) or not croniter.is_valid(value):
            raise ValueError(f"{CRON_MESSAGE}; got {value!r}")
        return value


# Data classes from least to most strict, as ``models.Sensitivity`` orders them (a unit test keeps both equal).
SENSITIVITY_ORDER = ("public", "internal", "confidential", "restricted")


def training_sensitivity_rule() -> dict[str, Any]:
    """The CEL rule on ``RecModelDeploymentSpec``: the training input is never less strict than the model's data."""
    ranks = ", ".join(f"'{s}': {i}" for i, s in enumerate(SENSITIVITY_ORDER))
    return {
        "rule": "!has(self.training) || !has(self.training.dataSensitivity) || "
                f"{{{ranks}}}[self.training.dataSensitivity] >= {{{ranks}}}[self.dataSensitivity]",
        "message": TRAINING_SENSITIVITY_MESSAGE,
        "fieldPath": ".training.dataSensitivity",
    }


TRAINING_SENSITIVITY_MESSAGE = (
    "training.dataSensitivity cannot be less strict than the model's dataSensitivity: a model is trained on at least "
    "the data it serves"
)


def check_training_sensitivity(model: str, training: str | None) -> None:
    """Mirror of ``training_sensitivity_rule``: raises ``ValueError`` with the same message."""
    if training is not None and SENSITIVITY_ORDER.index(str(training)) < SENSITIVITY_ORDER.index(str(model)):
        raise ValueError(TRAINING_SENSITIVITY_MESSAGE)
