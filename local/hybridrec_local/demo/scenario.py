"""The demo's scenario and traffic model (pure): a compressed day of demand per model with a flash sale, read from
``manifests/samples/demo-traffic.yaml``, and the requests per second the load generator sends at each moment.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybridrec_local.demo.files import SCENARIO_FILE


@dataclass(frozen=True)
class ModelTraffic:
    """Demand for one model: ``night_rps`` at the quietest hour, ``peak_rps`` at the evening peak."""

    name: str
    night_rps: float
    peak_rps: float
    target_rps_per_replica: float | None = None
    budget_per_hour: float | None = None  # USD; becomes spec.budget.maxPerHour
    max_replicas: int | None = None  # becomes spec.scaling.maxReplicas


@dataclass(frozen=True)
class SaleSpec:
    """A flash sale: ``model``'s demand is ``multiplier`` x its curve in [start_hour, end_hour) of the simulated day."""

    model: str
    name: str
    start_hour: float
    end_hour: float
    multiplier: float


@dataclass(frozen=True)
class Scenario:
    real_seconds: float
    start_hour: float
    sample_seconds: float
    control_interval_s: float
    pool_startup_seconds: int
    max_inflight: int
    request_timeout_s: float
    models: tuple[ModelTraffic, ...]
    sale: SaleSpec | None
    pool_max_gpus: Mapping[str, int] = field(default_factory=dict)
    scale_down_stabilization_s: int | None = None
    operator_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def seconds_per_sim_hour(self) -> float:
        return self.real_seconds / 24.0

    def sim_hour(self, t: float) -> float:
        """Simulated hour (start_hour .. start_hour + 24) at ``t`` real seconds after the traffic started."""
        return self.start_hour + t / self.seconds_per_sim_hour

    def real_offset(self, sim_hour: float) -> float:
        """Real seconds after the traffic start at which the simulated clock shows ``sim_hour``."""
        return (sim_hour - self.start_hour) * self.seconds_per_sim_hour

    def model(self, name: str) -> ModelTraffic:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def with_duration(self, real_seconds: float) -> Scenario:
        """The same day played in ``real_seconds``: the controller's time constants (which the scenario sets for its
        own speed) shrink or grow with it, within floors the control interval and process start-up need."""
        f = float(real_seconds) / self.real_seconds
        env = dict(self.operator_env)
        for key, floor in SCALED_OPERATOR_ENV.items():
            if key in env:
                env[key] = f"{max(floor, float(env[key]) * f):g}"
        stabilization = self.scale_down_stabilization_s
        if stabilization is not None:
            stabilization = max(MIN_STABILIZATION_SECONDS, round(stabilization * f))
        return dataclasses.replace(self, real_seconds=float(real_seconds), operator_env=env, scale_down_stabilization_s=stabilization)


# Operator settings in real seconds that follow the speed of the simulated day, with their floors.
SCALED_OPERATOR_ENV = {"HYBRIDREC_MIN_DWELL_SECONDS": 5.0, "HYBRIDREC_DEMAND_HISTORY_SECONDS": 20.0}
MIN_STABILIZATION_SECONDS = 5


class ScenarioError(ValueError):
    """The scenario file is not usable; the message names the field."""


def _num(doc: Mapping[str, Any], key: str, where: str, default: float | None = None, *, minimum: float = 0.0) -> float:
    value = doc.get(key, default)
    if value is None:
        raise ScenarioError(f"{where}.{key} is required")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
        raise ScenarioError(f"{where}.{key} must be a number >= {minimum:g}, got {value!r}")
    return float(value)


