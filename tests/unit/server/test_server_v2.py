"""Open Inference Protocol (KServe V2 REST) in-process: the real app, lifespan, model and batcher over httpx ASGI."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from gated_model import GatedModel
from hybridrec_server.app import create_app
from hybridrec_server.settings import Settings
from hybridrec_server.testing import make_small_artifact

NAME = "recs"
INFER = f"/v2/models/{NAME}/infer"


@pytest.fixture(scope="module")
def seq_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small_artifact(
        tmp_path_factory.mktemp("v2") / "seq", "sasrec", n_users=30, n_items=60, embedding_dim=16, hidden_dim=32,
        max_seq_len=12,
    )


@pytest.fixture(scope="module")
def tt_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small_artifact(tmp_path_factory.mktemp("v2") / "tt", n_users=30, n_items=60, embedding_dim=8, hidden_dim=16)


def settings_for(artifact: Path, **kw: Any) -> Settings:
    return Settings(model_uri=str(artifact), model_name=NAME, namespace="shop", pool="private", device="cpu", **kw)


@asynccontextmanager
async def serving(app: FastAPI, wait_ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            if wait_ready:
                for _ in range(400):
                    if (await client.get("/v2/health/ready")).status_code == 200:
                        break
                    await asyncio.sleep(0.025)
                else:
                    raise AssertionError("never became ready")
            yield client


def tensor(name: str, data: list[Any], shape: list[int], datatype: str = "BYTES") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def outputs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in doc["outputs"]}


def v2_error(resp: httpx.Response, status: int, *needles: str) -> str:
    assert resp.status_code == status, resp.text
    doc = resp.json()
    assert set(doc) == {"error"} and isinstance(doc["error"], str), doc
    for needle in needles:
        assert needle in doc["error"], (needle, doc["error"])
    return doc["error"]


def test_health_metadata_and_infer_for_the_sequence_model(seq_artifact: Path) -> None:
    async def body() -> None:
        async with serving(create_app(settings_for(seq_artifact))) as c:
            assert (await c.get("/v2/health/live")).json() == {"live": True}
            assert (await c.get("/v2/health/ready")).json() == {"ready": True}
            assert (await c.get(f"/v2/models/{NAME}/ready")).status_code == 200
            meta = (await c.get(f"/v2/models/{NAME}")).json()
            assert meta["name"] == NAME and meta["versions"] == ["sasrec-small-seed0"]
            assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
                "user_id": ("BYTES", [-1]), "history": ("BYTES", [-1, -1]),
            }
            assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
                "item_ids": ("BYTES", [-1, -1]), "scores": ("FP32", [-1, -1]), "fallback": ("BOOL", [-1]),
            }
            req = {
                "id": "r1",
                "parameters": {"k": 4},
                "inputs": [
                    tensor("user_id", ["4", "someone"], [2]),
                    # row 0: empty history -> the stored one of user 4; row 1: padding "" and an unknown id skipped
                    tensor("history", [["", "", ""], ["", "3", "zzz"]], [2, 3]),
                ],
            }
            r = await c.post(INFER, json=req)
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["model_name"] == NAME and doc["id"] == "r1"
            out = outputs(doc)
            assert out["item_ids"]["shape"] == [2, 4] and out["scores"]["shape"] == [2, 4]
            assert out["fallback"]["data"] == [False, False]
            v1_user = (await c.post("/v1/recommend", json={"user_id": "4", "k": 4})).json()
            assert out["item_ids"]["data"][:4] == [it["item_id"] for it in v1_user["items"]]
            v1_hist = (await c.post("/v1/recommend", json={"user_id": "x", "k": 4, "history": ["3"]})).json()
            assert out["item_ids"]["data"][4:] == [it["item_id"] for it in v1_hist["items"]]
            scores = out["scores"]["data"][:4]
            assert scores == sorted(scores, reverse=True)

            # only some outputs; a history longer than the window is truncated, never an error
            r = await c.post(INFER, json={
                "inputs": [tensor("history", [str(i) for i in range(1, 51)], [1, 50])],
                "outputs": [{"name": "fallback"}],
            })
            assert r.status_code == 200 and [o["name"] for o in r.json()["outputs"]] == ["fallback"]
            metrics = (await c.get("/metrics")).text
            assert 'hybridrec_server_unknown_items_total{model="recs",namespace="shop",pool="private"} 1.0' in metrics
            assert 'endpoint="v2_infer"' in metrics and 'code="200"' in metrics

    asyncio.run(body())


@pytest.mark.parametrize(
    ("request_doc", "needles"),
    [
        ({"inputs": [tensor("user_id", [1, 2], [2], "INT64")]}, ("'user_id'", "datatype", "INT64")),
        ({"inputs": [tensor("user_id", ["1", "2"], [3])]}, ("'user_id'", "2 elements", "[3]")),
        ({"inputs": [tensor("user_id", ["1", "2"], [1, 2])]}, ("'user_id'", "shape")),
        ({"inputs": [tensor("user", ["1"], [1])]}, ("'user'", "unknown input")),
        ({"inputs": [tensor("history", ["1"], [1])]}, ("'history'", "shape")),
        ({"inputs": [tensor("user_id", ["1"], [1]), tensor("history", ["1", "2"], [2, 1])]}, ("'history'", "batch")),
        ({"inputs": [tensor("user_id", [7], [1])]}, ("'user_id'", "element 0")),
        ({"inputs": [{**tensor("user_id", [], [1]), "parameters": {"binary_data_size": 5}}]}, ("'user_id'", "binary")),
        ({"inputs": []}, ("inputs",)),
        ({"inputs": [tensor("user_id", ["1"], [1])], "parameters": {"k": 0}}, ("'k'",)),
        ({"inputs": [tensor("user_id", ["1"], [1])], "outputs": [{"name": "logits"}]}, ("'logits'",)),
    ],
)
def test_bad_tensors_are_400_naming_the_input(seq_artifact: Path, request_doc: dict[str, Any], needles: tuple[str, ...]) -> None:
    async def body() -> None:
        async with serving(create_app(settings_for(seq_artifact))) as c:
            v2_error(await c.post(INFER, json=request_doc), 400, *needles)
            metrics = (await c.get("/metrics")).text
            assert 'endpoint="v2_infer"' in metrics and 'code="400"' in metrics

    asyncio.run(body())


def test_bad_json_unknown_model_and_id_model_signature(tt_artifact: Path) -> None:
    async def body() -> None:
        async with serving(create_app(settings_for(tt_artifact))) as c:
            v2_error(await c.post(INFER, content=b"{nope"), 400, "JSON")
            v2_error(await c.post(INFER, content=b"\xff\xfe"), 400, "UTF-8")
            v2_error(await c.post("/v2/models/other/infer", json={"inputs": []}), 404, "'other'")
            v2_error(await c.get("/v2/models/other"), 404, "'other'")
            assert (await c.get("/v2/models/other/ready")).status_code == 404
            meta = (await c.get(f"/v2/models/{NAME}")).json()
            assert [i["name"] for i in meta["inputs"]] == ["user_id"]  # id models take no history
            v2_error(await c.post(INFER, json={"inputs": [tensor("history", ["1"], [1, 1])]}), 400, "'history'")
            r = await c.post(INFER, json={"inputs": [tensor("user_id", [["3"], ["unknown-user"]], [2, 1])]})
            out = outputs(r.json())
            assert out["fallback"]["data"] == [False, True]
            assert out["item_ids"]["data"][10:] == [str(i) for i in range(1, 11)]  # popular items
            assert (await c.get("/v2")).json()["name"] == "hybridrec-server"

    asyncio.run(body())


def test_not_ready_then_queue_full_429_with_retry_after(tt_artifact: Path) -> None:
    async def body() -> None:
        model = GatedModel(NAME, str(tt_artifact), device="cpu")
        app = create_app(settings_for(tt_artifact, max_queue=1, batching=False), model=model)
        async with serving(app, wait_ready=False) as c:
            r = await c.get("/v2/health/ready")
            assert r.status_code == 400 and r.json() == {"ready": False}
            assert (await c.get(f"/v2/models/{NAME}/ready")).json() == {"name": NAME, "ready": False}
            v2_error(await c.post(INFER, json={"inputs": [tensor("user_id", ["1"], [1])]}), 503, "loading")
            model.load_gate.set()
            for _ in range(400):
                if (await c.get("/v2/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.025)
            one = {"inputs": [tensor("user_id", ["1"], [1])]}
            model.predict_gate.clear()
            first = asyncio.create_task(c.post(INFER, json=one))
            for _ in range(400):
                if model.in_predict.is_set():
                    break
                await asyncio.sleep(0.005)
            second = asyncio.create_task(c.post(INFER, json=one))
            for _ in range(400):
                if app.state.batcher.depth == 1:
                    break
                await asyncio.sleep(0.005)
            r = await c.post(INFER, json=one)
            v2_error(r, 429, "overloaded")
            assert int(r.headers["retry-after"]) >= 1
            model.predict_gate.set()
            assert (await first).status_code == 200 and (await second).status_code == 200
            assert 'code="429"' in (await c.get("/metrics")).text

    asyncio.run(body())
