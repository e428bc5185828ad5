"""The real images (hack/images.sh: podman, a debootstrap base, our Dockerfiles) run as the manifests run them.

* The operator image is started from the Deployment that ``helm template`` renders (args, env, securityContext,
  volumes translated by :mod:`support.images`), with a TokenRequest token of the chart's ServiceAccount and the
  cluster CA mounted where a pod sees them, on the host network against the local control plane: it takes the
  chart's Lease, reconciles a sample RecModelDeployment to Placed, answers its probe and serves /metrics.
* The model-server image is started from the Deployment the operator renders (``core/render.build_deployment``),
  pulls the test artifact from a moto_server S3, answers /readyz and a recommendation and drains on SIGTERM (exit 0).
* Neither image holds a secret from the build machine (the host's private CA, AWS keys) in any layer.

The operator image is built every run (layer cache: seconds); the server image (CUDA torch, several GB) only when
what goes into it changed (hack/images.sh keys it by content hash). A failed build fails these tests at once with
the build's last lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hybridrec_local.localcluster import LocalCluster
from hybridrec_local.processes import free_port
from hybridrec_operator.api.models import Serving, parse_pool, parse_rmd
from hybridrec_operator.core.render import build_deployment
from support.images import (
    Container,
    PodEnvironment,
    build,
    image_size,
    images_sh,
    podman_run_args,
    private_ca_needles,
    scan_for,
    service_account_dir,
    unique_name,
)
from support.kube import Kube, sample_internal_model_on, sample_pool_copy
from support.stack import FAKE_AWS, MotoS3, eventually

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3000)]

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "hybridrec"
RELEASE = "hybridrec-img"
NAMESPACE = "hybridrec-img-system"
WORKLOAD_NS = "images-models"
POOL = "images-t4"
MODEL = "images-recs"
SA = f"{RELEASE}-operator"
HOST_CA = Path(os.environ.get("HYBRIDREC_HOST_CA", "/etc/ssl/certs/ca-certificates.crt"))
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def _helm() -> str:
    path = Path(os.environ.get("HYBRIDREC_BIN", Path.home() / ".cache" / "hybridrec" / "bin")) / "helm"
    if not path.is_file():
        pytest.fail(f"helm not found at {path}: run `bash hack/build-binaries.sh`", pytrace=False)
    return str(path)


def _render_chart(**values: str) -> list[dict[str, Any]]:
    sets = [a for k, v in values.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.run([_helm(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--skip-crds",
                           "--kube-version", "v1.35.4", *sets], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [dep] = [d for d in docs if d["kind"] == "Deployment"]
    return dep


def _image_user(image: str) -> str:
    return images_sh("podman", "image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()


def _check_confinement(c: Container, uid: int) -> None:
    """The running process: the uid the spec asked for, no capabilities at all, a root filesystem it cannot write."""
    status = c.exec("cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[:2] == [str(uid), str(uid)], fields["Uid"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap].strip(), 16) == 0, f"{cap}: {fields[cap].strip()}"
    assert fields["NoNewPrivs"].strip() == "1"
    write = c.exec("sh", "-c", "echo x > /opt/hybridrec-write-test")
    assert write.returncode != 0 and "Read-only file system" in write.stderr, write
    state = c.state()
    assert state["HostConfig"]["ReadonlyRootfs"] is True


# ---------------------------------------------------------------------------------------------------- operator


@pytest.fixture(scope="module")
def operator_image() -> str:
    return build("operator")


@pytest.fixture(scope="module")
def server_image() -> str:
    return build("server")


def test_chart_and_operator_reference_the_images_we_build(operator_image: str) -> None:
    """The chart, manifests/install/ and the operator's default spec.serving.image name the tags hack/images.sh
    builds: what a user installs is what these tests ran."""
    assert _deployment(_render_chart())["spec"]["template"]["spec"]["containers"][0]["image"] == operator_image
    install = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install" / "hybridrec.yaml").read_text()) if d]
    assert [c["image"] for d in install if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"]] == [operator_image]
    assert Serving().image == images_sh("tag", "server").stdout.strip()


@pytest.fixture(scope="module")
def chart_rbac(installed: Kube) -> Iterator[list[dict[str, Any]]]:
    """The chart's ServiceAccount and RBAC (rendered by helm template) applied; deleted afterwards."""
    docs = [d for d in _render_chart() if d["kind"] in RBAC_KINDS]
    installed("create", "namespace", NAMESPACE, check=False)
    installed.apply(docs)
    try:
        yield docs
    finally:
        installed("delete", "--ignore-not-found", "--wait=true", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
        installed("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)


def _placed(kube: Kube) -> dict[str, Any] | None:
    obj = kube.get("rmd", MODEL, namespace=WORKLOAD_NS)
    return obj if kube.condition(obj, "Placed").get("status") == "True" else None


def test_operator_image_reconciles_with_the_chart_deployment(
        operator_image: str, chart_rbac: list[dict[str, Any]], installed: Kube, cluster: LocalCluster,
        tmp_path: Path) -> None:
    # Host network: the chart's ports must be free here, so the test picks them (the only values it sets besides an
    # unreachable Prometheus, which the operator must survive).
    health_port, metrics_port = free_port(), free_port()
    dep = _deployment(_render_chart(**{"operator.healthPort": str(health_port), "operator.metricsPort": str(metrics_port),
                                       "operator.prometheusUrl": "http://127.0.0.1:1"}))
    token = installed("create", "token", SA, "-n", NAMESPACE, "--duration=1h").stdout.strip()
    sa_dir = service_account_dir(tmp_path / "serviceaccount", token, cluster.pki.crt("ca").read_bytes(), NAMESPACE)
    api = httpx.URL(cluster.server)
    name = unique_name(f"{RELEASE}-operator")
    args = podman_run_args(dep, PodEnvironment(pod_name=name, namespace=NAMESPACE,
                                               kubernetes_service=(api.host, api.port or 443), service_account_dir=sa_dir,
                                               volume_dir=tmp_path / "volumes"),
                           image_user=_image_user(operator_image))
    assert args[args.index("--user") + 1] == "10001:10001"  # the chart's runAsUser, the image's USER too
    container = Container.start(args)
    installed("create", "namespace", WORKLOAD_NS, check=False)
    try:
        try:
            eventually(lambda: container.answers(f"http://127.0.0.1:{health_port}/healthz"),
                       90, 1.0, "the operator's liveness probe (/healthz on the chart's health port)")
            installed.apply([sample_pool_copy(POOL)])
            installed.apply([sample_internal_model_on(POOL, MODEL, WORKLOAD_NS)])
            obj = eventually(lambda: _placed(installed), 120, 1.0, "RecModelDeployment Placed=True")
        except (AssertionError, httpx.HTTPError) as exc:
            raise AssertionError(f"{exc}\noperator container log:\n{container.logs()}") from None
        assert [p["pool"] for p in obj["status"]["placements"]] == [POOL]
        assert installed.items("deployments", namespace=WORKLOAD_NS, selector=f"hybridrec.io/model={MODEL}")
        lease = installed.get("lease", "hybridrec", namespace=NAMESPACE)
        assert lease and lease["spec"].get("holderIdentity", "").startswith(f"{name}_"), lease  # POD_NAME (downward API)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert metrics.status_code == 200 and "hybridrec_" in metrics.text
        _check_confinement(container, 10001)
        logs = container.logs(400)
        assert "Forbidden" not in logs, logs
        # A pod's stop: SIGTERM, and kopf exits cleanly within the grace period.
        assert container.terminate() == 0, container.logs()
    finally:
        container.remove()
        installed("delete", "rmd", MODEL, "-n", WORKLOAD_NS, "--ignore-not-found", "--wait=false", check=False)
        installed("delete", "namespace", WORKLOAD_NS, "--ignore-not-found", "--wait=true", "--timeout=120s", check=False)
        installed("delete", "computepool", POOL, "--ignore-not-found", check=False)


def test_operator_image_holds_only_the_operator(operator_image: str) -> None:
    """Neither torch nor the local stack (the Dockerfile checks it too; this checks the image that was shipped)."""
    proc = images_sh("run", "--rm", "--network", "none", "--entrypoint", "python", operator_image, "-c",
                     "import importlib.util as u; print([m for m in ('torch', 'hybridrec_local', 'hybridrec_server') "
                     "if u.find_spec(m)])")
    assert proc.stdout.strip() == "[]"
    size = image_size(operator_image)
    print(f"operator image {operator_image}: {size / 1e6:.0f} MB")
    assert size < 1_000_000_000, f"the operator image grew to {size / 1e6:.0f} MB"


# ---------------------------------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    s3 = MotoS3(tmp_path_factory.mktemp("images-s3")).start()
    try:
        s3.push_small_artifact()
        yield s3
    finally:
        s3.stop()


def test_server_image_serves_as_the_operator_renders_it(server_image: str, moto: MotoS3, tmp_path: Path) -> None:
    port = free_port()
    pools = [d for d in yaml.safe_load_all((ROOT / "manifests" / "samples" / "pools.yaml").read_text()) if d]
    pool = parse_pool(next(p for p in pools if p["metadata"]["name"] == "onprem-t4"))
    rmd = parse_rmd({"metadata": {"name": MODEL, "namespace": WORKLOAD_NS}, "spec": {
        "model": {"uri": moto.uri, "architecture": "two-tower", "sha256": moto.sha256},
        "dataSensitivity": "internal", "serving": {"port": port, "maxBatchSize": 8, "maxBatchDelayMs": 2}}})
    dep = build_deployment(rmd, pool, 1)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == server_image
    name = unique_name(f"{MODEL}-{pool.name}")
    # The S3 endpoint and credentials are not in the Deployment: a cluster gives them through the node's (or the
    # workload's) identity; here moto's.
    env = PodEnvironment(pod_name=name, namespace=WORKLOAD_NS, extra_env=moto.env, volume_dir=tmp_path / "volumes")
    container = Container.start(podman_run_args(dep, env, image_user=_image_user(server_image)))
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            ready = eventually(lambda: container.answers(f"{url}/readyz"), 180, 1.0,
                               "the server's /readyz (model pulled from S3 and loaded)")
        except (AssertionError, httpx.HTTPError) as exc:
            raise AssertionError(f"{exc}\nserver container log:\n{container.logs()}") from None
        assert ready
        assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
        config = json.loads((moto.artifact_dir / "config.json").read_text())  # type: ignore[operator]
        user = config["user_ids"][0]
        rec = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 5}, timeout=30)
        assert rec.status_code == 200, rec.text
        body = rec.json()
        assert body["model"] == MODEL and len(body["items"]) == 5 and body["fallback"] is False
        assert "hybridrec" in httpx.get(f"{url}/metrics", timeout=5).text
        _check_confinement(container, 10001)
        # The model landed in the cache emptyDir, the only writable place besides /tmp.
        assert list((tmp_path / "volumes" / "model-cache").iterdir())
        code = container.terminate(timeout_s=dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] + 30)
        assert code == 0, container.logs()
    finally:
        container.remove()


