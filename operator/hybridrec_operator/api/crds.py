"""Generate the CustomResourceDefinitions from the pydantic models in ``api.py``.

The API server must refuse exactly what the models refuse, so the CRD schema is derived, never hand-written:
pydantic's JSON Schema is turned into a *structural* OpenAPI v3 schema (every node typed, no ``$ref``/``anyOf``,
exclusive bounds in the OpenAPI 3.0 form), CEL rules are carried over from ``json_schema_extra`` and defaults of
optional objects are expanded so the stored spec shows every knob.

Optional fields (``X | None``) become plain ``X`` without ``nullable``: the API server then prunes an explicit
``null`` before defaulting and validation, so ``null`` means "unset" exactly as ``None`` does in pydantic, and CEL
``has(self.field)`` means "set" (a nullable field holding null would make ``self.replicas <= ...`` a runtime error).

``python -m hybridrec_operator.api.crds [DIR]`` writes ``manifests/crds/`` (``tests/unit/operator/test_crds.py`` fails
when the committed YAML drifts from the models).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from hybridrec_operator.api.models import GROUP, VERSION, ComputePool, RecModelDeployment
from hybridrec_operator.api.training_run import RecModelTrainingRun

HEADER = "# Generated from operator/hybridrec_operator/api/models.py by `python -m hybridrec_operator.api.crds`. Do not edit by hand.\n"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DIR = REPO_ROOT / "manifests" / "crds"

# Keys of JSON Schema that a structural OpenAPI v3 schema does not need (or the API server rejects).
_DROPPED_KEYS = frozenset({"title", "examples", "$schema", "const", "discriminator"})


class _FactoryDefaults(GenerateJsonSchema):
    """JSON Schema generator that also reports ``default_factory`` defaults, in their camelCase wire form."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
        else:
            value = schema.get("default", NoDefault)
        return _wire(value)


def _wire(value: Any) -> Any:
    """Models (and lists of models) as their ``to_wire`` form, so defaults carry every leaf default by alias."""
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_wire(item) for item in value]
    return value


class NotStructural(ValueError):
    """The model uses a construct a structural schema cannot express (e.g. a union of two types)."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace ``$ref``/single ``allOf``/nullable ``anyOf`` by the schema they point at, keeping sibling keys."""
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        return _resolve({**target, **node}, defs)
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise NotStructural(f"allOf with {len(parts)} members")
        return _resolve({**_resolve(parts[0], defs), **node}, defs)
    for union in ("anyOf", "oneOf"):
        if union in node:
            members = [m for m in node.pop(union) if m != {"type": "null"}]
            if len(members) != 1:
                raise NotStructural(f"{union} of {len(members)} non-null types: {members}")
            if node.get("default", NoDefault) is None:
                del node["default"]
            return _resolve({**_resolve(members[0], defs), **node}, defs)
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node (recursively) as a structural OpenAPI v3 node."""
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "default" and value is None:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020-12 gives the bound itself; OpenAPI 3.0 wants minimum + exclusiveMinimum: true.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _structural(child, defs) for name, child in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _structural(value, defs)
            elif value is True and "properties" not in node:
                out["x-kubernetes-preserve-unknown-fields"] = True
            # additionalProperties: false is how pydantic says extra="forbid"; the API server prunes (or, with
            # strict field validation, refuses) unknown fields by itself and rejects the keyword next to properties.
        else:
            out[key] = copy.deepcopy(value)
    if out.get("type") == "string" and "enum" in out and "maxLength" not in out:
        # Bounds the CEL cost estimate of rules over enum strings (the estimator does not read enum values).
        out["maxLength"] = max(len(str(v)) for v in out["enum"])
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise NotStructural(f"schema node without a type: {node}")
    return _ordered(out)


_KEY_ORDER = ("description", "type", "format", "enum", "default", "minimum", "exclusiveMinimum", "maximum",
              "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "items",
              "additionalProperties", "properties", "required")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Stable, readable key order (the YAML is reviewed by people)."""
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of a root resource model (apiVersion, kind, metadata, spec, status)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_FactoryDefaults)
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs)
    props = schema["properties"]
    # The API server owns these: apiVersion/kind are strings checked by routing, metadata is implicit (name/labels...).
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object"}
    return schema


