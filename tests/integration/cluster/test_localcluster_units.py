"""Pure parts of the local control plane: no binaries, no cluster."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hybridrec_local.components import CONFIG_DIR
from hybridrec_local.localcluster import ClusterState, LocalCluster
from hybridrec_local.pki import ensure_pki, render_kubeconfig
from hybridrec_local.processes import ProcessRecord, descendants, free_ports, parse_proc_stat

# pool -> (nodes, GPUs per node, tenancy, capacity type or None)
EXPECTED_POOLS = {
    "onprem-a100": (2, 4, "private", None),
    "onprem-t4": (2, 2, "private", None),
    "aws-spot-l4": (3, 4, "public", "spot"),
    "gcp-ondemand-a100": (2, 8, "public", "on-demand"),
}


def test_nodes_yaml_describes_the_four_pools() -> None:
    nodes = [d for d in yaml.safe_load_all((CONFIG_DIR / "nodes.yaml").read_text()) if d]
    seen: dict[str, tuple[int, int, str, str | None]] = {}
    for node in nodes:
        meta = node["metadata"]
        labels = meta["labels"]
        pool = labels["hybridrec.io/pool"]
        gpus = int(node["status"]["allocatable"]["nvidia.com/gpu"])
        count = seen.get(pool, (0,))[0] + 1
        seen[pool] = (count, gpus, labels["hybridrec.io/tenancy"], labels.get("karpenter.sh/capacity-type"))
        assert meta["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert node["status"]["capacity"] == node["status"]["allocatable"]
        public = labels["hybridrec.io/tenancy"] == "public"
        taints = node.get("spec", {}).get("taints", [])
        assert (taints == [{"key": "hybridrec.io/tenancy", "value": "public", "effect": "NoSchedule"}]) == public
    assert seen == EXPECTED_POOLS


def test_parse_proc_stat_survives_parentheses_in_the_command_name() -> None:
    raw = "4242 (we) (ird) S 17 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10 0\n"
    assert parse_proc_stat(raw) == (4242, 17, "S", 987654)


def test_parse_proc_stat_of_this_process() -> None:
    pid, ppid, state, ticks = parse_proc_stat(Path("/proc/self/stat").read_text())
    assert (pid, ppid) == (os.getpid(), os.getppid()) and state == "R" and ticks > 0


def test_descendants_walks_the_whole_tree() -> None:
    tree = {1: [10, 11], 10: [100], 100: [1000], 11: []}
    assert sorted(descendants(1, tree)) == [10, 11, 100, 1000]
    assert descendants(11, tree) == []


def test_free_ports_are_distinct() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6 and all(1024 < p < 65536 for p in ports)


def test_state_round_trips_through_json() -> None:
    state = ClusterState(ready=True, server="https://127.0.0.1:1", ports={"etcd": 2},
                         processes=[ProcessRecord("etcd", 5, 6, ["etcd"], "/tmp/etcd.log", control_plane=True)])
    assert ClusterState.from_json(state.to_json()) == state


def test_a_dead_record_is_not_alive() -> None:
    me = parse_proc_stat(Path("/proc/self/stat").read_text())
    assert ProcessRecord("me", os.getpid(), me[3], [], "").alive()
    assert not ProcessRecord("recycled pid", os.getpid(), me[3] + 1, [], "").alive()


def test_pki_has_the_identities_the_cluster_relies_on(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    serving = x509.load_pem_x509_certificate(pki.crt("apiserver").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    admin = x509.load_pem_x509_certificate(pki.crt("admin").read_bytes())
    assert [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    eku = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    scheduler = x509.load_pem_x509_certificate(pki.crt("kube-scheduler").read_bytes())
    assert scheduler.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:kube-scheduler"
    ca = x509.load_pem_x509_certificate(pki.crt("ca").read_bytes())
    admin.verify_directly_issued_by(ca)

    before = pki.crt("ca").read_bytes()
    assert ensure_pki(tmp_path / "pki").crt("ca").read_bytes() == before  # re-used, so kubeconfigs stay valid


def test_kubeconfig_embeds_the_credentials() -> None:
    doc = yaml.safe_load(render_kubeconfig("https://127.0.0.1:6443", b"CA", b"CERT", b"KEY", "alice"))
    cluster = doc["clusters"][0]["cluster"]
    user = doc["users"][0]["user"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"
    assert doc["contexts"][0]["context"]["user"] == "alice" == doc["users"][0]["name"]
    assert doc["current-context"] == doc["contexts"][0]["name"]


def test_env_points_at_the_workdir_kubeconfig(tmp_path: Path) -> None:
    assert LocalCluster(tmp_path).env() == {"KUBECONFIG": str(tmp_path / "kubeconfig")}


def test_status_of_an_empty_workdir_is_not_running(tmp_path: Path) -> None:
    status = LocalCluster(tmp_path).status()
    assert not status.running and status.processes == [] and status.server == ""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _start_sleeper_from_a_child_python(workdir: Path, die: bool) -> int:
    """A short-lived Python process starts `sleep` through LocalCluster.start_process and exits; returns sleep's PID."""
    code = (
        "import sys; from hybridrec_local.localcluster import LocalCluster\n"
        f"p = LocalCluster({str(workdir)!r}).start_process('sleeper', ['sleep', '60'], die_with_parent={die})\n"
        "print(p.pid)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    return int(out.stdout)


def test_die_with_parent_stops_children_when_their_starter_exits(tmp_path: Path) -> None:
    pid = _start_sleeper_from_a_child_python(tmp_path, die=True)
    deadline = time.monotonic() + 5
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


def test_detached_children_outlive_their_starter_until_down(tmp_path: Path) -> None:
    pid = _start_sleeper_from_a_child_python(tmp_path, die=False)
    try:
        time.sleep(0.3)
        assert _running(pid)
        assert [p.pid for p in LocalCluster(tmp_path).status().processes if p.alive] == [pid]
    finally:
        stopped = LocalCluster(tmp_path, progress=lambda _: None).down()
    assert stopped == ["sleeper"]
    assert not _running(pid)
