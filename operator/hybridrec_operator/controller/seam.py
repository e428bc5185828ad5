"""The one seam between the cost controller and the reconciler: created at startup, handed to both.

The cost controller (a global allocator running in the same process) decides replicas per pool for every model.
It publishes them here with its verdict and asks for a re-plan; the reconcile then places exactly that (re-checking
the hard sensitivity rule and the free room through ``placement.plan_placement``, so a bad target can never break a
rule)::

    seam.targets["default/homepage-recs"] = {"onprem-t4": 2, "aws-spot-l4": 1}
    seam.verdicts["default/homepage-recs"] = ControllerVerdict(wanted=4, shortfall=1, budget_limited=True,
                                                               message="...; budget 5.00 USD/h reached")
    seam.slo["default/homepage-recs"] = (True, "P95AboveTarget", "p95 130 ms > 80 ms")   # optional
    seam.request_replan("default/homepage-recs", trigger=CONTROLLER_TRIGGER)

A target alone would read as "everything wanted is placed": the verdict tells the reconcile how many replicas the
model really wants and why the rest were held back, so Placed, CapacityShortfall, BudgetLimited and
hybridrec_capacity_shortfall_replicas report the truth; its message becomes status.lastDecision.message when the
controller's re-plan changes the placement. Without a target a model gets the greedy plan of its desired count
(spec.replicas or scaling.minReplicas).

Both sides run on the operator's event loop; ``request_replan`` is also safe from threads (the runtime installs
it and hops onto the loop when needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from hybridrec_operator.core.cost_handover import hand_over
from hybridrec_operator.core.cost_round import ModelOutcome
from hybridrec_operator.core.decide import ControllerVerdict

Replan = Callable[[str, str, float], None]  # (model key, trigger, delay)


@dataclass
class ControlSeam:
    """Per-model targets, verdicts and SLO status from the cost controller, read by every reconcile."""

    targets: dict[str, dict[str, int]] = field(default_factory=dict)
    verdicts: dict[str, ControllerVerdict] = field(default_factory=dict)
    slo: dict[str, tuple[bool | None, str, str]] = field(default_factory=dict)
    _replan: Replan | None = None

    def install(self, replan: Replan | None) -> None:
        """The runtime's way to queue a re-plan (None when it stops)."""
        self._replan = replan

    def request_replan(self, model_key: str, trigger: str = "controller", delay: float = 0.0) -> bool:
        """Queue a re-plan of ``<namespace>/<name>``; False when no reconciler runs in this process."""
        replan = self._replan
        if replan is None:
            return False
        replan(model_key, trigger, delay)
        return True

    def publish(self, outcomes: Mapping[str, ModelOutcome], live: set[str]) -> list[str]:
        """One round into the seam (see ``core.cost_handover.hand_over``); returns the models to re-plan."""
        return hand_over(outcomes, live, self.targets, self.verdicts, self.slo)

    def seed(self, running: Iterable[tuple[str, Mapping[str, int]]], *, drop_verdicts: bool) -> None:
        """Make what runs the controller's target, so the reconcile keeps it until the controller's first decision
        (rather than falling back to minReplicas). Verdicts of an earlier active spell are dropped when asked:
        nothing is known about what the models want until then."""
        if drop_verdicts:
            self.verdicts.clear()
        for key, pools in running:
            target = {p: n for p, n in pools.items() if n > 0}
            if target:
                self.targets[key] = target