# ---------------------------------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("which", ["operator", "server"])
def test_no_build_secret_in_any_layer(which: str, request: pytest.FixtureRequest) -> None:
    """The host CA bundle is mounted into builds (pip behind an intercepting proxy) but never lands in a layer, nor do
    the machine's AWS keys or the test S3 credentials, nor key material or pip/AWS configuration files."""
    image = request.getfixturevalue(f"{which}_image")
    import certifi

    public_roots = [Path(certifi.where()), Path("/usr/share/ca-certificates")]
    ca = {f"host private CA #{i}": n for i, n in enumerate(private_ca_needles(HOST_CA, public_roots))}
    needles: dict[str, bytes] = {}
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(var, "")
        if len(value) >= 12 and value != FAKE_AWS.get(var):
            needles[f"${var}"] = value.encode()
    aws_credentials = Path.home() / ".aws" / "credentials"
    if aws_credentials.is_file():
        for m in re.finditer(r"^\s*aws_secret_access_key\s*=\s*(\S+)", aws_credentials.read_text(), re.M):
            needles["~/.aws/credentials secret"] = m.group(1).encode()
    forbidden = [r"^/run/host-ca\.crt$", r"/\.aws/", r"(^|/)pip\.conf$", r"/\.netrc$", r"/\.docker/config\.json$",
                 r"^/root/\.cache/"]
    findings = scan_for(image, needles, ca, forbidden)
    assert not findings, "\n".join(findings[:20])
    print(f"{which}: {len(ca)} private CA certificates and {len(needles)} keys looked for, none found")


def test_a_failed_build_stops_with_the_build_output(tmp_path: Path) -> None:
    """A Dockerfile step that fails: hack/images.sh exits at once with the failing step's output, no timeout."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE} AS build\n"
                   "RUN echo 'hybridrec-build-failure-marker' && exit 3\nFROM ${PYTHON_IMAGE}\n")
    proc = subprocess.run(["bash", str(ROOT / "hack" / "images.sh"), "build", "operator"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HYBRIDREC_OPERATOR_DOCKERFILE": str(bad)})
    assert proc.returncode != 0
    assert "hybridrec-build-failure-marker" in proc.stderr and "failed" in proc.stderr, proc.stderr[-2000:]
