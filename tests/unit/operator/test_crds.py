"""The CRDs under manifests/crds are generated from api.py, structural, and carry the API's rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridrec_operator.api import crds
from hybridrec_operator.api.models import MAX_MODEL_NAME, MAX_POOL_NAME, ComputePool, RecModelDeployment

REPO = Path(__file__).resolve().parents[3]
CRD_DIR = REPO / "manifests" / "crds"
REGENERATE = "regenerate with: ~/.cache/hybridrec/venv/bin/python -m hybridrec_operator.api.crds"

# Keywords a structural schema may use (apiextensions v1 JSONSchemaProps minus the non-structural ones).
ALLOWED_KEYS = {
    "type", "format", "description", "enum", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "items", "properties", "required",
    "additionalProperties", "nullable", "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type", "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource", "minProperties", "maxProperties", "uniqueItems", "multipleOf",
}


def by_kind() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in crds.build_crds()}


def schema_of(kind: str) -> dict[str, Any]:
    return by_kind()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def nodes(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    crds.walk(schema, lambda path, node: found.append((path, node)))
    return found


@pytest.mark.parametrize("crd", crds.build_crds(), ids=crds.crd_filename)
def test_committed_yaml_matches_the_models(crd: dict[str, Any]) -> None:
    path = CRD_DIR / crds.crd_filename(crd)
    assert path.exists(), f"{path} is missing; {REGENERATE}"
    assert path.read_text(encoding="utf-8") == crds.render_yaml(crd), f"{path} drifted from api.py; {REGENERATE}"
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == crd


def test_exactly_the_generated_files_are_committed() -> None:
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(crds.crd_filename(c) for c in crds.build_crds())


def test_write_crds_writes_both_files(tmp_path: Path) -> None:
    written = crds.write_crds(tmp_path / "out")
    assert sorted(p.name for p in written) == ["hybridrec.io_computepools.yaml", "hybridrec.io_recmodeldeployments.yaml",
                                                  "hybridrec.io_recmodeltrainingruns.yaml"]
    for path in written:
        assert path.read_text(encoding="utf-8").startswith("# Generated")


def test_main_writes_into_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert crds.main([str(tmp_path)]) == 0
    assert (tmp_path / "hybridrec.io_recmodeldeployments.yaml").exists()
    assert "hybridrec.io_computepools.yaml" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["ComputePool", "RecModelDeployment"])
def test_schema_is_structural(kind: str) -> None:
    for path, node in nodes(schema_of(kind)):
        assert set(node) <= ALLOWED_KEYS, f"{path}: non-structural keys {set(node) - ALLOWED_KEYS}"
        assert "type" in node, f"{path}: every node needs a type"
        assert not {"$ref", "anyOf", "oneOf", "allOf", "not", "title", "$defs", "const"} & set(node), path
        if "properties" in node:
            assert "additionalProperties" not in node, f"{path}: properties and additionalProperties exclude each other"
            assert node["type"] == "object"
        if node["type"] == "array":
            assert "items" in node, path
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            if bound in node:
                assert node[bound] is True and ("minimum" if bound == "exclusiveMinimum" else "maximum") in node, path
        for key in node.get("required", []):
            assert key in node["properties"], f"{path}: required {key} is not a property"


@pytest.mark.parametrize("kind", ["ComputePool", "RecModelDeployment"])
def test_preserve_unknown_fields_nowhere(kind: str) -> None:
    # metadata is implicit; status (conditions included) is typed, so nothing needs to keep unknown fields.
    assert [p for p, n in nodes(schema_of(kind)) if n.get("x-kubernetes-preserve-unknown-fields")] == []
    assert schema_of(kind)["properties"]["metadata"] == {"type": "object"}


def test_defaults_show_every_knob_and_validate_against_the_models() -> None:
    spec = schema_of("RecModelDeployment")["properties"]["spec"]["properties"]
    assert spec["scaling"]["default"] == {
        "minReplicas": 1, "maxReplicas": 10, "targetRpsPerReplica": 50.0, "scaleDownStabilizationSeconds": 300, "schedule": [],
        "capacityHints": [],
    }
    assert spec["serving"]["default"]["image"] == "ghcr.io/hybridrec/server:0.1.0"
    assert spec["placement"]["default"] == {"preferredPools": [], "forbiddenPools": [], "allowPublicBurst": False}
    assert "default" not in spec["replicas"] and "default" not in spec["budget"] and "default" not in spec["economics"]
    pool = schema_of("ComputePool")["properties"]["spec"]["properties"]
    assert pool["gpu"]["default"] == {"resourceName": "nvidia.com/gpu", "model": "", "memoryGib": 0}
    # Every default the API server would store must itself be accepted by the models.
    for kind in ("ComputePool", "RecModelDeployment"):
        for path, node in nodes(schema_of(kind)):
            if isinstance(node.get("default"), dict) and node["default"]:
                for key in node["default"]:
                    assert key in node["properties"], f"{path}: default key {key} is not a property"


def test_optional_fields_drop_null_and_are_not_nullable() -> None:
    spec = schema_of("RecModelDeployment")["properties"]["spec"]["properties"]
    assert spec["replicas"]["type"] == "integer" and "nullable" not in spec["replicas"]
    assert spec["model"]["properties"]["sha256"] == {
        "description": "sha256 of the artifact's manifest.json.", "type": "string", "pattern": "^[a-f0-9]{64}$",
    }
    assert spec["budget"]["type"] == "object"


def test_bounds_enums_patterns_and_maps() -> None:
    spec = schema_of("RecModelDeployment")["properties"]["spec"]["properties"]
    gpus = spec["resources"]["properties"]["gpus"]
    assert (gpus["minimum"], gpus["maximum"]) == (1, 16)
    rps = spec["scaling"]["properties"]["targetRpsPerReplica"]
    assert rps["minimum"] == 0 and rps["exclusiveMinimum"] is True
    assert spec["dataSensitivity"]["enum"] == ["public", "internal", "confidential", "restricted"]
    assert spec["dataSensitivity"]["maxLength"] == len("confidential")
    assert spec["placement"]["properties"]["preferredPools"]["maxItems"] == 32
    assert spec["placement"]["properties"]["preferredPools"]["items"]["maxLength"] == MAX_POOL_NAME
    assert spec["model"]["properties"]["uri"]["pattern"].startswith("^(s3://")
    event = spec["scaling"]["properties"]["schedule"]["items"]
    assert event["properties"]["start"] == {"type": "string", "format": "date-time"}
    pool = schema_of("ComputePool")["properties"]["spec"]["properties"]
    assert pool["nodeSelector"]["type"] == "object" and pool["nodeSelector"]["additionalProperties"]["type"] == "string"
    # Values are label values; keys (OpenAPI cannot constrain them) are checked by a CEL rule on the map.
    assert pool["nodeSelector"]["additionalProperties"]["maxLength"] == 63
    assert re.fullmatch(pool["nodeSelector"]["additionalProperties"]["pattern"].strip("^$"), "a.b_c-1")
    assert any("k.matches(" in r["rule"] for r in pool["nodeSelector"]["x-kubernetes-validations"])
    assert pool["nodeSelector"]["maxProperties"] == 64
    assert pool["allowedSensitivity"]["x-kubernetes-list-type"] == "set"


@pytest.mark.parametrize("kind", ["ComputePool", "RecModelDeployment"])
def test_every_number_in_the_spec_is_bounded(kind: str) -> None:
    """Finding 5/6 of issue 9 (budget.maxPerHour: 1e308 overflowed): every number a person writes has a maximum."""
    spec = schema_of(kind)["properties"]["spec"]
    unbounded = [path for path, node in nodes(spec) if node["type"] in ("number", "integer") and "maximum" not in node]
    assert unbounded == []


def test_quantities_use_the_strict_grammar_and_cel() -> None:
    resources = schema_of("RecModelDeployment")["properties"]["spec"]["properties"]["resources"]["properties"]
    for name in ("cpu", "memory"):
        node = resources[name]
        [rule] = node["x-kubernetes-validations"]
        pattern = re.compile(re.search(r"self.matches\(r'([^']*)'\)", rule["rule"]).group(1))
        for good in ("2", "500m", "8Gi", "1.5G", "0.25", "1e3", "128974848", ".5"):
            assert pattern.match(good), good
        for bad in ("-1", "1.2.3Gi", "1Gib", "Gi", "1 Gi", "", "1.2.3", "+-1"):
            assert not pattern.match(bad), bad
        assert "isQuantity(self)" in rule["rule"] and "quantity(self).isGreaterThan(quantity('0'))" in rule["rule"]


def test_status_is_typed_with_keyed_lists() -> None:
    status = schema_of("RecModelDeployment")["properties"]["status"]["properties"]
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert status["placements"]["x-kubernetes-list-map-keys"] == ["pool"]
    assert status["selector"]["type"] == "string"


def all_rules(schema: dict[str, Any]) -> list[dict[str, str]]:
    return [rule for _, node in nodes(schema) for rule in node.get("x-kubernetes-validations", [])]


def test_cel_rules_are_carried_from_the_models() -> None:
    rmd_rules = {r["rule"] for r in all_rules(schema_of("RecModelDeployment"))}
    assert f"size(self.metadata.name) <= {MAX_MODEL_NAME}" in rmd_rules
    assert "self.metadata.name.matches(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')" in rmd_rules  # a Service name: DNS-1035
    assert "self.minReplicas <= self.maxReplicas" in rmd_rules
    assert "self.end > self.start" in rmd_rules
    assert "!self.preferredPools.exists(p, p in self.forbiddenPools)" in rmd_rules
    assert any("allowPublicBurst" in r for r in rmd_rules)
    assert any("self.replicas <= self.scaling.maxReplicas" in r for r in rmd_rules)
    pool_rules = {r["rule"] for r in all_rules(schema_of("ComputePool"))}
    assert f"size(self.metadata.name) <= {MAX_POOL_NAME}" in pool_rules
    assert any("allowedSensitivity" in r for r in pool_rules)
    # Only the root may read metadata (the API server's rule for CEL on custom resources).
    for kind in ("ComputePool", "RecModelDeployment"):
        for path, node in nodes(schema_of(kind)):
            if path != ".":
                assert all("metadata" not in r["rule"] for r in node.get("x-kubernetes-validations", [])), path
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["message"] and rule["rule"]


def test_names_scope_and_subresources() -> None:
    pool, rmd = by_kind()["ComputePool"], by_kind()["RecModelDeployment"]
    assert pool["metadata"]["name"] == "computepools.hybridrec.io" and pool["spec"]["scope"] == "Cluster"
    assert rmd["metadata"]["name"] == "recmodeldeployments.hybridrec.io" and rmd["spec"]["scope"] == "Namespaced"
    assert pool["spec"]["names"]["shortNames"] == ["cpool"] and rmd["spec"]["names"]["shortNames"] == ["rmd"]
    assert pool["spec"]["names"]["categories"] == rmd["spec"]["names"]["categories"] == ["hybridrec"]
    assert pool["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert rmd["spec"]["versions"][0]["subresources"] == {
        "status": {},
        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"},
    }
    version = rmd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]


def _resolves(schema: dict[str, Any], json_path: str) -> bool:
    """Whether a printer column's JSONPath names a property of the schema (filters follow array items)."""
    node = schema
    for part in re.sub(r"\[[^\]]*\]", "[]", json_path).split(".")[1:]:
        name, is_array = part.removesuffix("[]"), part.endswith("[]")
        if name == "metadata":
            return True
        node = node.get("properties", {}).get(name)
        if node is None:
            return False
        if is_array:
            node = node["items"]
    return True


