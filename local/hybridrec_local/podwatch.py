"""The pod runner's view of the cluster: hybridrec's pods and which nodes are kwok's, kept current by list + watch."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

from hybridrec_local.podtargets import KWOK_ANNOTATION, MANAGED_SELECTOR

log = logging.getLogger("hybridrec.podrunner")


class PodWatcher(threading.Thread):
    """Keeps ``pods`` (uid -> raw pod) and ``kwok_nodes`` current: list, then watch; relist on any error,
    on 410 Gone and every ``relist_s`` seconds, so a dropped watch never leaves the view wrong for long."""

    def __init__(self, kubeconfig: str, on_change: Callable[[], None], relist_s: float = 30.0) -> None:
        super().__init__(name="pod-watcher", daemon=True)
        from kubernetes import client, config

        self._api_client = config.new_client_from_config(config_file=kubeconfig)
        self._core = client.CoreV1Api(self._api_client)
        self._on_change = on_change
        self._relist_s = relist_s
        self._lock = threading.Lock()
        self._pods: dict[str, dict[str, Any]] = {}
        self._kwok_nodes: set[str] = set()
        self.synced = threading.Event()
        self.stop_event = threading.Event()

    def snapshot(self) -> tuple[list[dict[str, Any]], set[str]]:
        with self._lock:
            return list(self._pods.values()), set(self._kwok_nodes)

    def _list_json(self, call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        resp = call(_preload_content=False, _request_timeout=10, **kwargs)
        return json.loads(resp.data)

    def _relist(self) -> str:
        nodes = self._list_json(self._core.list_node)
        kwok = {
            n["metadata"]["name"]
            for n in nodes.get("items", [])
            if (n["metadata"].get("annotations") or {}).get(KWOK_ANNOTATION) == "fake"
        }
        pods = self._list_json(self._core.list_pod_for_all_namespaces, label_selector=MANAGED_SELECTOR)
        with self._lock:
            self._kwok_nodes = kwok
            self._pods = {p["metadata"]["uid"]: p for p in pods.get("items", [])}
        self.synced.set()
        self._on_change()
        return str(pods.get("metadata", {}).get("resourceVersion", ""))

    def run(self) -> None:
        from kubernetes import watch

        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                rv = self._relist()
                backoff = 0.5
                w = watch.Watch()
                for event in w.stream(
                    self._core.list_pod_for_all_namespaces,
                    label_selector=MANAGED_SELECTOR,
                    resource_version=rv,
                    timeout_seconds=max(int(self._relist_s), 1),
                    allow_watch_bookmarks=True,
                    _request_timeout=self._relist_s + 10,
                ):
                    if self.stop_event.is_set():
                        w.stop()
                        break
                    kind, raw = event.get("type"), event.get("raw_object") or {}
                    if kind == "ERROR":  # typically 410 Gone: the resourceVersion is too old; relist
                        break
                    if kind == "BOOKMARK":
                        continue
                    uid = (raw.get("metadata") or {}).get("uid")
                    if not uid:
                        continue
                    with self._lock:
                        if kind == "DELETED":
                            self._pods.pop(uid, None)
                        else:
                            self._pods[uid] = raw
                    self._on_change()
            except Exception as exc:  # noqa: BLE001 - API server restarts, timeouts: relist after a pause
                log.warning("pod watch interrupted (%s: %s); relisting", type(exc).__name__, exc)
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def close(self) -> None:
        self.stop_event.set()
        self._api_client.close()
