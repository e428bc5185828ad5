"""The bad-CR corpus: every file is refused by the pydantic models (the integration tests apply the same files to a
real API server and check its message contains the ``# expect:`` line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from hybridrec_operator.api import crds
from hybridrec_operator.api.models import ComputePool, RecModelDeployment

CORPUS = Path(__file__).parent / "bad_crs"
FILES = sorted(CORPUS.glob("*.yaml"))
MODELS = {"ComputePool": ComputePool, "RecModelDeployment": RecModelDeployment}
# Messages the API server writes itself (OpenAPI validation, strict field decoding); the others come from our CEL.
SERVER_PHRASES = ("should be greater than or equal to", "should be less than or equal to", "Unsupported value", "should match",
                  "unknown field")


def expectation(path: Path) -> str:
    lines = [line.split("# expect:", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith("# expect:")]
    assert len(lines) == 1, f"{path.name} needs exactly one '# expect: <message substring>' line"
    return lines[0]


def load(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, path.name
    return docs[0]


def cel_messages() -> list[str]:
    messages: list[str] = []
    for crd in crds.build_crds():
        crds.walk(
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            lambda _, node: messages.extend(r["message"] for r in node.get("x-kubernetes-validations", [])),
        )
    return messages


def test_corpus_covers_every_case() -> None:
    assert {p.stem for p in FILES} == {
        "negative-gpus", "min-above-max", "unknown-sensitivity", "malformed-uri", "public-burst-confidential",
        "preferred-and-forbidden", "public-pool-restricted", "event-ends-before-start", "name-too-long",
        "replicas-above-max", "unknown-field",
        # issue 9: names every child can take, pools validated as Kubernetes would, bounded numbers, quantities.
        "name-with-dot", "name-starts-with-digit", "pool-name-with-dot", "pool-gpu-resource-cpu",
        "pool-gpu-resource-kubernetes-io", "pool-toleration-bad-key", "pool-toleration-exists-with-value",
        "pool-toleration-empty-key-equal", "pool-node-selector-bad-key", "pool-node-selector-bad-value", "negative-cpu",
        "memory-not-a-quantity", "budget-overflow", "allowed-client-without-selector",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_pydantic_refuses(path: Path) -> None:
    doc = load(path)
    model = MODELS[doc["kind"]]
    with pytest.raises(ValidationError) as refused:
        model.model_validate(doc)
    expected = expectation(path)
    if not expected.startswith(SERVER_PHRASES):
        # A CEL message: the model's mirror must say the same thing, and the CRD must carry the rule.
        assert expected in str(refused.value)
        assert any(expected in message for message in cel_messages()), f"no CEL rule says {expected!r}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_file_is_one_mistake_away_from_valid(path: Path) -> None:
    """Guards the corpus itself: the named mistake is the only one, so the server message is the expected one."""
    doc = load(path)
    fixed = FIXES[path.stem](doc)
    MODELS[fixed["kind"]].model_validate(fixed)


def _set(doc: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node = doc
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()
FIXES = {
    "negative-gpus": lambda d: _set(d, "spec.resources.gpus", 1),
    "min-above-max": lambda d: _set(d, "spec.scaling.minReplicas", 1),
    "unknown-sensitivity": lambda d: _set(d, "spec.dataSensitivity", "internal"),
    "malformed-uri": lambda d: _set(d, "spec.model.uri", "s3://hybridrec-models/ok/"),
    "public-burst-confidential": lambda d: _set(d, "spec.placement.allowPublicBurst", False),
    "preferred-and-forbidden": lambda d: _set(d, "spec.placement.forbiddenPools", []),
    "public-pool-restricted": lambda d: _set(d, "spec.allowedSensitivity", ["public", "internal"]),
    "event-ends-before-start": lambda d: _set(d, "spec.scaling.schedule", [{**d["spec"]["scaling"]["schedule"][0], "end": "2030-11-29T12:00:00Z"}]),
    "name-too-long": lambda d: _set(d, "metadata.name", "a-recommendation-model-name-short"),
    "replicas-above-max": lambda d: _set(d, "spec.replicas", 10),
    "unknown-field": lambda d: _set(d, "spec.slo.p59LatencyMs", _DELETE),
    "name-with-dot": lambda d: _set(d, "metadata.name", "recs-v2"),
    "name-starts-with-digit": lambda d: _set(d, "metadata.name", "recs2"),
    "pool-name-with-dot": lambda d: _set(d, "metadata.name", "onprem-a100"),
    "pool-gpu-resource-cpu": lambda d: _set(d, "spec.gpu.resourceName", "nvidia.com/gpu"),
    "pool-gpu-resource-kubernetes-io": lambda d: _set(d, "spec.gpu.resourceName", "amd.com/gpu"),
    "pool-toleration-bad-key": lambda d: _set(d, "spec.tolerations", [{**d["spec"]["tolerations"][0], "key": "nvidia.com/gpu"}]),
    "pool-toleration-exists-with-value": lambda d: _set(d, "spec.tolerations", [{**d["spec"]["tolerations"][0], "value": ""}]),
    "pool-toleration-empty-key-equal": lambda d: _set(d, "spec.tolerations", [{"operator": "Exists"}]),
    "pool-node-selector-bad-key": lambda d: _set(d, "spec.nodeSelector", {"example.com/gpu-pool": "a100"}),
    "pool-node-selector-bad-value": lambda d: _set(d, "spec.nodeSelector", {"hybridrec.io/pool": "a100"}),
    "negative-cpu": lambda d: _set(d, "spec.resources.cpu", "1"),
    "memory-not-a-quantity": lambda d: _set(d, "spec.resources.memory", "1.5Gi"),
    "budget-overflow": lambda d: _set(d, "spec.budget.maxPerHour", 1e6),
    "allowed-client-without-selector": lambda d: _set(d, "spec.serving.allowedClients", [{"podSelector": {}}]),
}