def test_printer_columns() -> None:
    crd = by_kind()
    rmd_cols = {c["name"]: c["jsonPath"] for c in crd["RecModelDeployment"]["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(rmd_cols) == ["Sensitivity", "Private", "Public", "Ready", "$/h", "Currency", "Placed", "Age"]
    assert rmd_cols["Private"] == ".status.privateReplicas" and rmd_cols["$/h"] == ".status.costPerHour"
    assert rmd_cols["Placed"] == '.status.conditions[?(@.type=="Placed")].status'
    pool_cols = [c["name"] for c in crd["ComputePool"]["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert {"Tenancy", "Price", "Capacity type", "Max GPUs", "Free GPUs", "Age"} <= set(pool_cols)
    for kind, model in (("ComputePool", ComputePool), ("RecModelDeployment", RecModelDeployment)):
        for column in crd[kind]["spec"]["versions"][0]["additionalPrinterColumns"]:
            assert _resolves(schema_of(kind), column["jsonPath"]), f"{kind} column {column['name']} points nowhere"
        assert model.__name__ == kind


def test_a_union_of_two_types_is_refused() -> None:
    with pytest.raises(crds.NotStructural):
        crds._structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})
    with pytest.raises(crds.NotStructural):
        crds._structural({"description": "no type"}, {})
