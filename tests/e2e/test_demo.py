"""``hybridrec demo run`` end to end, as a person runs it (the console script), on a shortened day.

Real everything: the local control plane, moto_server, Prometheus, the operator with its cost controller, the pod
runner and one model server per Running pod. Asserts the report exists with its plots, the restricted model never
ran on a public pool, and ``hybridrec demo down`` (and Ctrl-C) leave no process behind.
"""

from __future__ import annotations

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

from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.report import PLOTS
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
