"""The real server process speaks the Open Inference Protocol to a real V2 client from PyPI (tritonclient[http])
over real HTTP on 127.0.0.1: health, metadata, inference, and the protocol's errors as the client reports them."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from hybridrec_server.testing import ServerProcess, make_small_artifact

# A real Open Inference Protocol client (the test extra installs it): a missing client fails, never skips.
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

NAME = "seq-recs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    artifact = make_small_artifact(
        tmp_path_factory.mktemp("v2") / "seq", "sasrec", n_users=50, n_items=200, embedding_dim=16, hidden_dim=32,
        max_seq_len=20,
    )
    with ServerProcess(str(artifact), model_name=NAME, namespace="shop", pool="private",
                       env={"HYBRIDREC_DEVICE": "cpu"}) as srv:
        yield srv


def client_for(srv: ServerProcess) -> "httpclient.InferenceServerClient":
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{srv.port}", connection_timeout=10, network_timeout=10)


def bytes_input(name: str, rows: list[list[str]] | list[str]) -> "httpclient.InferInput":
    arr = np.array(rows, dtype=object)
    inp = httpclient.InferInput(name, list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr, binary_data=False)
    return inp


def test_health_and_metadata_through_the_client(server: ServerProcess) -> None:
    client = client_for(server)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(NAME)
        assert not client.is_model_ready("some-other-model")
        meta = client.get_model_metadata(NAME)
        assert meta["name"] == NAME
        assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
            "user_id": ("BYTES", [-1]), "history": ("BYTES", [-1, -1]),
        }
        assert {o["name"] for o in meta["outputs"]} == {"item_ids", "scores", "fallback"}
    finally:
        client.close()


def test_infer_with_histories_and_user_ids(server: ServerProcess) -> None:
    client = client_for(server)
    try:
        history = [[str(i) for i in range(1, 31)], ["", "", "5", "no-such-item"] + [""] * 26, [""] * 30]
        result = client.infer(
            NAME,
            [bytes_input("user_id", ["a", "b", "3"]), bytes_input("history", history)],
            outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in ("item_ids", "scores", "fallback")],
            request_id="req-1",
            parameters={"k": 5},
        )
        ids, scores, fallback = (result.as_numpy(n) for n in ("item_ids", "scores", "fallback"))
        assert ids.shape == (3, 5) and scores.shape == (3, 5) and fallback.shape == (3,)
        assert fallback.tolist() == [False, False, False]  # row 3: all padding -> user 3's stored history
        for row in scores:
            assert list(row) == sorted(row, reverse=True)
        assert result.get_response()["id"] == "req-1"
    finally:
        client.close()


def test_protocol_errors_reach_the_client_naming_the_input(server: ServerProcess) -> None:
    client = client_for(server)
    try:
        wrong_type = httpclient.InferInput("user_id", [2], "INT64")
        wrong_type.set_data_from_numpy(np.array([1, 2], dtype=np.int64), binary_data=False)
        with pytest.raises(InferenceServerException) as info:
            client.infer(NAME, [wrong_type])
        assert "user_id" in str(info.value) and "datatype" in str(info.value)
        assert info.value.status() == "400"

        with pytest.raises(InferenceServerException) as info:
            client.infer(NAME, [bytes_input("items", ["1"])])
        assert "'items'" in str(info.value) and info.value.status() == "400"

        with pytest.raises(InferenceServerException) as info:
            client.infer(NAME, [bytes_input("history", ["1", "2"])])  # 1-d
        assert "'history'" in str(info.value) and "shape" in str(info.value) and info.value.status() == "400"
    finally:
        client.close()


def test_the_clients_default_binary_tensors_are_understood(server: ServerProcess) -> None:
    client = client_for(server)
    try:
        users = httpclient.InferInput("user_id", [2], "BYTES")
        users.set_data_from_numpy(np.array(["4", "zzz"], dtype=object))  # binary_data=True is the default
        history = httpclient.InferInput("history", [2, 2], "BYTES")
        history.set_data_from_numpy(np.array([["", ""], ["7", "8"]], dtype=object))
        result = client.infer(NAME, [users, history], parameters={"k": 3})
        assert result.as_numpy("item_ids").shape == (2, 3)
        assert result.as_numpy("fallback").tolist() == [False, False]
        # the same rows as JSON tensors give the same answer
        again = client.infer(NAME, [bytes_input("user_id", ["4", "zzz"]), bytes_input("history", [["", ""], ["7", "8"]])],
                             parameters={"k": 3})
        assert again.as_numpy("item_ids").tolist() == result.as_numpy("item_ids").tolist()
    finally:
        client.close()


def test_v2_requests_are_counted_in_the_server_metrics(server: ServerProcess) -> None:
    import httpx

    client = client_for(server)
    try:
        client.infer(NAME, [bytes_input("history", [["1", "unknown-a", "unknown-b"]])])
    finally:
        client.close()
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert 'endpoint="v2_infer"' in text
    unknown = [line for line in text.splitlines() if line.startswith("hybridrec_server_unknown_items_total{")]
    assert unknown and float(unknown[0].rsplit(" ", 1)[1]) >= 2