def _at(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    """The schema node at a property path (``items`` of arrays followed transparently)."""
    node = schema
    for name in path:
        node = node["properties"][name]
    return node


def _list_types(schema: dict[str, Any], maps: dict[tuple[str, ...], str], sets: tuple[tuple[str, ...], ...]) -> None:
    """Mark keyed lists (conditions by type...) and sets so server-side apply merges and duplicates are refused."""
    for path, key in maps.items():
        node = _at(schema, *path)
        node["x-kubernetes-list-type"] = "map"
        node["x-kubernetes-list-map-keys"] = [key]
    for path in sets:
        _at(schema, *path)["x-kubernetes-list-type"] = "set"


def _age() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def _crd(
    *, kind: str, plural: str, short: str, scope: str, schema: dict[str, Any], columns: list[dict[str, Any]],
    subresources: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "hybridrec", "app.kubernetes.io/part-of": "hybridrec"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["hybridrec"],
            },
            "scope": scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def computepool_crd() -> dict[str, Any]:
    """The cluster-scoped ComputePool CRD."""
    schema = openapi_schema(ComputePool)
    _list_types(schema, {("status", "conditions"): "type"}, (("spec", "allowedSensitivity"),))
    schema = _ordered({**schema, "description": "A pool of GPU nodes hybridrec may place models on: tenancy, price, quota and allowed data classes."})
    columns = [
        {"name": "Tenancy", "type": "string", "jsonPath": ".spec.tenancy"},
        {"name": "Price", "type": "number", "jsonPath": ".spec.pricing.pricePerGpuHour", "description": "Price per GPU-hour."},
        {"name": "Currency", "type": "string", "jsonPath": ".spec.pricing.currency"},
        {"name": "Capacity type", "type": "string", "jsonPath": ".spec.pricing.capacityType"},
        {"name": "Max GPUs", "type": "integer", "jsonPath": ".spec.maxGpus"},
        {"name": "Free GPUs", "type": "integer", "jsonPath": ".status.freeGpus"},
        _age(),
    ]
    return _crd(kind="ComputePool", plural="computepools", short="cpool", scope="Cluster", schema=schema,
                columns=columns, subresources={"status": {}})


def recmodeldeployment_crd() -> dict[str, Any]:
    """The namespaced RecModelDeployment CRD (with a scale subresource, so kubectl scale / HPA / KEDA work)."""
    schema = openapi_schema(RecModelDeployment)
    _list_types(schema, {("status", "conditions"): "type", ("status", "placements"): "pool"}, ())
    schema = _ordered({**schema, "description": "A recommendation model served on GPU pools chosen by data sensitivity, price and latency SLO."})
    columns = [
        {"name": "Sensitivity", "type": "string", "jsonPath": ".spec.dataSensitivity"},
        {"name": "Private", "type": "integer", "jsonPath": ".status.privateReplicas"},
        {"name": "Public", "type": "integer", "jsonPath": ".status.publicReplicas"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "$/h", "type": "number", "jsonPath": ".status.costPerHour", "description": "Cost per hour in .status.currency."},
        {"name": "Currency", "type": "string", "jsonPath": ".status.currency"},
        {"name": "Placed", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Placed")].status'},
        _age(),
    ]
    subresources = {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    return _crd(kind="RecModelDeployment", plural="recmodeldeployments", short="rmd", scope="Namespaced",
                schema=schema, columns=columns, subresources=subresources)


def recmodeltrainingrun_crd() -> dict[str, Any]:
    """The namespaced RecModelTrainingRun CRD: one retraining, its phase, pool, scores and cost (api/training_run.py)."""
    schema = openapi_schema(RecModelTrainingRun)
    _list_types(schema, {("status", "conditions"): "type"}, ())
    schema = _ordered({**schema, "description": "One retraining of a RecModelDeployment: where it ran, what it scored, what it cost, whether it was promoted."})
    columns = [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Pool", "type": "string", "jsonPath": ".status.pool"},
        {"name": "HR@10", "type": "number", "jsonPath": ".status.evaluation.hitRateAt10"},
        {"name": "Serving HR@10", "type": "number", "jsonPath": ".status.evaluation.servingHitRateAt10"},
        {"name": "Cost", "type": "number", "jsonPath": ".status.cost", "description": "Measured cost in .status.currency."},
        _age(),
    ]
    return _crd(kind="RecModelTrainingRun", plural="recmodeltrainingruns", short="rmtr", scope="Namespaced",
                schema=schema, columns=columns, subresources={"status": {}})


def build_crds() -> list[dict[str, Any]]:
    """Every CRD, ComputePool first."""
    return [computepool_crd(), recmodeldeployment_crd(), recmodeltrainingrun_crd()]


def crd_filename(crd: dict[str, Any]) -> str:
    """``hybridrec.io_<plural>.yaml`` (the controller-gen convention)."""
    return f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml"


def render_yaml(crd: dict[str, Any]) -> str:
    """The exact text committed under ``manifests/crds/``."""
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=120, allow_unicode=True)


def write_crds(directory: Path | str = DEFAULT_DIR) -> list[Path]:
    """Write every CRD into ``directory``; returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for crd in build_crds():
        path = directory / crd_filename(crd)
        path.write_text(render_yaml(crd), encoding="utf-8")
        paths.append(path)
    return paths


def walk(schema: dict[str, Any], visit: Callable[[str, dict[str, Any]], None], path: str = "") -> None:
    """Call ``visit(path, node)`` for every schema node (used by the structural checks in the tests)."""
    visit(path or ".", schema)
    for name, child in schema.get("properties", {}).items():
        walk(child, visit, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        walk(schema["items"], visit, f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        walk(schema["additionalProperties"], visit, f"{path}{{}}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in write_crds(Path(args[0]) if args else DEFAULT_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
