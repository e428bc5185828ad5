"""The README's commands run as written on a fresh local cluster, so a README that drifts from the code fails here.

* The "Try it piece by piece" block: its lines run through bash in order, the way a reader pastes them. Two lines
  are left out because they do not return (see ``SKIPPED``); every other line runs, the cluster-free ones
  (``hybridrec plan``, ``cost estimate``, ``simulate --help``) included.
* The install commands in the prose under it (``helm install ...``, ``kubectl apply -f manifests/crds/ && kubectl
  apply -k manifests/``): each on its own fresh cluster, started the way the block starts one.

"Fresh" means fresh for everything a first-time reader has: ``HOME`` is a temporary directory, so ``hybridrec
cluster up`` starts a new cluster in ``$HOME/.cache/hybridrec/cluster`` and kubectl has no discovery cache. Only
the control-plane binaries (``HYBRIDREC_BIN``) and the virtualenv (``PATH``) come from this machine.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hybridrec_local.localcluster import DEFAULT_BIN_DIR, LocalCluster

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
SECTION = "## Try it piece by piece"
# Lines that do not return, by their start: why each is left out.
SKIPPED = {
    "hybridrec operator run": "runs the operator until stopped; tests/integration/operator runs it against this cluster",
    "hybridrec train": "trains on MovieLens 100K for minutes; tests/unit/server and benchmarks/train_movielens.py cover it",
}
MARK = "::readme-line::"

pytestmark = pytest.mark.cluster


def readme_lines(text: str) -> list[str]:
    """The command lines of the first ```bash block after ``SECTION``, comments and blank lines dropped."""
    start = text.find(SECTION)
    assert start >= 0, f"README has no {SECTION!r} section"
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, f"README's {SECTION!r} section has no ```bash block"
    lines = []
    for raw in block.group(1).splitlines():
        line = raw[: _comment_start(raw)].strip()
        if line:
            lines.append(line)
    return lines


def _comment_start(line: str) -> int:
    """Index of the ``#`` that starts a shell comment (outside quotes, after whitespace), or len(line)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return i
    return len(line)


def skipped_reason(line: str) -> str | None:
    return next((why for start, why in SKIPPED.items() if line.startswith(start)), None)


def test_readme_parsing_keeps_commands_and_drops_comments() -> None:
    text = ("intro\n## Try it piece by piece\n\n```bash\nexport A=1\nkubectl get rmd -A    # a comment\n\n"
            "echo '# not a comment' # but this is\n```\n```bash\nnot this block\n```\n")
    assert readme_lines(text) == ["export A=1", "kubectl get rmd -A", "echo '# not a comment'"]


def install_commands(text: str) -> list[str]:
    """The ``helm install`` and ``kubectl apply`` commands quoted inline in the prose after the block."""
    start = text.find(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    prose = re.sub(r"```.*?```", "", text[start:end if end > 0 else None], flags=re.S)
    return [c for c in re.findall(r"`([^`\n]+)`", prose) if c.startswith(("helm install ", "kubectl apply "))]


def run_on_fresh_cluster(lines: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run ``lines`` through one bash (``set -euo pipefail``) with a fresh ``HOME``; the output of each line."""
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = Path(os.environ.get("HYBRIDREC_BIN") or DEFAULT_BIN_DIR).expanduser()
    missing = LocalCluster(tmp_path, bin_dir=bin_dir).missing_binaries()
    if missing:
        pytest.fail(f"needs {', '.join(missing)} in {bin_dir}: run `bash hack/build-binaries.sh`", pytrace=False)
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "HYBRIDREC_CLUSTER_CONFIG"}}
    env.update({"HOME": str(home), "HYBRIDREC_BIN": str(bin_dir),
                "PATH": f"{bin_dir}:{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}"})
    # Each line is announced before it runs, so a failure names the README line that failed.
    script = "set -euo pipefail\n" + "".join(f"echo {shlex.quote(MARK + line)}\n{line}\n" for line in lines)
    cluster = LocalCluster(home / ".cache" / "hybridrec" / "cluster", bin_dir=bin_dir)
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        cluster.down(quiet=True)  # whatever line failed, nothing the README started keeps running
    outputs = _by_line(proc.stdout)
    ran = list(outputs)
    failed = ran[-1] if ran else "(before the first line)"
    assert proc.returncode == 0, (f"README line failed: {failed}\n--- stdout\n{proc.stdout[-3000:]}\n"
                                  f"--- stderr\n{proc.stderr[-3000:]}")
    assert ran == lines
    return proc, outputs


def test_readme_try_it_commands_run_as_written_on_a_fresh_cluster(tmp_path: Path) -> None:
    lines = readme_lines(README.read_text())
    kept = [line for line in lines if skipped_reason(line) is None]
    unused = [start for start in SKIPPED if not any(line.startswith(start) for line in lines)]
    assert not unused, f"SKIPPED names lines the README no longer has: {unused}; update the list"
    assert any(line.startswith("hybridrec cluster up") for line in kept), kept

    _, outputs = run_on_fresh_cluster(kept, tmp_path)
    rmds = next(out for line, out in outputs.items() if line.startswith("kubectl get rmd"))
    for model in ("account-recs", "homepage-recs", "trending"):
        assert model in rmds, rmds


def test_readme_quotes_both_install_commands() -> None:
    commands = install_commands(README.read_text())
    assert [c.split()[0] for c in commands] == ["helm", "kubectl"], commands


@pytest.mark.parametrize("command", install_commands(README.read_text()), ids=lambda c: c.split()[0])
def test_readme_install_command_runs_as_written_on_a_fresh_cluster(command: str, tmp_path: Path) -> None:
    start = [line for line in readme_lines(README.read_text()) if line.startswith(("hybridrec cluster up", "export KUBECONFIG"))]
    assert len(start) == 2, start
    check = "kubectl get deployment hybridrec-operator -n hybridrec-system -o name"
    _, outputs = run_on_fresh_cluster([*start, command, check], tmp_path)
    assert outputs[check].strip() == "deployment.apps/hybridrec-operator"


def _by_line(stdout: str) -> dict[str, str]:
    """The output of each announced line, by line, in the order they ran."""
    out: dict[str, str] = {}
    current = None
    for row in stdout.splitlines():
        if row.startswith(MARK):
            current = row[len(MARK):]
            out[current] = ""
        elif current is not None:
            out[current] += row + "\n"
    return out
