"""Cost accounting: Money, serving cost, spend over time, the golden lifecycle example and `cost estimate`."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import typer
from cost_builders import SAMPLES, pool_spec
from typer.testing import CliRunner

from hybridrec_operator.api.models import Budget, Economics
from hybridrec_operator.cli.cost import cost_app
from hybridrec_operator.core.costing import (
    CurrencyMismatchError,
    Money,
    SpendTracker,
    cost_per_1k_requests,
    cost_per_hour,
    lifecycle,
)


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_money_refuses_to_mix_currencies() -> None:
    assert Money.of(1.1, "USD") + Money.of(2.2, "USD") == Money.of("3.3", "USD")
    with pytest.raises(CurrencyMismatchError):
        Money.of(1, "USD") + Money.of(1, "EUR")
    with pytest.raises(CurrencyMismatchError):
        _ = Money.of(1, "USD") < Money.of(2, "EUR")
    with pytest.raises(ValueError):
        Money.of(1, "usd")
    assert Money.of(6, "EUR") / Money.of(4, "EUR") == Decimal("1.5")
    assert str(Money.of(1234.5, "EUR")) == "1,234.50 EUR"


def test_cost_per_hour_is_replicas_times_gpus_times_price() -> None:
    pools = {"a": pool_spec(price=0.9), "b": pool_spec("public", price=1.2)}
    assert cost_per_hour({"a": 2, "b": 1}, 2, pools) == Money.of("6.0", "USD")
    eur = {"a": pool_spec(price=0.9), "c": pool_spec(price=1.0).model_copy(update={"pricing": pool_spec().pricing.model_copy(update={"currency": "EUR"})})}
    with pytest.raises(CurrencyMismatchError):
        cost_per_hour({"a": 1, "c": 1}, 1, eur)


def test_cost_per_1k_requests_is_none_without_traffic() -> None:
    assert cost_per_1k_requests(Money.of("3.6"), 1.0) == Money.of("1.0")
    assert cost_per_1k_requests(Money.of("3.6"), 0.0) is None
    assert cost_per_1k_requests(Money.of("3.6"), None) is None


def test_spend_tracker_integrates_rate_over_time_and_calendar_months() -> None:
    tracker = SpendTracker("USD")
    tracker.observe(ts(2026, 1, 31, 22), Money.of(10))
    tracker.observe(ts(2026, 1, 31, 23), Money.of(1))  # 1 h at 10/h
    assert tracker.spend_to_date(ts(2026, 2, 1, 1)) == Money.of(12)  # + 2 h at 1/h
    assert tracker.month_to_date(ts(2026, 2, 1, 1)) == Money.of(1)  # February only
    # 27 days and 23 hours of February remain at 1/h.
    assert tracker.projected_month(ts(2026, 2, 1, 1)) == Money.of(1 + 27 * 24 + 23)
    assert tracker.hour_utilisation(Budget(max_per_hour=4)) == pytest.approx(0.25)
    assert tracker.hour_utilisation(None) is None
    assert tracker.month_utilisation(ts(2026, 2, 1, 1), Budget(max_per_month=672)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        tracker.observe(ts(2026, 1, 1), Money.of(1))
    with pytest.raises(CurrencyMismatchError):
        tracker.observe(ts(2026, 3, 1), Money.of(1, "EUR"))


GOLDEN = Economics.model_validate(
    {
        "currency": "USD",
        "training": {"gpus": 32, "hours": 3, "pricePerGpuHour": 5},
        "deployment": {"gpus": 1, "tps": 100, "unitCost": 0.1},
        "maintenance": {"people": 2, "hours": 100, "ratePerHour": 0.5},
        "businessValue": {"requests": 1e8, "clickThroughRate": 0.005, "conversionRate": 0.003, "valuePerConversion": 0.1},
    }
)


def test_golden_lifecycle_example_is_reproduced_exactly() -> None:
    lc = lifecycle(GOLDEN)
    assert lc.training == Money.of(480)
    assert lc.deployment == Money.of(10)
    assert lc.maintenance == Money.of(100)
    assert lc.total_cost == Money.of(590)
    assert lc.benefit == Money.of(150)
    assert lc.roi == Decimal(150) / Decimal(590)
    assert round(lc.roi, 3) == Decimal("0.254")


def test_roi_is_undefined_without_cost() -> None:
    assert lifecycle(Economics()).roi is None


def test_cost_estimate_prints_the_breakdown_without_a_cluster() -> None:
    app = typer.Typer()
    app.add_typer(cost_app, name="cost")
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(
        app, ["cost", "estimate", "-f", str(SAMPLES / "models.yaml"), "--pools", str(SAMPLES / "pools.yaml")], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    trending = result.output[result.output.index("default/trending"):]
    for text in ("480.00 USD", "10.00 USD", "100.00 USD", "590.00 USD", "150.00 USD", "0.254"):
        assert text in trending
    # Serving at minReplicas (1 x 1 GPU) on the cheapest pool that admits public data: onprem-t4 at 0.35/h.
    assert "onprem-t4" in trending and "0.35 USD" in trending and "255.50 USD" in trending
    # The restricted model may only use onprem-a100.
    account = result.output[result.output.index("default/account-recs"):result.output.index("default/homepage-recs")]
    assert "onprem-a100" in account and "0.90 USD" in account