def parse_scenario(doc: Mapping[str, Any]) -> Scenario:
    """A :class:`Scenario` from the YAML document (see ``manifests/samples/demo-traffic.yaml``)."""
    if doc.get("kind") != "DemoScenario":
        raise ScenarioError("kind must be DemoScenario")
    day, control, load = doc.get("day") or {}, doc.get("control") or {}, doc.get("load") or {}
    start_hour = _num(day, "startHour", "day", 4)
    if start_hour >= 24:
        raise ScenarioError("day.startHour must be below 24")
    models = []
    for name, m in (doc.get("models") or {}).items():
        where = f"models.{name}"
        night, peak = _num(m, "nightRps", where), _num(m, "peakRps", where)
        if peak < night:
            raise ScenarioError(f"{where}.peakRps must be >= nightRps")
        target = _num(m, "targetRpsPerReplica", where, minimum=0.01) if m.get("targetRpsPerReplica") is not None else None
        budget = _num(m, "budgetPerHour", where) if m.get("budgetPerHour") is not None else None
        max_replicas = int(_num(m, "maxReplicas", where, minimum=1)) if m.get("maxReplicas") is not None else None
        models.append(ModelTraffic(name, night, peak, target, budget, max_replicas))
    if not models:
        raise ScenarioError("models must list at least one model")
    sale = None
    if doc.get("flashSale"):
        s = doc["flashSale"]
        start, end = _num(s, "startHour", "flashSale"), _num(s, "endHour", "flashSale")
        if not (start < end <= 24):
            raise ScenarioError("flashSale needs startHour < endHour <= 24")
        if s.get("model") not in {m.name for m in models}:
            raise ScenarioError(f"flashSale.model {s.get('model')!r} is not one of the scenario's models")
        # Hours before the day's start belong to the next calendar day of the simulation.
        shift = 24.0 if start < start_hour else 0.0
        sale = SaleSpec(str(s["model"]), str(s.get("name", "flash-sale")), start + shift, end + shift,
                        _num(s, "multiplier", "flashSale", minimum=1.0))
    return Scenario(
        real_seconds=_num(day, "realSeconds", "day", 240, minimum=10),
        start_hour=start_hour,
        sample_seconds=_num(day, "sampleSeconds", "day", 2, minimum=0.5),
        control_interval_s=_num(control, "intervalSeconds", "control", 5, minimum=1),
        pool_startup_seconds=int(_num(control, "poolStartupSeconds", "control", 10)),
        max_inflight=int(_num(load, "maxInflightPerModel", "load", 64, minimum=1)),
        request_timeout_s=_num(load, "requestTimeoutSeconds", "load", 2, minimum=0.1),
        models=tuple(models),
        sale=sale,
        pool_max_gpus={str(k): int(_num((doc.get("pools") or {}).get("maxGpus") or {}, k, "pools.maxGpus"))
                       for k in ((doc.get("pools") or {}).get("maxGpus") or {})},
        scale_down_stabilization_s=(int(_num(control, "scaleDownStabilizationSeconds", "control"))
                                    if control.get("scaleDownStabilizationSeconds") is not None else None),
        operator_env=_operator_env(control.get("operatorEnv") or {}),
    )


def _operator_env(env: Mapping[str, Any]) -> dict[str, str]:
    """``control.operatorEnv``: only HYBRIDREC_* settings, as strings."""
    out = {}
    for key, value in env.items():
        if not str(key).startswith("HYBRIDREC_"):
            raise ScenarioError(f"control.operatorEnv.{key}: only HYBRIDREC_* settings belong here")
        out[str(key)] = str(value)
    return out


def load_scenario(path: Path = SCENARIO_FILE) -> Scenario:
    try:
        return parse_scenario(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from exc


def _bump(hour: float, centre: float, width: float) -> float:
    """A Gaussian bump on the 24-hour circle."""
    d = abs((hour - centre + 12.0) % 24.0 - 12.0)
    return math.exp(-0.5 * (d / width) ** 2)


def _raw_shape(hour: float) -> float:
    return 0.35 * _bump(hour, 9.5, 2.5) + 0.4 * _bump(hour, 12.75, 1.5) + 1.0 * _bump(hour, 20.5, 2.3)


_SHAPE_MIN = min(_raw_shape(i / 60.0) for i in range(24 * 60))
_SHAPE_MAX = max(_raw_shape(i / 60.0) for i in range(24 * 60))


def diurnal_shape(hour: float) -> float:
    """Relative demand in [0, 1] at a time of day: trough before dawn, morning rise, lunch bump, evening peak ~20:30."""
    return (_raw_shape(hour % 24.0) - _SHAPE_MIN) / (_SHAPE_MAX - _SHAPE_MIN)


def in_sale(sale: SaleSpec | None, model: str, sim_hour: float) -> bool:
    return sale is not None and sale.model == model and sale.start_hour <= sim_hour < sale.end_hour


def offered_rps(scenario: Scenario, model: str, sim_hour: float) -> float:
    """Requests per second the load generator sends to ``model`` at ``sim_hour`` (curve x sale multiplier)."""
    m = scenario.model(model)
    rps = m.night_rps + (m.peak_rps - m.night_rps) * diurnal_shape(sim_hour)
    if in_sale(scenario.sale, model, sim_hour):
        rps *= scenario.sale.multiplier  # type: ignore[union-attr]
    return rps


def traffic_curve(scenario: Scenario, model: str, step_s: float = 1.0) -> list[tuple[float, float]]:
    """(real seconds, offered rps) over the whole run, every ``step_s``: what the load generator will send."""
    n = int(scenario.real_seconds / step_s)
    return [(i * step_s, offered_rps(scenario, model, scenario.sim_hour(i * step_s))) for i in range(n + 1)]


def expected_requests(scenario: Scenario, model: str, step_s: float = 0.5) -> float:
    """Integral of the offered rate over the run (what the load generator should send on average)."""
    n = int(scenario.real_seconds / step_s)
    return sum(offered_rps(scenario, model, scenario.sim_hour((i + 0.5) * step_s)) * step_s for i in range(n))
