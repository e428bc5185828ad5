"""kube.py helpers without a cluster: error classification, REST paths, drift detection."""

from __future__ import annotations

import copy
import json

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from hybridrec_operator.controller.kube import MAX_DELAY, classify, object_path, retry_delay
from hybridrec_operator.core.drift import contained, exactly, needs_apply


def api_error(status: int, message: str = "boom", headers: dict[str, str] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message})
    exc.headers = headers or {}
    return exc


@pytest.mark.parametrize("status", [409, 429, 500, 502, 503, 504, 0, 401, 403, 408, 410])
def test_retryable_statuses_become_temporary_errors_with_a_delay(status: int) -> None:
    err = classify(api_error(status))
    assert isinstance(err, kopf.TemporaryError)
    assert err.delay is not None and 0 < err.delay <= MAX_DELAY * 1.2


@pytest.mark.parametrize("status", [400, 404, 405, 413, 415, 422])
def test_requests_that_fail_the_same_way_again_are_permanent(status: int) -> None:
    err = classify(api_error(status, "spec.replicas: Invalid value: -1"))
    assert isinstance(err, kopf.PermanentError)
    assert not isinstance(err, kopf.TemporaryError)
    assert "spec.replicas: Invalid value: -1" in str(err)


def test_throttling_honours_retry_after() -> None:
    err = classify(api_error(429, headers={"Retry-After": "7"}))
    assert isinstance(err, kopf.TemporaryError) and err.delay == 7.0


def test_backoff_grows_with_attempts_and_is_capped() -> None:
    first = [classify(api_error(503), attempt=0).delay for _ in range(20)]
    later = [classify(api_error(503), attempt=3).delay for _ in range(20)]
    assert max(first) < min(later)
    assert all(retry_delay(2.0, 50) <= MAX_DELAY * 1.2 for _ in range(20))


def test_message_falls_back_to_the_http_reason_when_the_body_is_not_a_status() -> None:
    exc = ApiException(status=500, reason="Internal Server Error")
    exc.body = "<html>proxy error</html>"
    assert "500 Internal Server Error" in str(classify(exc))


def test_object_paths() -> None:
    assert object_path("apps/v1", "Deployment", "ns", "m-p") == "/apis/apps/v1/namespaces/ns/deployments/m-p"
    assert object_path("v1", "Service", "ns") == "/api/v1/namespaces/ns/services"
    assert (object_path("hybridrec.io/v1alpha1", "ComputePool", None, "onprem-a100", "status")
            == "/apis/hybridrec.io/v1alpha1/computepools/onprem-a100/status")
    with pytest.raises(ValueError, match="namespace"):
        object_path("apps/v1", "Deployment", None, "x")
    with pytest.raises(ValueError, match="does not know"):
        object_path("batch/v1", "Job", "ns", "x")


# ---- drift

DESIRED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "m-onprem-t4", "namespace": "default", "labels": {"hybridrec.io/pool": "onprem-t4"},
                 "ownerReferences": [{"uid": "u-1", "kind": "RecModelDeployment", "name": "m"}]},
    "spec": {
        "replicas": 2,
        "template": {"spec": {
            "nodeSelector": {"hybridrec.io/pool": "onprem-t4"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["private"]}]}]}}},
            "containers": [{"name": "server", "resources": {"requests": {"cpu": "0.5", "memory": "1Gi", "nvidia.com/gpu": "1"}}}],
        }},
    },
}


def live_copy() -> dict:
    """DESIRED as the API server returns it: defaults added, quantities normalised, an int where we sent a string."""
    live = copy.deepcopy(DESIRED)
    live["metadata"]["uid"] = "d-1"
    live["metadata"]["labels"]["extra"] = "added-by-someone"
    live["spec"]["progressDeadlineSeconds"] = 600
    pod = live["spec"]["template"]["spec"]
    pod["restartPolicy"] = "Always"
    pod["containers"][0]["resources"]["requests"] = {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": 1}
    pod["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    return live


def test_applied_object_with_server_defaults_needs_no_apply() -> None:
    assert not needs_apply(DESIRED, live_copy())


def test_missing_object_needs_apply() -> None:
    assert needs_apply(DESIRED, None)


def test_hand_edited_replicas_need_apply() -> None:
    live = live_copy()
    live["spec"]["replicas"] = 5
    assert needs_apply(DESIRED, live)


def test_a_node_selector_key_added_by_hand_counts_as_drift() -> None:
    live = live_copy()
    live["spec"]["template"]["spec"]["nodeSelector"]["hybridrec.io/tenancy"] = "public"
    assert needs_apply(DESIRED, live)


def test_a_toleration_added_by_hand_counts_as_drift() -> None:
    live = live_copy()
    live["spec"]["template"]["spec"]["tolerations"] = [{"key": "hybridrec.io/tenancy", "operator": "Equal",
                                                         "value": "public", "effect": "NoSchedule"}]
    assert needs_apply(DESIRED, live)


def test_an_extra_or_ored_affinity_term_counts_as_drift() -> None:
    live = live_copy()
    terms = live["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    terms.append({"matchExpressions": [{"key": "hybridrec.io/tenancy", "operator": "In", "values": ["public"]}]})
    assert needs_apply(DESIRED, live)


def test_lost_owner_reference_or_label_needs_apply() -> None:
    live = live_copy()
    live["metadata"]["ownerReferences"] = []
    assert needs_apply(DESIRED, live)
    live = live_copy()
    del live["metadata"]["labels"]["hybridrec.io/pool"]
    assert needs_apply(DESIRED, live)


def test_object_being_deleted_is_applied_again() -> None:
    live = live_copy()
    live["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert needs_apply(DESIRED, live)


def test_contained_and_exactly_treat_empty_as_absent() -> None:
    assert contained({"a": [], "b": {}, "c": 1}, {"c": "1"})
    assert not contained({"a": [1]}, {"a": []})
    assert exactly({"a": {}, "b": [1]}, {"b": [1]})
    assert not exactly({"b": [1]}, {"b": [1], "c": "x"})
    assert not contained({"cpu": "2"}, {"cpu": "500m"})
