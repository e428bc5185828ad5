"""RecModelDeployment bodies for the end-to-end tests: the small moto-S3 artifact, tiny resources."""

from __future__ import annotations

from typing import Any

from support.stack import MotoS3

from hybridrec_operator.api.models import API_VERSION

# The worked example of issue 4 (training 480 + deployment 10 + maintenance 100 USD; benefit 150 USD; ROI 0.254):
# gives ROI and cost-per-1k series something to show.
WORKED_EXAMPLE_ECONOMICS: dict[str, Any] = {
    "currency": "USD",
    "training": {"gpus": 32, "hours": 3, "pricePerGpuHour": 5},
    "deployment": {"gpus": 1, "tps": 100, "unitCost": 0.1},
    "maintenance": {"people": 2, "hours": 100, "ratePerHour": 0.5},
    "businessValue": {"requests": 1e8, "clickThroughRate": 0.005, "conversionRate": 0.003, "valuePerConversion": 0.1},
}


def rmd_manifest(name: str, namespace: str, s3: MotoS3, sensitivity: str, *, rps_per_replica: float, max_replicas: int,
                 stabilisation_s: int, gpus: int = 1, max_batch_size: int = 16, **spec: Any) -> dict[str, Any]:
    """A RecModelDeployment serving the small test artifact from moto S3; ``spec`` adds or overrides top-level fields."""
    return {
        "apiVersion": API_VERSION,
        "kind": "RecModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"uri": s3.uri, "architecture": "two-tower", "sha256": s3.sha256, "version": "small"},
            "dataSensitivity": sensitivity,
            "resources": {"gpus": gpus, "cpu": "100m", "memory": "256Mi"},
            "serving": {"maxBatchSize": max_batch_size, "maxBatchDelayMs": 2},
            "slo": {"p95LatencyMs": 250},
            "scaling": {"minReplicas": 1, "maxReplicas": max_replicas, "targetRpsPerReplica": rps_per_replica,
                        "scaleDownStabilizationSeconds": stabilisation_s},
            **spec,
        },
    }
