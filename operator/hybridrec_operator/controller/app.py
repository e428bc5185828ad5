"""Startup and shutdown of the operator process: builds the seam, the runtime, the leader elector and the cost
controller once, hands the seam to both sides, and keeps them on kopf's ``memo`` (``handlers.py`` registers this).

Nothing here is module-level state: every handler reaches the running :class:`Operator` through ``memo``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from hybridrec_operator.controller import metrics
from hybridrec_operator.controller.config import OperatorConfig
from hybridrec_operator.controller.cost_controller import CostController, control_loop, seed_from_api
from hybridrec_operator.controller.guard import PlacementGuard
from hybridrec_operator.controller.kube import Kube, new_api_client
from hybridrec_operator.controller.leader import AlwaysLeader, KubeLeaseStore, LeaderElector
from hybridrec_operator.controller.observe import HttpPromClient
from hybridrec_operator.controller.pricing import PriceRefresher
from hybridrec_operator.controller.runtime import LEADER_TRIGGER, Runtime
from hybridrec_operator.controller.seam import ControlSeam
from hybridrec_operator.core.cost_types import ControllerConfig

log = logging.getLogger("hybridrec.operator")
MEMO_KEY = "hybridrec"


@dataclass
class Operator:
    """Everything one operator process runs; built by :func:`start`, torn down by :meth:`stop`."""

    runtime: Runtime
    seam: ControlSeam
    leader: LeaderElector | AlwaysLeader
    guard: PlacementGuard | None = None  # the continuous check of the sensitive-placement rule (issue 9 item 4)
    cost_task: asyncio.Task[Any] | None = None
    leader_task: asyncio.Task[Any] | None = None
    metrics_server: Any = None
    clients: list[Any] = field(default_factory=list)  # ApiClients to close last

    def tasks(self) -> list[asyncio.Task[Any]]:
        return [t for t in (*self.runtime.tasks, self.leader_task, self.cost_task) if t is not None]

    async def stop(self) -> None:
        """Stop in dependency order: the cost loop first (it reads the runtime and queues into it), then the
        runtime's workers, then hand the lease back (so a successor takes over at once, and not while our
        reconciles still run), then close the connections."""
        await _cancel([self.cost_task] if self.cost_task else [])
        self.seam.install(None)
        runtime = self.runtime
        runtime.queue.clear_timers()
        await _cancel(runtime.tasks)
        runtime.executor.shutdown(wait=False, cancel_futures=True)
        await _cancel([self.leader_task] if self.leader_task else [])
        if isinstance(self.leader, LeaderElector):
            await self.leader.release()
        for client in self.clients:
            client.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig | None = None) -> None:
    # No per-object persistence: without change-detecting handlers kopf writes nothing to our objects, and the
    # events we post ourselves carry the reasons (kopf's own would add a write per handler run).
    settings.posting.enabled = False
    if not log.isEnabledFor(logging.DEBUG):
        # kopf logs every event-handler call at INFO ("Handler ... succeeded"): thousands of lines at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    # No kopf peering: every replica keeps watching, and the Lease decides which one acts.
    settings.peering.standalone = True
    if config is not None and config.exact_namespaces():
        # A namespaced install names its namespaces: kopf need not list and watch Namespaces (or CRDs) to find
        # them, so the namespaced RBAC grants no right to (it would retry 403s for a minute otherwise).
        settings.scanning.disabled = True


def _leader(config: OperatorConfig, identity: str) -> tuple[LeaderElector | AlwaysLeader, Any]:
    if not config.leader_election:
        return AlwaysLeader(), None
    # Its own small connection pool: a renewal never queues behind the reconciles' API calls.
    api = new_api_client(None, pool_size=2)
    store = KubeLeaseStore(Kube(api, timeout=config.lease_retry_seconds * 2), config.lease_namespace_or_default(),
                           config.lease_name)
    elector = LeaderElector(store, f"{identity}_{uuid.uuid4().hex[:8]}", duration=config.lease_duration_seconds,
                            renew_deadline=config.lease_renew_deadline_seconds, retry=config.lease_retry_seconds)
    return elector, api


async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, indices: Mapping[str, Any]) -> Operator:
    """Build and start everything; the :class:`Operator` is left in ``memo``."""
    config = OperatorConfig.from_env()
    configure_kopf(settings, config)
    api = await asyncio.to_thread(new_api_client, None, pool_size=max(16, config.workers * 2))
    identity = os.environ.get("POD_NAME") or f"{os.uname().nodename}-{os.getpid()}"
    leader, lease_api = await asyncio.to_thread(_leader, config, identity)
    seam = ControlSeam()
    runtime = Runtime(
        config=config, kube=Kube(api), indices=indices, loop=asyncio.get_running_loop(),
        executor=concurrent.futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="hybridrec-io"),
        seam=seam, leader=leader, identity=identity,
    )
    seam.install(runtime.request_replan)
    op = Operator(runtime=runtime, seam=seam, leader=leader, clients=[c for c in (api, lease_api) if c is not None])
    runtime.tasks = [asyncio.create_task(runtime.worker(), name=f"hybridrec-worker-{i}") for i in range(config.workers)]
    runtime.tasks.append(asyncio.create_task(runtime.resync(), name="hybridrec-resync"))
    # The guard runs beside the workers (its own coroutine, so a slow reconcile never delays a deletion); cancelled
    # with the runtime's tasks, and a takeover checks at once what the previous leader may have missed.
    op.guard = PlacementGuard(runtime, interval=config.resync_seconds)
    runtime.tasks.append(asyncio.create_task(op.guard.run(), name="hybridrec-placement-guard"))
    runtime.tasks.append(asyncio.create_task(_price_refresher(runtime, leader).run(), name="hybridrec-prices"))
    if isinstance(leader, LeaderElector):
        leader.on_started = _on_started(runtime, op.guard)
        op.leader_task = asyncio.create_task(leader.run(), name="hybridrec-leader-election")
    op.cost_task = await _start_cost_controller(runtime, seam, leader)
    if config.metrics_port:
        op.metrics_server, _ = await asyncio.to_thread(_start_metrics, config.metrics_port, config.metrics_address)
    memo[MEMO_KEY] = op
    election = (f"leader election on lease {config.lease_namespace_or_default()}/{config.lease_name} as "
                f"{leader.identity}" if isinstance(leader, LeaderElector) else "standalone (no leader election)")
    log.info("hybridrec operator started: %s, %d workers, metrics on %s:%s", election, config.workers,
             config.metrics_address, config.metrics_port or "off")
    return op


def _price_refresher(runtime: Runtime, leader: LeaderElector | AlwaysLeader) -> PriceRefresher:
    """OpenCost prices for pools with pricing.source opencost, from the Prometheus that scrapes OpenCost."""
    config = runtime.config
    url = config.opencost_prometheus_url or os.environ.get("HYBRIDREC_PROMETHEUS_URL", "")
    client = HttpPromClient(url, timeout_s=5.0) if url else None
    return PriceRefresher(runtime, client, interval_s=config.price_refresh_seconds,
                          max_age_s=config.price_max_age_seconds, is_active=lambda: leader.is_leader)


def _on_started(runtime: Runtime, guard: PlacementGuard) -> Any:
    def started() -> None:
        runtime.started_leading()
        guard.poke(LEADER_TRIGGER)
    return started


async def _start_cost_controller(runtime: Runtime, seam: ControlSeam,
                                 leader: LeaderElector | AlwaysLeader) -> asyncio.Task[Any] | None:
    config = ControllerConfig.from_env(os.environ)
    if not config.enabled:
        log.info("cost controller off (set HYBRIDREC_PROMETHEUS_URL to enable it)")
        return None
    try:
        # Before the watchers start: the first reconciles after a restart keep what runs instead of minReplicas.
        served = runtime.config.served_namespaces() if runtime.config.exact_namespaces() else []
        seeded = await asyncio.to_thread(seed_from_api, runtime.kube, served)
    except Exception as exc:  # noqa: BLE001 - without the seed the first round still starts from what runs
        log.warning("could not read current replicas at startup: %s", exc)
        seeded = {}
    seam.targets.update(seeded)
    # httpx logs every request at INFO: a dozen Prometheus queries per round would drown the operator's log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    controller = CostController(config, seam)
    task = asyncio.create_task(control_loop(controller, runtime, lambda: leader.is_leader),
                               name="hybridrec-cost-controller")
    log.info("cost controller on: Prometheus %s, every %.0f s, %d models resumed from the cluster",
             config.prometheus_url, config.interval_s, len(seeded))
    return task


def _start_metrics(port: int, address: str) -> Any:
    from prometheus_client import start_http_server

    return start_http_server(port, addr=address, registry=metrics.REGISTRY)


def running(memo: Mapping[str, Any]) -> Operator | None:
    """The operator in ``memo``, None before startup and after cleanup."""
    return memo.get(MEMO_KEY)


def probe(op: Operator | None) -> dict[str, Any]:
    """Liveness: fails when a background task died (kopf answers 500 and the kubelet restarts us)."""
    if op is None:
        raise kopf.TemporaryError("not started")
    dead = [t.get_name() for t in op.tasks() if t.done()]
    if dead:
        raise RuntimeError(f"background tasks stopped: {', '.join(dead)}")
    runtime = op.runtime
    return {"active": op.leader.is_leader, "queued": len(runtime.queue), "writes": runtime.writes}
