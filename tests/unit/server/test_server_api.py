"""HTTP API contract in-process (httpx ASGI transport + the app's real lifespan, real model, real batcher)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Coroutine, Sequence, TypeVar

import httpx
import pytest
from fastapi import FastAPI

from gated_model import GatedModel
from hybridrec_server.app import create_app
from hybridrec_server.predictor import Query, Recommendation, RecommenderModel
from hybridrec_server.settings import Settings
from hybridrec_server.testing import make_small_artifact

T = TypeVar("T")


def run(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(coro_fn())


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small_artifact(tmp_path_factory.mktemp("api") / "model", seed=3)


def settings_for(artifact: Path, **kw: Any) -> Settings:
    return Settings(model_uri=str(artifact), model_name="recs", namespace="shop", pool="private", device="cpu", **kw)


@asynccontextmanager
async def serving(app: FastAPI, wait_ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            if wait_ready:
                for _ in range(400):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.025)
                else:
                    raise AssertionError("never became ready")
            yield client


class ExplodingModel(RecommenderModel):
    def predict(self, queries: Sequence[Query]) -> list[Recommendation]:
        if self.ready:
            raise RuntimeError("secret-internal-detail /etc/passwd")
        return super().predict(queries)


def assert_error(resp: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code
    if field is not None:
        assert err["field"] == field
    assert "Traceback" not in resp.text
    return err


def test_recommend_known_user_ranks_and_respects_candidates_and_exclude(artifact: Path) -> None:
    async def body() -> None:
        async with serving(create_app(settings_for(artifact))) as c:
            r = await c.post("/v1/recommend", json={"user_id": "7", "k": 5})
            assert r.status_code == 200
            doc = r.json()
            assert doc["model"] == "recs" and doc["version"] == "two-tower-small-seed3"
            assert doc["user_id"] == "7" and doc["fallback"] is False
            scores = [it["score"] for it in doc["items"]]
            assert len(scores) == 5 and scores == sorted(scores, reverse=True)
            top = doc["items"][0]["item_id"]

            r = await c.post("/v1/recommend", json={"user_id": 7, "k": 5, "exclude": [top]})
            assert top not in [it["item_id"] for it in r.json()["items"]]

            r = await c.post("/v1/recommend", json={"user_id": "7", "k": 10, "candidates": ["3", 5, "9", "3"]})
            ids = [it["item_id"] for it in r.json()["items"]]
            assert sorted(ids) == ["3", "5", "9"]  # deduplicated, only candidates, k capped by candidates

            r = await c.post("/v1/recommend", json={"user_id": "7", "k": 2, "candidates": ["3", "5", "9"], "exclude": ["5"]})
            assert sorted(it["item_id"] for it in r.json()["items"]) == ["3", "9"]

    run(body)


def test_unknown_user_gets_popular_items_flagged_fallback(artifact: Path) -> None:
    async def body() -> None:
        app = create_app(settings_for(artifact))
        async with serving(app) as c:
            r = await c.post("/v1/recommend", json={"user_id": "never-seen", "k": 3, "exclude": ["1"]})
            assert r.status_code == 200
            doc = r.json()
            assert doc["fallback"] is True
            assert [it["item_id"] for it in doc["items"]] == ["2", "3", "4"]
            r = await c.post("/v1/recommend", json={"user_id": "never-seen", "k": 2, "candidates": ["50", "4", "999"]})
            assert [it["item_id"] for it in r.json()["items"]] == ["4", "50"]  # by popularity
            metrics = (await c.get("/metrics")).text
            assert 'hybridrec_server_fallback_total{model="recs",namespace="shop",pool="private"} 2.0' in metrics

    run(body)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"user_id": "1", "k": 0}, "k"),
        ({"user_id": "1", "k": 101}, "k"),
        ({"user_id": "1", "k": "many"}, "k"),
        ({"k": 5}, "user_id"),
        ({"user_id": "1", "candidates": "1,2"}, "candidates"),
        ({"user_id": "1", "surprise": True}, "surprise"),
        ({"user_id": 1.5}, "user_id"),
    ],
)
def test_validation_errors_name_the_field(artifact: Path, payload: dict[str, Any], field: str) -> None:
    async def body() -> None:
        async with serving(create_app(settings_for(artifact))) as c:
            err = assert_error(await c.post("/v1/recommend", json=payload), 422, "invalid_request", field)
            assert field in err["message"]

    run(body)


def test_malformed_json_is_422_on_body(artifact: Path) -> None:
    async def body() -> None:
        async with serving(create_app(settings_for(artifact))) as c:
            r = await c.post("/v1/recommend", content=b'{"user_id": ', headers={"content-type": "application/json"})
            assert_error(r, 422, "invalid_request", "body")

    run(body)


def test_unknown_candidates_are_422_and_batch_fields_are_indexed(artifact: Path) -> None:
    async def body() -> None:
        async with serving(create_app(settings_for(artifact))) as c:
            r = await c.post("/v1/recommend", json={"user_id": "1", "candidates": ["1", "nope-1", "nope-2"]})
            err = assert_error(r, 422, "unknown_item", "candidates")
            assert "nope-1" in err["message"]
            # unknown ids in exclude are harmless
            assert (await c.post("/v1/recommend", json={"user_id": "1", "exclude": ["nope"]})).status_code == 200
            r = await c.post(
                "/v1/recommend:batch",
                json={"requests": [{"user_id": "1"}, {"user_id": "2", "candidates": ["zzz"]}]},
            )
            assert_error(r, 422, "unknown_item", "requests[1].candidates")
            r = await c.post("/v1/recommend:batch", json={"requests": [{"user_id": "1"}, {"user_id": "2", "k": 500}]})
            assert_error(r, 422, "invalid_request", "requests[1].k")
            assert_error(await c.post("/v1/recommend:batch", json={"requests": []}), 422, "invalid_request", "requests")

    run(body)


def test_batch_endpoint_answers_in_order(artifact: Path) -> None:
    async def body() -> None:
        async with serving(create_app(settings_for(artifact))) as c:
            reqs = [{"user_id": str(u), "k": 1 + u % 4} for u in range(1, 30)] + [{"user_id": "ghost", "k": 2}]
            r = await c.post("/v1/recommend:batch", json={"requests": reqs})
            assert r.status_code == 200
            out = r.json()["responses"]
            assert [o["user_id"] for o in out] == [q["user_id"] for q in reqs]
            assert [len(o["items"]) for o in out] == [q["k"] for q in reqs]
            assert out[-1]["fallback"] is True and not any(o["fallback"] for o in out[:-1])
            single = (await c.post("/v1/recommend", json=reqs[3])).json()
            assert [it["item_id"] for it in single["items"]] == [it["item_id"] for it in out[3]["items"]]
            assert [it["score"] for it in single["items"]] == pytest.approx([it["score"] for it in out[3]["items"]], rel=1e-5)

    run(body)


def test_readyz_is_503_until_loaded_and_during_shutdown(artifact: Path) -> None:
    async def body() -> None:
        model = GatedModel("recs", str(artifact), device="cpu")
        app = create_app(settings_for(artifact), model=model)
        async with serving(app, wait_ready=False) as c:
            assert (await c.get("/healthz")).status_code == 200
            assert_error(await c.get("/readyz"), 503, "not_ready")
            assert_error(await c.post("/v1/recommend", json={"user_id": "1"}), 503, "not_ready")
            assert "hybridrec_server_ready{" in (await c.get("/metrics")).text
            model.load_gate.set()
            for _ in range(400):
                if (await c.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.025)
            assert (await c.get("/readyz")).json()["status"] == "ready"
            app.state.begin_shutdown()  # what SIGTERM does first
            assert_error(await c.get("/readyz"), 503, "shutting_down")
            assert 'hybridrec_server_ready{model="recs",namespace="shop",pool="private"} 0.0' in (
                await c.get("/metrics")
            ).text
            # in-flight and keep-alive traffic is still served while draining
            assert (await c.post("/v1/recommend", json={"user_id": "1"})).status_code == 200

    run(body)


def test_full_queue_answers_429_with_retry_after(artifact: Path) -> None:
    async def body() -> None:
        model = GatedModel("recs", str(artifact), device="cpu")
        model.load_gate.set()
        app = create_app(settings_for(artifact, max_queue=1, batching=False), model=model)
        async with serving(app) as c:
            model.predict_gate.clear()
            first = asyncio.create_task(c.post("/v1/recommend", json={"user_id": "1"}))
            for _ in range(400):
                if model.in_predict.is_set():
                    break
                await asyncio.sleep(0.005)
            second = asyncio.create_task(c.post("/v1/recommend", json={"user_id": "2"}))
            for _ in range(400):
                if app.state.batcher.depth == 1:
                    break
                await asyncio.sleep(0.005)
            r = await c.post("/v1/recommend", json={"user_id": "3"})
            assert_error(r, 429, "overloaded")
            assert int(r.headers["retry-after"]) >= 1
            model.predict_gate.set()
            assert (await first).status_code == 200 and (await second).status_code == 200
            text = (await c.get("/metrics")).text
            assert 'code="429"' in text and 'endpoint="recommend"' in text

    run(body)


def test_internal_errors_never_leak_details(artifact: Path) -> None:
    async def body() -> None:
        model = ExplodingModel("recs", str(artifact), device="cpu")
        async with serving(create_app(settings_for(artifact), model=model)) as c:
            r = await c.post("/v1/recommend", json={"user_id": "1"})
            assert_error(r, 500, "internal_error")
            assert "secret" not in r.text and "passwd" not in r.text
            assert_error(await c.get("/no/such/path"), 404, "not_found")
            assert_error(await c.get("/v1/recommend"), 405, "method_not_allowed")

    run(body)


def test_openapi_documents_the_api(artifact: Path) -> None:
    async def body() -> None:
        async with serving(create_app(settings_for(artifact)), wait_ready=False) as c:
            spec = (await c.get("/openapi.json")).json()
            assert {"/v1/recommend", "/v1/recommend:batch", "/healthz", "/readyz"} <= set(spec["paths"])
            assert "429" in spec["paths"]["/v1/recommend"]["post"]["responses"]
            assert (await c.get("/docs")).status_code == 200

    run(body)
