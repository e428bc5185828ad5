"""``hybridrec demo run`` end to end, as a person runs it (the console script), on a shortened day.

Real everything: the local control plane, moto_server, Prometheus, the operator with its cost controller and its
retraining loop, the pod runner with one model server per Running pod and the trainer of the demo's one retraining
run. Asserts the report exists with its plots, the restricted model never ran on a public pool, the retraining run
was trained, gated and promoted and the servers run its version (the report's Retraining section shows it), and
``hybridrec demo down`` (and Ctrl-C) leave no process behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.stack import aws_environment

from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.report import PLOTS
from hybridrec_local.report_retraining import RETRAINING_FILE, RetrainingRecord
from hybridrec_local.summary import placement_violations
from hybridrec_local.timeline import Timeline

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

HYBRIDREC = str(Path(sys.executable).parent / "hybridrec")
DEMO_SECONDS = 60


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("KUBECONFIG", None)
    return env


def _processes_mentioning(text: str) -> list[str]:
    """Live processes whose command line or environment mentions ``text`` (the demo's workdir): its leftovers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z":
                continue
            blob = (entry / "cmdline").read_bytes() + b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


def _require_binaries(workdir: Path) -> None:
    missing = LocalCluster(workdir / "cluster").missing_binaries()
    if missing:
        pytest.fail(f"the demo needs {', '.join(missing)}: run `bash hack/build-binaries.sh`", pytrace=False)


def _down(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HYBRIDREC, "demo", "down", "--workdir", str(workdir)], capture_output=True, text=True,
                          env=_env(), timeout=90)


