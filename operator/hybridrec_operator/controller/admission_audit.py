"""The operator checks that the admission layer of the sensitive-placement rule is in force (issue 9).

Driven by the placement guard's loop (``PlacementGuard.run``): at its first pass and then at most once per
``interval`` (the runtime's resync period), the leader lists hybridrec's ValidatingAdmissionPolicies and their
bindings (two API reads), and ``core.admission`` says what is wrong. The result is reported

* as ``hybridrec_admission_policy_missing{policy}`` (1 missing or weakened, 0 enforced, -1 unreadable), which the
  chart's ``HybridRecAdmissionPolicyMissing`` alert watches;
* as a log line when a policy's state changes;
* as the ``AdmissionGuarded`` condition of every confidential/restricted model (False, reason
  ``AdmissionPolicyMissing`` or ``AdmissionPolicyWeakened``, naming the policy), with a Warning event when it turns
  False and a Normal one when it is back. The models are what a person looks at for "is my restricted data safe"
  (``kubectl describe rmd``); a cluster with no sensitive model has nothing at stake, the metric and log still say it.

Reading them needs get/list on admissionregistration.k8s.io (the cluster-wide ClusterRole grants it); a namespaced
install may not, and then the state is unknown (-1, condition Unknown), never "missing", never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from hybridrec_operator.api.models import API_VERSION, SENSITIVE
from hybridrec_operator.controller import metrics
from hybridrec_operator.controller.kube import api_message
from hybridrec_operator.controller.runtime import Runtime
from hybridrec_operator.core import admission
from hybridrec_operator.core.objects import RMD_KIND, meta_of

log = logging.getLogger("hybridrec.operator.admission")

_GROUP = "/apis/admissionregistration.k8s.io/v1"
_SENSITIVE = frozenset(s.value for s in SENSITIVE)


class PlacementGuard(Protocol):
    """What this check uses of ``controller.guard.PlacementGuard`` (its I/O helpers), without importing it."""

    runtime: Runtime

    async def _io(self, fn: Any, *args: Any) -> Any: ...

    def _set_status_condition(self, kind: str, namespace: str | None, name: str, body: Mapping[str, Any],
                              type_: str, wanted: tuple[str, str, str]) -> dict[str, Any] | None: ...

    def _post(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


_RESOURCES = ("validatingadmissionpolicies", "validatingadmissionpolicybindings")


def _may_list(kube: Any, resource: str) -> bool:
    """A SelfSubjectAccessReview (every authenticated account may ask); True when it cannot be asked, so the list
    itself answers."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"group": "admissionregistration.k8s.io", "resource": resource,
                                              "verb": "list"}}}
    try:
        answer = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review)
    except ApiException:
        return True
    return bool((answer.get("status") or {}).get("allowed"))


@dataclass
class AdmissionAudit:
    """What the last check found (per policy), so a change is logged once."""

    last: dict[str, admission.PolicyState] = field(default_factory=dict)
    checks: int = 0

    def read(self, guard: PlacementGuard) -> list[admission.PolicyState]:
        """List the policies and bindings (worker thread); unreadable is a verdict, not an error."""
        kube = guard.runtime.kube
        denied = [r for r in _RESOURCES if not _may_list(kube, r)]
        if denied:
            # Asked first so a namespaced install (no ClusterRole for these) logs no 403 every resync.
            return admission.audit(None, None, f"its account may not list {' or '.join(denied)} in "
                                               "admissionregistration.k8s.io (a namespaced install?)")
        try:
            policies = kube.request("GET", f"{_GROUP}/validatingadmissionpolicies").get("items") or []
            bindings = kube.request("GET", f"{_GROUP}/validatingadmissionpolicybindings").get("items") or []
        except ApiException as exc:
            # 403 in a namespaced install without the ClusterRole; 404 where the API server does not serve
            # admissionregistration.k8s.io/v1 policies. Either way the operator cannot tell: never report "missing".
            return admission.audit(None, None, f"listing them was answered {exc.status}: {api_message(exc)}")
        return admission.audit(policies, bindings)

    async def check(self, guard: PlacementGuard) -> list[admission.PolicyState]:
        """One check: metric, log on change, models' conditions and events."""
        self.checks += 1
        states: list[admission.PolicyState] = await guard._io(self.read, guard)
        for s in states:
            metrics.ADMISSION_POLICY_MISSING.labels(s.policy).set(s.gauge)
            before = self.last.get(s.policy)
            if before is None and s.state == "enforced":
                pass  # quiet at startup in a healthy cluster
            elif before is None or before.state != s.state or before.problems != s.problems:
                level = logging.INFO if s.state == "enforced" else (logging.WARNING if s.state == "unknown" else logging.ERROR)
                log.log(level, "admission policy %s", s.describe())
            self.last[s.policy] = s
        await self._models(guard, admission.guarded_condition(states))
        return states

    async def _models(self, guard: PlacementGuard, wanted: tuple[str, str, str]) -> None:
        rt = guard.runtime
        bodies = {key: body for key in rt.model_keys() if (body := rt.rmd_body(key)) is not None
                  and str((body.get("spec") or {}).get("dataSensitivity", "")) in _SENSITIVE}
        current = {key: (body.get("status") or {}).get("conditions") or [] for key, body in bodies.items()}
        for key, want in admission.condition_updates(wanted, current).items():
            old = next((c for c in current[key] if c.get("type") == admission.ADMISSION_GUARDED), {})
            namespace, name = key.split("/", 1)
            written = await guard._io(guard._set_status_condition, RMD_KIND, namespace, name, bodies[key],
                                      admission.ADMISSION_GUARDED, want)
            if written is None:
                continue
            rt.remember_written(written)
            if old.get("status") != want[0] and want[0] != "Unknown":
                await guard._io(self._event, guard, written, want)

    @staticmethod
    def _event(guard: PlacementGuard, rmd: Mapping[str, Any], want: tuple[str, str, str]) -> None:
        involved = {"apiVersion": rmd.get("apiVersion", API_VERSION), "kind": RMD_KIND, "metadata": meta_of(rmd)}
        guard._post(involved, "Normal" if want[0] == "True" else "Warning", want[1], want[2])
