"""Cost accounting: money with a currency, serving cost over time, and the lifecycle ROI model.

Pure: no I/O, no clock. Callers pass timestamps (seconds since the epoch, UTC) and the objects of ``api.py``.
Amounts are ``Decimal`` so the golden lifecycle example (training 480 + deployment 10 + maintenance 100 = 590,
benefit 150) is reproduced exactly rather than to within float noise.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal
from typing import SupportsFloat

from hybridrec_operator.api.models import Budget, ComputePoolSpec, Economics, RecModelDeployment, TrainingSpend

_CURRENCY = re.compile(r"^[A-Z]{3}$")
SECONDS_PER_HOUR = Decimal(3600)
MICRO_PLACES = 6


class CurrencyMismatchError(ValueError):
    """Two amounts in different currencies met in one computation (no implicit exchange rates)."""


def to_decimal(value: Decimal | SupportsFloat | int | str) -> Decimal:
    """A Decimal of ``value``; floats go through ``repr`` so 0.1 stays 0.1 and not 0.1000000000000000055..."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | str):
        return Decimal(value)
    return Decimal(repr(float(value)))


@dataclass(frozen=True)
class Money:
    """An amount and its ISO 4217 currency code. Arithmetic across currencies raises ``CurrencyMismatchError``."""

    amount: Decimal
    currency: str = "USD"

    def __post_init__(self) -> None:
        if not _CURRENCY.match(self.currency):
            raise ValueError(f"not an ISO 4217 currency code: {self.currency!r}")
        object.__setattr__(self, "amount", to_decimal(self.amount))

    @classmethod
    def of(cls, amount: Decimal | SupportsFloat | int | str, currency: str = "USD") -> Money:
        return cls(to_decimal(amount), currency)

    @classmethod
    def zero(cls, currency: str = "USD") -> Money:
        return cls(Decimal(0), currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"expected Money, got {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatchError(f"cannot combine {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __mul__(self, factor: Decimal | SupportsFloat | int) -> Money:
        if isinstance(factor, Money):
            raise TypeError("money times money has no meaning")
        return Money(self.amount * to_decimal(factor), self.currency)

    __rmul__ = __mul__

    def __truediv__(self, other: Money | Decimal | SupportsFloat | int) -> Money | Decimal:
        """Money / number -> Money; Money / Money (same currency) -> a plain ratio."""
        if isinstance(other, Money):
            self._same(other)
            return self.amount / other.amount
        return Money(self.amount / to_decimal(other), self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.amount >= other.amount

    def __float__(self) -> float:
        return float(self.amount)

    def _quantized(self, places: int) -> Decimal:
        # Enough precision for every integer digit: the default context (28 digits) raises InvalidOperation on the
        # large amounts the API admits (e.g. people x hours x rate near their maxima).
        if not self.amount.is_finite():
            return self.amount
        context = Context(prec=max(28, self.amount.adjusted() + places + 2))
        return self.amount.quantize(Decimal(1).scaleb(-places), context=context)

    def rounded(self, places: int = 2) -> Money:
        return Money(self._quantized(places), self.currency)

    def __str__(self) -> str:
        return f"{self._quantized(2):,} {self.currency}"


def money_sum(items: list[Money] | tuple[Money, ...], currency: str = "USD") -> Money:
    """Sum of amounts that must share one currency; ``currency`` is used only for the empty sum."""
    total = Money.zero(items[0].currency if items else currency)
    for item in items:
        total = total + item
    return total


# ------------------------------------------------------------------------------------------ serving cost


def replica_cost_per_hour(pool: ComputePoolSpec, gpus_per_replica: int) -> Money:
    """What one replica of ``gpus_per_replica`` GPUs costs per hour on ``pool``."""
    return Money.of(pool.pricing.price_per_gpu_hour, pool.pricing.currency) * gpus_per_replica


def cost_per_hour(replicas: Mapping[str, int], gpus_per_replica: int, pools: Mapping[str, ComputePoolSpec], currency: str = "USD") -> Money:
    """Replicas x GPUs x pool price, summed over pools. Raises ``KeyError`` for an unknown pool and
    ``CurrencyMismatchError`` when the pools used are priced in different currencies."""
    parts = [replica_cost_per_hour(pools[name], gpus_per_replica) * count for name, count in replicas.items() if count]
    return money_sum(parts, currency)


def cost_per_1k_requests(cost_per_hour_: Money, requests_per_second: float | None) -> Money | None:
    """Serving cost of 1,000 requests at the current rate; ``None`` when there is no traffic (undefined, not zero)."""
    if requests_per_second is None or requests_per_second <= 0:
        return None
    requests_per_hour = to_decimal(requests_per_second) * SECONDS_PER_HOUR
    return cost_per_hour_ * (Decimal(1000) / requests_per_hour)


def _month_bounds(t: float) -> tuple[float, float]:
    """Start and end (epoch seconds, UTC) of the calendar month containing ``t``."""
    d = datetime.fromtimestamp(t, UTC)
    start = datetime(d.year, d.month, 1, tzinfo=UTC)
    end = datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


@dataclass
class SpendTracker:
    """Integrates a piecewise-constant cost per hour over time.

    ``observe(t, rate)`` says "from ``t`` on, we spend ``rate`` per hour"; spend between observations accrues at the
    previous rate. Time is seconds since the epoch (UTC) so months are calendar months.
    """

    currency: str = "USD"
    started_at: float | None = field(default=None, init=False)
    last_t: float | None = field(default=None, init=False)
    month_start: float | None = field(default=None, init=False)
    rate: Money = field(init=False)
    total: Money = field(init=False)
    month: Money = field(init=False)

    def __post_init__(self) -> None:
        self.rate = self.total = self.month = Money.zero(self.currency)

    def _advance(self, t: float) -> None:
        if self.last_t is None:
            self.started_at = self.last_t = t
            self.month_start = _month_bounds(t)[0]
            return
        if t < self.last_t:
            raise ValueError(f"time went backwards: {t} < {self.last_t}")
        cursor = self.last_t
        while cursor < t:
            m_start, m_end = _month_bounds(cursor)
            if self.month_start != m_start:
                self.month_start, self.month = m_start, Money.zero(self.currency)
            step_end = min(t, m_end)
            accrued = self.rate * (to_decimal(step_end - cursor) / SECONDS_PER_HOUR)
            self.total = self.total + accrued
            self.month = self.month + accrued
            cursor = step_end
        if self.month_start != _month_bounds(t)[0]:
            self.month_start, self.month = _month_bounds(t)[0], Money.zero(self.currency)
        self.last_t = t

    def observe(self, t: float, rate: Money) -> None:
        """Accrue up to ``t`` at the previous rate, then spend ``rate`` per hour from ``t`` on."""
        if rate.currency != self.currency:
            raise CurrencyMismatchError(f"tracker counts {self.currency}, got {rate.currency}")
        self._advance(t)
        self.rate = rate

    def spend_to_date(self, t: float) -> Money:
        """Everything spent from the first observation to ``t``."""
        return self._peek(t)[0]

    def month_to_date(self, t: float) -> Money:
        """Spent in the calendar month containing ``t`` (since tracking began)."""
        return self._peek(t)[1]

    def projected_month(self, t: float) -> Money:
        """Month to date plus the current rate until the end of the calendar month."""
        _, m_end = _month_bounds(t)
        return self.month_to_date(t) + self.rate * (to_decimal(m_end - t) / SECONDS_PER_HOUR)

    def hour_utilisation(self, budget: Budget | None) -> float | None:
        """Current cost per hour / ``budget.maxPerHour``; ``None`` without an hourly budget."""
        if budget is None or budget.max_per_hour is None:
            return None
        return _ratio(self.rate, Money.of(budget.max_per_hour, budget.currency))

    def month_utilisation(self, t: float, budget: Budget | None) -> float | None:
        """Projected month / ``budget.maxPerMonth``; ``None`` without a monthly budget."""
        if budget is None or budget.max_per_month is None:
            return None
        return _ratio(self.projected_month(t), Money.of(budget.max_per_month, budget.currency))

    def _peek(self, t: float) -> tuple[Money, Money]:
        probe = copy.copy(self)  # Money is immutable, so a shallow copy is independent
        probe._advance(t)
        return probe.total, probe.month


def _ratio(numerator: Money, denominator: Money) -> float:
    if denominator.amount == 0:
        return float("inf") if numerator.amount > 0 else 0.0
    return float(numerator / denominator)


# ---------------------------------------------------------------------------------------- lifecycle ROI


@dataclass(frozen=True)
class Lifecycle:
    """The lifecycle cost model of ``spec.economics`` against the business value it produces. ``training`` is the
    first version's (``economics.training``, typed by the user: nobody measured it) plus ``training_measured``, what
    the model's retraining runs cost as measured (``status.trainingSpend``)."""

    training: Money
    deployment: Money
    maintenance: Money
    benefit: Money
    training_measured: Money | None = None

    @property
    def total_cost(self) -> Money:
        return self.training + self.deployment + self.maintenance

    @property
    def net(self) -> Money:
        return self.benefit - self.total_cost

    @property
    def roi(self) -> Decimal | None:
        """benefit / total cost; ``None`` when nothing was spent (ROI is undefined, not infinite)."""
        total = self.total_cost
        if total.amount == 0:
            return None
        ratio = self.benefit / total
        assert isinstance(ratio, Decimal)
        return ratio


def lifecycle(economics: Economics, measured_training: Money | None = None) -> Lifecycle:
    """training = gpus x hours x price (the first version) + ``measured_training`` (the retraining runs);
    deployment = gpus x tps x unit cost; maintenance = people x hours x rate; benefit = requests x CTR x CVR x value
    per conversion; all in ``economics.currency`` (a measured amount in another currency raises
    ``CurrencyMismatchError``: :func:`measured_training_cost` picks the right one)."""
    c = economics.currency
    t, d, m, b = economics.training, economics.deployment, economics.maintenance, economics.business_value
    d_ = to_decimal

    def amount(value: Decimal) -> Money:
        # To a millionth of the currency unit: below that an amount means nothing, and a cost of 1e-970 would make
        # the ROI a ratio no float can hold.
        return Money(value, c).rounded(MICRO_PLACES)

    first = amount(d_(t.gpus) * d_(t.hours) * d_(t.price_per_gpu_hour))
    measured = amount(measured_training.amount) if measured_training is not None and measured_training.currency == c else None
    if measured_training is not None and measured is None:
        raise CurrencyMismatchError(f"measured training cost in {measured_training.currency}, economics in {c}")
    return Lifecycle(
        training=first + measured if measured is not None else first,
        training_measured=measured,
        deployment=amount(d_(d.gpus) * d_(d.tps) * d_(d.unit_cost)),
        maintenance=amount(d_(m.people) * d_(m.hours) * d_(m.rate_per_hour)),
        benefit=amount(d_(b.requests) * d_(b.click_through_rate) * d_(b.conversion_rate) * d_(b.value_per_conversion)),
    )


def measured_training_cost(spend: TrainingSpend | None, currency: str) -> Money | None:
    """What the model's retraining runs cost in ``currency`` (``status.trainingSpend``); None when no run was
    measured in it. Runs priced in another currency are left out: there are no exchange rates here."""
    if spend is None or currency not in spend.cost:
        return None
    return Money.of(spend.cost[currency], currency)


def model_lifecycle(rmd: RecModelDeployment) -> Lifecycle | None:
    """The model's lifecycle: ``spec.economics`` with its measured retraining spend summed into training (pure);
    None without ``spec.economics``."""
    economics = rmd.spec.economics
    if economics is None:
        return None
    spend = rmd.status.training_spend if rmd.status is not None else None
    return lifecycle(economics, measured_training_cost(spend, economics.currency))