def test_demo_runs_a_day_writes_the_report_and_cleans_up(tmp_path: Path) -> None:
    workdir, out = tmp_path / "demo", tmp_path / "report"
    _require_binaries(workdir)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [HYBRIDREC, "demo", "run", "--duration-seconds", str(DEMO_SECONDS), "--epochs", "1", "--no-live",
             "--workdir", str(workdir), "--output", str(out)],
            capture_output=True, text=True, env=_env(), timeout=300,
        )
        took = time.monotonic() - started
        assert proc.returncode == 0, f"demo failed after {took:.0f}s:\n{proc.stdout[-6000:]}\n{proc.stderr[-4000:]}"
        print(f"demo run took {took:.0f}s")
        # How long the retraining outlasted the day (CI logs; the demo's other output is only shown on failure).
        print(*(line for line in proc.stdout.splitlines() if "Waiting for the retraining run" in line))

        # The report: HTML that references PNGs that exist, and the timeline it was drawn from.
        html = (out / "index.html").read_text()
        images = re.findall(r'<img src="([^"]+)"', html)
        assert sorted(images) == sorted(PLOTS.values())
        for name in images:
            assert (out / name).read_bytes()[:4] == b"\x89PNG"
        tl = Timeline.from_json((out / "timeline.json").read_text())
        assert len(tl.samples) >= DEMO_SECONDS // 3
        assert "Report:" in proc.stdout and str(out / "index.html") in proc.stdout.replace("\n", "")
        assert "account-recs" in proc.stdout and "NAMESPACE" in tl.kubectl_get_rmd  # kubectl get rmd -A printed

        # The hard rule, observed on the real pods all day: the restricted model never ran on a public pool.
        public = {p.name for p in tl.pools if p.tenancy == "public"}
        account = [s.models["account-recs"].replicas_by_pool for s in tl.samples]
        assert any(sum(r.values()) > 0 for r in account), "account-recs never ran"
        assert all(not (set(k for k, n in r.items() if n) & public) for r in account)
        assert placement_violations(tl) == []

        # Real servers answered real requests for every model, and the operator took decisions.
        for m in tl.models:
            assert max(s.models[m.name].served_rps for s in tl.samples) > 0, f"{m.name} never served"
        assert any(s.models[m.name].p95_ms is not None for s in tl.samples for m in tl.models), "no p95 from Prometheus"
        assert tl.decisions, "no decision recorded"
        assert any(sum(s.models[m.name].cost_per_hour for m in tl.models) > 0 for s in tl.samples)

        # One retraining of one model, for real: trained, evaluated, gated, promoted automatically, served.
        _check_retraining(out, proc.stdout, html, tl)

        # --keep is the default: everything still runs until `demo down`.
        state = json.loads((workdir / "cluster" / "state.json").read_text())
        names = {p["name"] for p in state["processes"]}
        assert {"kube-apiserver", "s3", "prometheus", "operator", "pod-runner"} <= names
        assert _processes_mentioning(str(workdir))
    finally:
        down = _down(workdir)
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    deadline = time.monotonic() + 15
    while _processes_mentioning(str(workdir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_mentioning(str(workdir)) == []
    assert _down(workdir).stdout.strip() == "nothing was running"


def _check_retraining(out: Path, stdout: str, html: str, tl: Timeline) -> None:
    """The report's Retraining section: a promoted run, its numbers as the cluster and the servers reported them."""
    from hybridrec_server.artifacts import s3_client

    rec = RetrainingRecord.from_json((out / RETRAINING_FILE).read_text())
    assert rec.phase == "Promoted", f"{rec.phase}: {rec.message}; phases {rec.phases}"
    assert "<h2>Retraining</h2>" in html and "Retraining of trending: run trending-retrain" in html
    assert rec.new is not None and rec.serving is not None and rec.popularity is not None
    assert all(0 < s.hr10 <= 1 and 0 < s.ndcg10 <= 1 for s in (rec.new, rec.serving, rec.popularity))
    # The gate's verdict follows from the scores: better than the serving version by minImprovement and than popularity.
    assert rec.gate_passed and rec.gate_reason == "GatePassed"
    assert rec.new.hr10 >= rec.serving.hr10 + rec.gate["minImprovement"] and rec.new.hr10 > rec.popularity.hr10
    # Promoted from the version the demo deployed to the run's, which every server of the model now runs.
    assert re.fullmatch(r"[0-9a-f]{64}", rec.new_sha256) and rec.new_sha256 != rec.previous_sha256
    assert rec.served_sha256 and set(rec.served_sha256) == {rec.new_sha256}
    assert rec.answered_version == rec.new_version == rec.run and rec.promoted_at
    # That sha256 is the manifest the trainer wrote to the demo's S3 store (its URL is in the demo's output).
    s3_url = re.search(r"moto_server\) \([\d.]+ s\) (http://127\.0\.0\.1:\d+)", stdout)
    assert s3_url, stdout[:3000]
    bucket, _, prefix = rec.new_uri.removeprefix("s3://").partition("/")
    with aws_environment():
        manifest = s3_client(s3_url[1]).get_object(Bucket=bucket, Key=f"{prefix}manifest.json")["Body"].read()
    assert hashlib.sha256(manifest).hexdigest() == rec.new_sha256
    # Placed by the one rule and priced by its pool: public data, any pool; cost = measured GPU-hours x price.
    pool = tl.pool(rec.pool)
    assert pool is not None and rec.sensitivity == "public"
    assert rec.duration_s is not None and rec.duration_s > 0 and rec.gpu_hours > 0
    assert rec.cost == pytest.approx(rec.gpu_hours * pool.price_per_gpu_hour, rel=1e-3, abs=1e-6)
    # The measured spend is summed into the model's lifecycle cost, so its ROI fell.
    assert rec.training_measured is not None and rec.training_measured >= rec.cost > 0
    assert rec.roi_before is not None and rec.roi_after is not None and rec.roi_after < rec.roi_before
    for text in (f"{rec.new.hr10:.4f}", f"{rec.serving.hr10:.4f}", f"{rec.popularity.hr10:.4f}", rec.previous_sha256,
                 rec.new_sha256, f"{rec.cost:.6f}", f"{rec.roi_after:.7f}", rec.pool):
        assert text in html, text


def _terminal_signals() -> None:
    """In the child before exec: SIGINT delivered and handled by default, as a terminal's Ctrl-C expects."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_midway_stops_everything_started_so_far(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    _require_binaries(workdir)
    state_file = workdir / "cluster" / "state.json"
    proc = subprocess.Popen(
        [HYBRIDREC, "demo", "run", "--no-train", "--no-live", "--workdir", str(workdir), "--output", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
        # As from a terminal, whatever signal state this test process was handed (ignored or blocked SIGINT survives exec).
        preexec_fn=_terminal_signals,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if "s3" in {p["name"] for p in json.loads(state_file.read_text())["processes"]}:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _down(workdir)  # only matters when the assertions below fail
    assert proc.returncode == 130, output[-3000:]
    assert "Interrupted" in output and "stopped" in output
    assert _processes_mentioning(str(workdir)) == []


def test_a_taken_port_stops_the_demo_before_it_starts_anything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = subprocess.run(
            [HYBRIDREC, "demo", "run", "--no-live", "--s3-port", str(port), "--workdir", str(workdir),
             "--output", str(tmp_path / "out")],
            capture_output=True, text=True, env=_env(), timeout=120,
        )
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "The demo stopped at: Checking what the demo needs" in text
    assert f"port 127.0.0.1:{port} is already in use" in text and "--s3-port 0" in text
    assert not (workdir / "cluster" / "state.json").exists()
    assert _processes_mentioning(str(workdir)) == []
