"""The serving benchmark's pure parts: SLO arithmetic, request bodies for each protocol, the profile summary and the
report, so a run on another machine (the GPU one) cannot fail on a typo after minutes of load."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.fixture(scope="module")
def serving() -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("serving")
    finally:
        sys.path.remove(str(BENCH))


def test_percentiles_and_slo(serving: Any) -> None:
    assert serving.percentile([], 95) == float("inf")
    assert serving.percentile([0.01 * i for i in range(1, 101)], 95) == pytest.approx(0.95)
    step = serving.summarize([(1.0, 0.01, True)] * 199 + [(1.0, 0.2, False)], 200.0, 0.5, 1.0, 200, 0)
    assert step["errors"] == 1 and step["achieved_rps"] == 199 and serving.step_ok(step)
    one_percent = serving.summarize([(1.0, 0.01, True)] * 99 + [(1.0, 0.2, False)], 100.0, 0.5, 1.0, 100, 0)
    assert not serving.step_ok(one_percent)  # errors must stay under 1 %
    late = serving.summarize([(1.0, 0.08, True)] * 100, 100.0, 0.5, 1.0, 100, 0)
    assert not serving.step_ok(late)
    warmup_only = serving.summarize([(0.1, 0.5, True)], 100.0, 0.5, 1.0, 0, 0)
    assert warmup_only["sent"] == 0 and warmup_only["error_ratio"] == 1.0
    assert serving.best_ok_rate([step, late]) == 199


def test_request_bodies_speak_each_protocol(serving: Any) -> None:
    v1 = json.loads(serving.request_bodies("v1", ["7"], n=1)[0])
    v2 = json.loads(serving.request_bodies("v2", ["7"], n=1)[0])
    ks = json.loads(serving.request_bodies("kserve", ["7"], n=1)[0])
    assert v1 == {"user_id": "7", "k": 10}
    assert v2["inputs"][0] == {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["7"]}
    assert ks == {"instances": [{"user_id": "7", "k": 10}]}
    assert serving.path_for("v2") == "/v2/models/bench/infer"


def test_profile_shares_by_function_and_package(serving: Any) -> None:
    collapsed = "\n".join([
        "Runner.run (asyncio/runners.py:118);recommend (hybridrec_server/app.py:450);dumps (json/__init__.py:231) 3",
        "Runner.run (asyncio/runners.py:118);data_received (uvicorn/protocols/http/httptools_impl.py:173) 1",
    ])
    leaves, packages, inclusive = serving.leaf_shares(collapsed)
    assert leaves[0] == ("dumps (json/__init__.py:231)", 0.75)
    assert dict(packages) == {"json": 0.75, "uvicorn": 0.25}
    assert dict(inclusive)["asyncio"] == 1.0 and dict(inclusive)["hybridrec_server/app.py"] == 0.75


def test_report_renders_every_section(serving: Any) -> None:
    step = {"offered_rps": 100.0, "achieved_rps": 100.0, "sent": 300, "errors": 0, "unfinished": 0,
            "error_ratio": 0.0, "p50_s": 0.004, "p95_s": 0.008, "p99_s": 0.01}
    raw = [{"batch_size": 64, "median_batch_s": 0.002, "p95_batch_s": 0.003, "throughput_rps": 32000.0}]
    sweep = {"fixed": step, "steps": [step]}
    results = {
        "meta": {"started": "now", "cpu": "cpu", "cores": 2, "memory_gib": 8.0, "gpu": None, "device": "cpu",
                 "python": "3", "torch": "2", "uvicorn": "0", "loop": "uvloop", "http": "httptools", "kserve": "0.21",
                 "ray": "not run", "loadgen_procs": 1, "duration": 3.0, "warmup": 1.0, "fixed_rate": 100.0,
                 "load_start": 1.0},
        "noop": sweep,
        "profile": {"error": "py-spy not installed"},
        "models_order": ["sasrec"],
        "models": {"sasrec": {"desc": "d", "raw": raw, "raw_alt": {"label": "bf16 autocast", "rows": raw},
                              "http": {"batching": {**sweep, "mean_batch_size": 3.0}, "kserve": sweep,
                                       "ray-serve": {"error": "ray[serve] not installed"}}}},
    }
    text = serving.render(results, "python benchmarks/serving.py")
    assert "(c)/min(a, b) = 100 / 100 = 100%" in text and "met" in text
    assert "(c)/best(d, e) = 100 / 100 (kserve) = 1.0x (target >= 2x): MISSED" in text
    assert "ray[serve] not installed" in text and "bf16 autocast: req/s" in text and "py-spy not installed" in text
