"""Small Kubernetes I/O helpers for the operator: server-side apply, status patches, deletes, events, error classes.

Everything goes through ``kubernetes.client.ApiClient`` with raw JSON in and out (``_preload_content``-style): the
operator only needs plain dicts, and skipping the generated model classes saves most of the client's CPU per call,
which matters when hundreds of models reconcile at once on a small control plane.

``classify`` turns an ``ApiException`` into kopf's retry vocabulary: ``kopf.TemporaryError(delay=...)`` for what
fixes itself (conflicts, throttling, server errors, RBAC that an admin may still grant) and ``kopf.PermanentError``
for requests that will be refused the same way every time (invalid objects).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "hybridrec"
COMPONENT = "hybridrec-operator"

# Retry delays in seconds. Backoff doubles per attempt up to the cap; jitter spreads a burst of retries.
BASE_DELAY = {409: 0.5, 429: 2.0, "5xx": 2.0, "auth": 15.0, "gone": 1.0, "network": 2.0}
MAX_DELAY = 60.0


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the REST API."""

    prefix: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    namespaced: bool


KINDS: dict[tuple[str, str], Kind] = {
    ("apps/v1", "Deployment"): Kind("/apis/apps/v1", "deployments", True),
    ("v1", "Service"): Kind("/api/v1", "services", True),
    ("policy/v1", "PodDisruptionBudget"): Kind("/apis/policy/v1", "poddisruptionbudgets", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): Kind("/apis/networking.k8s.io/v1", "networkpolicies", True),
    ("resource.k8s.io/v1", "ResourceClaimTemplate"): Kind("/apis/resource.k8s.io/v1", "resourceclaimtemplates", True),
    ("v1", "Event"): Kind("/api/v1", "events", True),
    ("v1", "Pod"): Kind("/api/v1", "pods", True),
    ("hybridrec.io/v1alpha1", "RecModelDeployment"): Kind("/apis/hybridrec.io/v1alpha1", "recmodeldeployments", True),
    ("hybridrec.io/v1alpha1", "ComputePool"): Kind("/apis/hybridrec.io/v1alpha1", "computepools", False),
    ("coordination.k8s.io/v1", "Lease"): Kind("/apis/coordination.k8s.io/v1", "leases", True),
}


def object_path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None,
                subresource: str | None = None) -> str:
    """REST path of a collection or object, e.g. ``/apis/apps/v1/namespaces/ns/deployments/x/status``."""
    try:
        info = KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"kube.py does not know {kind} in {api_version}; add it to KINDS") from None
    path = info.prefix
    if info.namespaced:
        if not namespace:
            raise ValueError(f"{kind} is namespaced: a namespace is required")
        path += f"/namespaces/{namespace}"
    path += f"/{info.plural}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


def retry_delay(base: float, attempt: int) -> float:
    """Exponential backoff with +-20% jitter: ``base * 2**attempt`` capped at MAX_DELAY."""
    delay = min(MAX_DELAY, base * (2 ** max(0, attempt)))
    return round(delay * random.uniform(0.8, 1.2), 3)


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def api_message(exc: ApiException) -> str:
    """The API server's own ``Status.message`` (what kubectl prints), or the HTTP reason."""
    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (TypeError, ValueError):
        pass
    return f"{exc.status} {exc.reason or ''}".strip()


def classify(exc: ApiException, *, attempt: int = 0) -> kopf.TemporaryError | kopf.PermanentError:
    """Whether a failed API call is worth retrying, as kopf's exception (with a backoff delay when it is).

    - 409 Conflict, 410 Gone, 429 Too Many Requests, 5xx, network errors (status 0): temporary.
    - 401/403: temporary with a long delay; credentials rotate and an admin may still grant the missing RBAC.
    - other 4xx (400 bad request, 404 on a write, 422 invalid object...): permanent, the same request fails again.
    """
    status = int(exc.status or 0)
    message = api_message(exc)
    if status == 409:
        return kopf.TemporaryError(f"conflict: {message}", delay=retry_delay(BASE_DELAY[409], attempt))
    if status == 429:
        after = _retry_after(exc)
        delay = after if after is not None else retry_delay(BASE_DELAY[429], attempt)
        return kopf.TemporaryError(f"throttled by the API server: {message}", delay=delay)
    if status == 0 or status >= 500:
        key = "network" if status == 0 else "5xx"
        return kopf.TemporaryError(f"API server error: {message}", delay=retry_delay(BASE_DELAY[key], attempt))
    if status in (401, 403):
        return kopf.TemporaryError(f"not allowed ({status}): {message}", delay=retry_delay(BASE_DELAY["auth"], attempt))
    if status in (408, 410):
        return kopf.TemporaryError(f"{message}", delay=retry_delay(BASE_DELAY["gone"], attempt))
    return kopf.PermanentError(f"refused by the API server ({status}): {message}")


