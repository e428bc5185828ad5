"""Shared pieces of the hybridrec API: group and version, name and quantity grammars, CEL helpers, the enums both
kinds use, the wire-format base model and the status condition.

No kind lives here: ``api/pool.py`` holds ComputePool and ``api/models.py`` RecModelDeployment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from kubernetes.utils.quantity import parse_quantity
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel



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


class ApiObject(ApiModel):
    """What every kind's envelope (apiVersion, kind, metadata, spec, status, declared by each kind) answers: its name,
    its namespace, and the kind read from an API object."""

    if TYPE_CHECKING:  # each kind declares it, in its envelope's order (the CRD schema's order)
        metadata: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        """``default`` when unset; a cluster-scoped kind (ComputePool) has none to ask for."""
        return str(self.metadata.get("namespace", "default"))

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Self:
        """The kind from its API object (status and unknown metadata tolerated)."""
        return cls.model_validate({"metadata": obj.get("metadata", {}), "spec": obj.get("spec", {}),
                                   "status": obj.get("status")})


class Condition(ApiModel):
    """A status condition following Kubernetes API conventions."""

    model_config = ConfigDict(extra="ignore")

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None
