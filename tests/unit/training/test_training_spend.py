"""Measured training cost into the model's lifecycle cost and ROI (issue 13 item 5): every placed run's cost summed
per currency into status.trainingSpend, pruned runs kept once, and ``costing.model_lifecycle`` adding it to the first
version's typed ``economics.training``."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from hybridrec_operator.api.models import RecModelDeployment, TrainingSpend
from hybridrec_operator.api.training_run import RecModelTrainingRun, parse_run
from hybridrec_operator.core import training as tr
from hybridrec_operator.core.costing import (
    CurrencyMismatchError,
    Money,
    lifecycle,
    measured_training_cost,
    model_lifecycle,
)
from support.manifests import WORKED_EXAMPLE_ECONOMICS

def run(name: str, cost: float | None, hours: float = 1.0, currency: str = "USD", phase: str = "Promoted") -> RecModelTrainingRun:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": "shop"}, "spec": {"model": "movies"}}
    if cost is not None:
        obj["status"] = {"phase": phase, "pool": "onprem", "gpuHours": hours, "cost": cost, "currency": currency}
    else:
        obj["status"] = {"phase": "Pending"}  # never placed: nothing was spent
    return parse_run(obj)


def model(spend: TrainingSpend | None = None, economics: dict[str, Any] | None = WORKED_EXAMPLE_ECONOMICS) -> RecModelDeployment:
    return RecModelDeployment.model_validate({
        "metadata": {"name": "movies", "namespace": "shop"},
        "spec": {"model": {"uri": "s3://models/movies/v1/", "architecture": "two-tower"}, "dataSensitivity": "internal",
                 **({"economics": economics} if economics else {})},
        "status": {"trainingSpend": spend.to_wire()} if spend else {},
    })


def test_spend_sums_placed_runs_per_currency() -> None:
    spend = tr.training_spend([run("a", 12.5, 2.5), run("b", 7.5, 1.5), run("c", 3.0, 1.0, "EUR"), run("d", None)], None)
    assert spend.cost == {"EUR": 3.0, "USD": 20.0}  # never added across currencies
    assert (spend.gpu_hours, spend.runs) == (5.0, 3)


def test_a_pruned_run_stays_counted_once() -> None:
    runs = [run("a", 12.5, 2.5), run("b", 7.5, 1.5)]
    spend = tr.training_spend(runs, None)
    retired = tr.retire(spend, runs[0])
    assert tr.retire(retired, runs[0]) == retired  # a prune retried after a failed delete adds nothing
    # Still listed (the delete has not happened yet) or gone: the same total either way.
    assert tr.training_spend(runs, retired).cost == tr.training_spend(runs[1:], retired).cost == {"USD": 20.0}
    after = tr.training_spend(runs[1:], retired)
    assert (after.runs, after.gpu_hours, after.retired_runs, after.retired_names) == (2, 4.0, 1, ["a"])
    assert tr.retire(after, run("never-placed", None)) == after


def test_retired_names_are_bounded() -> None:
    spend = TrainingSpend()
    for i in range(tr.RETIRED_NAMES_KEPT + 5):
        spend = tr.retire(spend, run(f"r{i}", 1.0))
    assert len(spend.retired_names) == tr.RETIRED_NAMES_KEPT and spend.retired_runs == tr.RETIRED_NAMES_KEPT + 5
    assert spend.retired_cost == {"USD": float(tr.RETIRED_NAMES_KEPT + 5)}


def test_without_runs_the_typed_training_cost_is_the_whole_training_cost() -> None:
    lc = model_lifecycle(model())
    assert lc is not None and lc.training == Money.of(480) and lc.training_measured is None
    assert round(lc.roi, 3) == Decimal("0.254")  # the worked example, unchanged
    assert model_lifecycle(model(economics=None)) is None


def test_measured_runs_are_added_to_the_first_versions_cost_and_lower_the_roi() -> None:
    spend = tr.training_spend([run("a", 40.0), run("b", 30.0), run("c", 9.0, currency="EUR")], None)
    lc = model_lifecycle(model(spend))
    assert lc is not None
    assert lc.training_measured == Money.of(70) and lc.training == Money.of(550)  # 480 typed + 70 measured (USD only)
    assert lc.total_cost == Money.of(660) and lc.roi == Decimal(150) / Decimal(660)


def test_measured_cost_in_another_currency_is_left_out_or_refused() -> None:
    spend = TrainingSpend(cost={"EUR": 9.0})
    assert measured_training_cost(spend, "USD") is None
    assert measured_training_cost(None, "USD") is None
    from hybridrec_operator.api.models import Economics

    with pytest.raises(CurrencyMismatchError):
        lifecycle(Economics.model_validate(WORKED_EXAMPLE_ECONOMICS), Money.of(9, "EUR"))


def test_status_round_trips_through_the_wire_form() -> None:
    spend = tr.retire(tr.training_spend([run("a", 1.25, 0.5)], None), run("a", 1.25, 0.5))
    again = model(spend).status
    assert again is not None and again.training_spend == spend
