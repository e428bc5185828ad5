"""Operator metrics, defined once (prefix ``hybridrec_``). docs/metrics.md lists each with the PromQL that uses it.

Labels: ``namespace`` and ``model`` identify a RecModelDeployment; ``pool`` and ``tenancy`` a ComputePool. Money
gauges carry ``currency`` so no dashboard adds dollars to euros by accident.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

MODEL = ("namespace", "model")

COST_PER_HOUR = Gauge(
    "hybridrec_cost_per_hour", "Current cost per hour of a model's replicas in a pool.", [*MODEL, "pool", "tenancy", "currency"], registry=REGISTRY
)
SPEND = Counter(
    "hybridrec_spend", "Money spent on a model's GPUs since the operator started (integrated cost per hour).", [*MODEL, "currency"], registry=REGISTRY
)
PROJECTED_MONTH_SPEND = Gauge(
    "hybridrec_projected_month_spend", "Spend projected for the calendar month at the current rate.", [*MODEL, "currency"], registry=REGISTRY
)
BUDGET = Gauge("hybridrec_budget", "A model's budget.", [*MODEL, "window", "currency"], registry=REGISTRY)
BUDGET_UTILIZATION = Gauge(
    "hybridrec_budget_utilization_ratio", "Cost (hour) or projected spend (month) divided by the budget.", [*MODEL, "window"], registry=REGISTRY
)
COST_PER_1K_REQUESTS = Gauge(
    "hybridrec_cost_per_1k_requests", "Serving cost of 1,000 recommendations at the current rate.", [*MODEL, "currency"], registry=REGISTRY
)
ROI = Gauge("hybridrec_roi_ratio", "Lifecycle ROI: business value divided by training + deployment + maintenance cost.", MODEL, registry=REGISTRY)
SLO_TARGET = Gauge("hybridrec_slo_p95_seconds", "A model's p95 latency SLO.", MODEL, registry=REGISTRY)
SLO_ATTAINED = Gauge("hybridrec_slo_attained", "1 when the observed p95 is within the SLO, 0 when not.", MODEL, registry=REGISTRY)
DEMAND = Gauge("hybridrec_demand_rps", "Observed request rate the controller steers by.", MODEL, registry=REGISTRY)
FORECAST = Gauge("hybridrec_forecast_rps", "Demand the allocator provisions for (forecast incl. declared events).", MODEL, registry=REGISTRY)
WANTED = Gauge(
    "hybridrec_wanted_replicas",
    "Replicas a model needs this round after its scale-down stabilisation window, in replicas of its reference capacity "
    "(scaling.targetRpsPerReplica); a pool whose replicas serve more counts for more (HPA's desiredReplicas).",
    MODEL, registry=REGISTRY)
OBSERVED = Gauge("hybridrec_observed", "1 when the controller has fresh metrics for the model, 0 when missing or stale.", [*MODEL, "reason"], registry=REGISTRY)
POOL_CAPACITY = Gauge(
    "hybridrec_pool_capacity_rps", "RPS a model's planned replicas on a pool serve within the SLO (per-pool capacity x replicas).",
    [*MODEL, "pool", "source"], registry=REGISTRY,
)
POOL_RPS_PER_REPLICA = Gauge(
    "hybridrec_pool_rps_per_replica", "RPS one replica of a model sustains within the SLO on a pool; source: measured, hint or default.",
    [*MODEL, "pool", "source"], registry=REGISTRY,
)
POOL_COST_PER_1K_REQUESTS = Gauge(
    "hybridrec_pool_cost_per_1k_requests", "Cost of 1,000 requests served by a fully loaded replica of a model on a pool.",
    [*MODEL, "pool", "currency"], registry=REGISTRY,
)
REPLICAS = Gauge(
    "hybridrec_replicas", "Replicas of a model per pool.", [*MODEL, "pool", "tenancy", "sensitivity", "state"], registry=REGISTRY
)
SHORTFALL = Gauge(
    "hybridrec_capacity_shortfall_replicas", "Replicas wanted but not placeable within the model's allowed pools.", [*MODEL, "sensitivity"], registry=REGISTRY
)
DECISIONS = Counter(
    "hybridrec_decisions", "Scaling and placement decisions.", [*MODEL, "direction", "reason"], registry=REGISTRY
)
SOLVE_SECONDS = Histogram(
    "hybridrec_allocator_solve_seconds", "Time the global allocator took per round.", ["solver"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "hybridrec_reconcile_duration_seconds", "Time one reconcile of an object took.", ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY,
)
RECONCILE_ERRORS = Counter("hybridrec_reconcile_errors", "Reconciles that failed.", ["kind", "reason"], registry=REGISTRY)
POOL_GPUS = Gauge("hybridrec_pool_gpus", "GPUs of a pool by state (allocatable, used, free, quota).", ["pool", "tenancy", "state"], registry=REGISTRY)
SENSITIVE_PLACEMENT_VIOLATIONS = Counter(
    "hybridrec_sensitive_placement_violations",
    "Pods of confidential/restricted models found on a node not labelled hybridrec.io/tenancy=private (each pod "
    "counted once; hybridrec deletes those it created).", [*MODEL, "node"], registry=REGISTRY,
)
ADMISSION_POLICY_MISSING = Gauge(
    "hybridrec_admission_policy_missing",
    "1 when one of hybridrec's ValidatingAdmissionPolicies or its binding is missing or weakened (failurePolicy not "
    "Fail, validationActions without Deny, another policyName, narrowed matchResources), 0 when in force, -1 when the "
    "operator cannot read them (a namespaced install). Set by the leader at startup and every resync.",
    ["policy"], registry=REGISTRY,
)
TRAINING_COST = Gauge(
    "hybridrec_training_cost",
    "Measured cost of one training run: GPU-hours its pods held (reclaimed ones too) x its pool's price per GPU-hour "
    "(controller/training.py); removed when the run is deleted. sum by (namespace, model) is a model's training spend.",
    [*MODEL, "run", "pool", "currency"], registry=REGISTRY,
)
