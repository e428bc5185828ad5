"""The ComputePool half of the runtime: a pool's status (nodes, GPUs, and the conditions of remote clusters, DRA
devices and OpenCost prices) written when it changed, with an event when a condition turned bad or recovered.

``PoolReconciler`` is mixed into ``runtime.Runtime``, which owns the indexes, the API client and the executor; the
model half stays in ``runtime.py``. Pure parts (``pool_status``, the condition rules) live in ``core/``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from hybridrec_operator.api.models import API_VERSION, PriceSource, parse_pool
from hybridrec_operator.controller import dra, metrics
from hybridrec_operator.controller.kube import Kube, api_message
from hybridrec_operator.core import capacity, conditions, remote
from hybridrec_operator.core.decide import pool_status, validation_message
from hybridrec_operator.core.dra import DEVICES_READY
from hybridrec_operator.core.objects import POOL_KIND, fresher, meta_of
from hybridrec_operator.core.pricing import CONDITION as PRICE_CONDITION
from hybridrec_operator.core.pricing import PoolPrice, price_condition

log = logging.getLogger("hybridrec.operator")
GROUP_VERSION = API_VERSION


class PoolReconciler:
    """Reconciles one ComputePool's status. Uses what ``Runtime`` provides: these attributes,"""

    kube: Kube
    loop: asyncio.AbstractEventLoop
    executor: concurrent.futures.ThreadPoolExecutor
    identity: str
    indices: Any
    prices: dict[str, PoolPrice]
    written: dict[tuple[str, str, str], Mapping[str, Any]]
    writes: int
    # and its index readers: _store(index, key), nodes(), pods(), pools().

    async def reconcile_pool(self, name: str) -> None:
        started = time.perf_counter()
        bodies = self._store("hybridrec_pools", name)
        if not bodies:
            return
        body = fresher(bodies[0], self.written.get((POOL_KIND, "", name))) or bodies[0]
        try:
            pool = parse_pool(body)
        except ValidationError as exc:
            # An unusable pool is on the pool itself (Ready=False, InvalidSpec, and an event), not only in our log;
            # models plan without it meanwhile.
            message = validation_message(exc)
            await self._pool_failed(name, body, message)
            raise kopf.PermanentError(message) from exc
        usage = capacity.pool_usage([pool], self.nodes(), self.pods())[name]
        tenancy = pool.spec.tenancy.value
        for state, value in (("allocatable", usage.allocatable_gpus), ("used", usage.used_gpus),
                             ("free", usage.free_gpus), ("quota", usage.quota_gpus)):
            metrics.POOL_GPUS.labels(name, tenancy, state).set(value)
        old = body.get("status") or {}
        now, generation = datetime.now(UTC), meta_of(body).get("generation")
        new = pool_status(pool, usage, old, generation, now)
        # Liqo virtual nodes: undeclared, unlabelled or NotReady ones are named in RemoteClusterReady (and an event).
        new["conditions"] = remote.set_remote_condition(pool, remote.findings(pool, self.nodes(), self.pools()),
                                                        new["conditions"], generation, now)
        # DRA pools: a missing DeviceClass or no ResourceSlices on the pool's nodes is named in DevicesReady.
        new["conditions"] = dra.pool_conditions(self.indices, pool, self._store("hybridrec_nodes", None),
                                                new["conditions"], generation, now)
        price = self.prices.get(name)
        if pool.spec.pricing.source == PriceSource.OPENCOST and price is not None:
            # Which price the planners use and where from; a fallback to the static price is a False condition.
            new["price"] = price.status()
            new["conditions"] = conditions.set_condition(new["conditions"], PRICE_CONDITION, *price_condition(price),
                                                         generation, now)
        elif pool.spec.pricing.source != PriceSource.OPENCOST and (
                old.get("price") is not None or conditions.get_condition(new["conditions"], PRICE_CONDITION)):
            new["price"] = None  # back to a static price: merge-patch null removes the field
            new["conditions"] = [c for c in new["conditions"] if c.get("type") != PRICE_CONDITION]
        news = [n for n in (conditions.condition_news(old.get("conditions") or [], new["conditions"], t)
                            for t in (remote.REMOTE_CLUSTER_READY, PRICE_CONDITION, DEVICES_READY)) if n is not None]
        if new != {k: old.get(k) for k in new}:
            path = f"/apis/{GROUP_VERSION}/computepools/{name}/status"
            written = await self.loop.run_in_executor(self.executor, lambda: self.kube.request(
                "PATCH", path, body={"status": new}, content_type="application/merge-patch+json"))
            self.writes += 1
            self.written[(POOL_KIND, "", name)] = written
            for event in news:
                await self.loop.run_in_executor(self.executor, self._pool_event, body, *event)
        metrics.RECONCILE_SECONDS.labels(kind=POOL_KIND).observe(time.perf_counter() - started)

    def _pool_event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        involved = {"apiVersion": API_VERSION, "kind": POOL_KIND, "metadata": meta_of(body)}
        try:
            self.kube.post_event(involved, reason=reason, message=message, type_=type_, instance=self.identity)
            self.writes += 1
        except ApiException as exc:  # an event is informative: the condition carries the same sentence
            log.warning("could not post event %s for pool %s: %s", reason, meta_of(body).get("name"), api_message(exc))

    async def _pool_failed(self, name: str, body: Mapping[str, Any], message: str) -> None:
        old = body.get("status") or {}
        generation = meta_of(body).get("generation")
        conds = conditions.set_condition(old.get("conditions") or [], "Ready", False, "InvalidSpec",
                                         f"the pool cannot be used: {message}", generation, datetime.now(UTC))
        if conds == list(old.get("conditions") or []) and old.get("observedGeneration") == generation:
            return  # already said
        patch = {"status": {"observedGeneration": generation, "conditions": conds}}
        involved = {"apiVersion": API_VERSION, "kind": POOL_KIND, "metadata": meta_of(body)}

        def write() -> dict[str, Any]:
            written = self.kube.request("PATCH", f"/apis/{GROUP_VERSION}/computepools/{name}/status", body=patch,
                                        content_type="application/merge-patch+json")
            try:
                self.kube.post_event(involved, reason="InvalidSpec", message=f"the pool cannot be used: {message}",
                                     type_="Warning", instance=self.identity)
            except ApiException as exc:
                log.warning("could not post event InvalidSpec for pool %s: %s", name, api_message(exc))
            return written

        self.written[(POOL_KIND, "", name)] = await self.loop.run_in_executor(self.executor, write)
        self.writes += 2
