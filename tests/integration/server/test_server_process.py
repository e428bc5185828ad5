"""The real server process (`python -m hybridrec_server`) over real HTTP: S3 load, API, metrics, SIGTERM drain."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from hybridrec_server.artifacts import WEIGHTS_NAME, parse_s3_uri, push
from hybridrec_server.metrics import METRIC_NAMES
from hybridrec_server.testing import ServerProcess, make_small_artifact

S3 = Any  # the `s3` fixture's handle (tests/integration/server/conftest.py)


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """Value of the first sample of ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def s3_server(s3: S3, trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server process loading the trained model from S3, pinned by manifest sha256."""
    uri = s3.new_uri("served")
    digest = push(trained_artifact, uri, endpoint_url=s3.endpoint_url)
    cache = tmp_path_factory.mktemp("model-cache")
    srv = ServerProcess(
        uri,
        model_name="movie-recs",
        namespace="shop",
        pool="private-gpu",
        env={**s3.env(), "HYBRIDREC_MODEL_SHA256": digest, "HYBRIDREC_MODEL_CACHE_DIR": str(cache)},
    )
    with srv:
        yield srv


def test_serves_a_model_pulled_from_s3(s3_server: ServerProcess, trained_artifact: Path) -> None:
    import json

    config = json.loads((trained_artifact / "config.json").read_text())
    user = config["user_ids"][0]
    with httpx.Client(base_url=s3_server.url, timeout=10) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["version"] == config["version"]
        r = c.post("/v1/recommend", json={"user_id": user, "k": 10})
        assert r.status_code == 200
        doc = r.json()
        assert doc["model"] == "movie-recs" and doc["fallback"] is False and len(doc["items"]) == 10
        assert set(it["item_id"] for it in doc["items"]) <= set(config["item_ids"])
        r = c.post("/v1/recommend", json={"user_id": "no-such-user", "k": 5})
        assert r.json()["fallback"] is True
        assert [it["item_id"] for it in r.json()["items"]] == config["popular_items"][:5]
        r = c.post("/v1/recommend:batch", json={"requests": [{"user_id": user, "k": 3}, {"user_id": "x", "k": 2}]})
        assert [len(x["items"]) for x in r.json()["responses"]] == [3, 2]
        err = c.post("/v1/recommend", json={"user_id": user, "k": 1000})
        assert err.status_code == 422 and err.json()["error"]["field"] == "k"
        assert c.get("/docs").status_code == 200


def test_metrics_expose_the_documented_series_after_traffic(s3_server: ServerProcess) -> None:
    base = {"namespace": "shop", "model": "movie-recs", "pool": "private-gpu"}
    with httpx.Client(base_url=s3_server.url, timeout=10) as c:
        before = c.get("/metrics").text
        for i in range(20):
            c.post("/v1/recommend", json={"user_id": "not-a-user", "k": 1 + i % 5})
        c.post("/v1/recommend", json={"user_id": "1", "k": 0})
        text = c.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return (metric_value(text, name, **labels) or 0.0) - (metric_value(before, name, **labels) or 0.0)

    for name in METRIC_NAMES:
        assert re.search(rf"^{name}(_bucket|_count|_sum)?{{", text, re.M), f"{name} missing"
    for line in text.splitlines():
        if line.startswith("hybridrec_server_"):
            assert all(f'{k}="{v}"' in line for k, v in base.items()), line
    assert delta("hybridrec_server_requests_total", endpoint="recommend", code="200", **base) == 20
    assert delta("hybridrec_server_requests_total", endpoint="recommend", code="422", **base) == 1
    assert delta("hybridrec_server_request_duration_seconds_count", endpoint="recommend", **base) == 21
    assert delta("hybridrec_server_fallback_total", **base) == 20
    assert metric_value(text, "hybridrec_server_ready", **base) == 1
    assert metric_value(text, "hybridrec_server_model_info", architecture="two-tower", device="cpu", **base) == 1
    assert (metric_value(text, "hybridrec_server_batch_size_count", **base) or 0) >= 1
    assert "hybridrec_server_gpu_" not in text  # no CUDA here: GPU gauges are not exported
    assert "_created" not in text


def test_tampered_s3_artifact_is_never_served(s3: S3, tmp_path: Path) -> None:
    artifact = make_small_artifact(tmp_path / "m", n_users=30, n_items=40, embedding_dim=8, hidden_dim=8)
    uri = s3.new_uri("tampered")
    push(artifact, uri, endpoint_url=s3.endpoint_url)
    loc = parse_s3_uri(uri)
    data = bytearray((artifact / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 0x01
    s3.client.put_object(Bucket=loc.bucket, Key=loc.key(WEIGHTS_NAME), Body=bytes(data))
    cache = tmp_path / "cache"
    srv = ServerProcess(uri, env={**s3.env(), "HYBRIDREC_MODEL_CACHE_DIR": str(cache)})
    with srv.start(wait_ready=False):
        code = srv.wait(60)
    assert code == 1
    logs = srv.logs()
    assert "model.safetensors" in logs and "sha256 mismatch" in logs
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))


def test_sigterm_drains_inflight_requests_and_exits_zero(tmp_path: Path) -> None:
    artifact = make_small_artifact(tmp_path / "m")
    # a long batch window keeps requests in flight while SIGTERM arrives
    srv = ServerProcess(str(artifact), env={"HYBRIDREC_MAX_BATCH_DELAY_MS": "4000", "HYBRIDREC_MAX_BATCH_SIZE": "64"})
    n = 12
    results: list[int | str] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        try:
            with httpx.Client(timeout=30) as c:
                status = c.post(f"{srv.url}/v1/recommend", json={"user_id": str(i + 1), "k": 5}).status_code
        except httpx.HTTPError as exc:
            status = repr(exc)
        with lock:
            results.append(status)

    with srv:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        inflight = 0.0
        while time.monotonic() < deadline:
            text = httpx.get(f"{srv.url}/metrics", timeout=5).text
            inflight = metric_value(text, "hybridrec_server_inflight_requests") or 0.0
            if inflight >= n:
                break
            time.sleep(0.02)
        assert inflight >= n, f"only {inflight} requests in flight"
        code = srv.terminate(timeout_s=30)
        for t in threads:
            t.join(10)
    assert code == 0, srv.logs()
    assert results == [200] * n
    assert "Shutting down" in srv.logs()