def now_rfc3339() -> str:
    """Current UTC time the way Kubernetes writes timestamps (second precision, Z suffix)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    """Thin synchronous client for the handful of calls the operator makes. Thread-safe (urllib3 pool)."""

    def __init__(self, api: ApiClient, *, field_manager: str = FIELD_MANAGER, timeout: float = 30.0) -> None:
        self.api = api
        self.field_manager = field_manager
        self.timeout = timeout

    def request(self, method: str, path: str, *, body: Any = None, query: Mapping[str, str] | None = None,
                content_type: str = "application/json") -> dict[str, Any]:
        """One REST call; returns the decoded JSON body, raises ``ApiException`` on any non-2xx answer."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        # The REST layer JSON-encodes dict bodies for JSON and (JSON being YAML) apply-patch+yaml content types.
        req = self.api.param_serialize(method=method, resource_path=path, query_params=list((query or {}).items()),
                                       header_params=headers, body=body, auth_settings=["BearerToken"])
        resp = self.api.call_api(*req, _request_timeout=self.timeout)
        resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException(http_resp=resp)
        return json.loads(resp.data) if resp.data else {}

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` as field manager ``hybridrec``, taking over conflicting fields (force)."""
        meta = obj["metadata"]
        path = object_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return self.request("PATCH", path, body=obj, content_type="application/apply-patch+yaml",
                            query={"fieldManager": self.field_manager, "force": "true"})

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", object_path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.request("POST", object_path(obj["apiVersion"], obj["kind"], meta.get("namespace")), body=obj)

    def patch_status(self, api_version: str, kind: str, namespace: str | None, name: str,
                     status: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the status subresource (lists such as conditions are replaced whole, as intended)."""
        path = object_path(api_version, kind, namespace, name, "status")
        return self.request("PATCH", path, body={"status": status}, content_type="application/merge-patch+json")

    def scale_to_zero(self, namespace: str, name: str, *, uid: str) -> bool:
        """Set a Deployment's replicas to 0 before deleting it: its pods start terminating now, not when the
        garbage collector gets to its ReplicaSets. ``uid`` in the patch is a precondition (the API server refuses to
        change an object's uid, 422), so a same-named object that replaced ours is never touched. False when gone
        or replaced."""
        path = object_path("apps/v1", "Deployment", namespace, name)
        try:
            self.request("PATCH", path, body={"metadata": {"uid": uid}, "spec": {"replicas": 0}},
                         content_type="application/merge-patch+json", query={"fieldManager": self.field_manager})
        except ApiException as exc:
            if exc.status in (404, 409, 422):
                return False
            raise
        return True

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
               uid: str | None = None) -> bool:
        """Delete in the background (dependents are garbage-collected); False when already gone.

        ``uid`` makes it a precondition: never delete a same-named object that replaced the one we looked at.
        """
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", object_path(api_version, kind, namespace, name), body=body)
        except ApiException as exc:
            if exc.status in (404, 409) and (exc.status == 404 or uid):
                return False  # gone, or replaced by a different object (uid precondition failed)
            raise
        return True

    def post_event(self, involved: Mapping[str, Any], *, reason: str, message: str, type_: str = "Normal",
                   instance: str = "") -> dict[str, Any]:
        """A core/v1 Event about ``involved`` (an API object), shown by ``kubectl describe`` and ``get events``."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", ""),
                "kind": involved.get("kind", ""),
                "name": meta["name"],
                "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": instance or COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        return self.create(event)


def new_api_client(kubeconfig: str | None = None, *, pool_size: int = 32) -> ApiClient:
    """An ApiClient from the in-cluster ServiceAccount, else ``kubeconfig``/$KUBECONFIG/~/.kube/config.

    The connection pool is sized for the reconcile workers so concurrent calls never wait for a socket.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)
