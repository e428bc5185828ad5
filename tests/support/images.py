"""hybridrec's container images for the tests: built by ``hack/images.sh`` (podman, no Docker engine, no registry) and
started from a rendered Kubernetes Deployment, translated field by field into ``podman run`` flags, so a test runs the
image exactly as the chart (or the operator, for model servers) tells the kubelet to.

The translation refuses any pod or container field it does not know (a new field in the chart fails the test rather
than being silently left out); fields with no meaning on one machine (probes, resource *requests*, node placement) are
listed in :data:`NOT_TRANSLATED` and left to the test, which checks the probes itself.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES_SH = ROOT / "hack" / "images.sh"
# A cold server build downloads CUDA torch (several GB): far above a test's usual timeout, but finite.
BUILD_TIMEOUT_S = 2400.0

# Fields of a pod or container spec that say nothing about how the process runs on one machine.
NOT_TRANSLATED = frozenset({
    "name", "imagePullPolicy", "ports", "livenessProbe", "readinessProbe", "startupProbe", "terminationMessagePath",
    "terminationMessagePolicy", "resources",  # limits are translated separately (see _resources)
})
POD_NOT_TRANSLATED = frozenset({
    "serviceAccountName", "enableServiceLinks", "priorityClassName", "imagePullSecrets", "nodeSelector", "tolerations",
    "affinity", "containers", "volumes", "securityContext", "automountServiceAccountToken",
    "terminationGracePeriodSeconds",
})
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ImageBuildError(AssertionError):
    """``hack/images.sh build`` failed; the message ends with the build's last lines."""


def images_sh(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``hack/images.sh ARGS``; text output; raises AssertionError with its output when ``check`` and it fails."""
    proc = subprocess.run(["bash", str(IMAGES_SH), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"hack/images.sh {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def podman(*args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """podman with hack/images.sh's configuration (its image store, runc, cgroupfs)."""
    return images_sh("podman", *args, timeout=timeout, check=check)


def build(name: str) -> str:
    """Build (or reuse, see hack/images.sh) the ``operator`` or ``server`` image; its reference.

    A failed build fails the caller at once with the build's last lines: never a timeout further on.
    """
    try:
        proc = images_sh("build", name, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"hack/images.sh build {name} ran past {BUILD_TIMEOUT_S:.0f}s:\n{_tail(exc.stderr)}") from None
    if proc.returncode != 0:
        raise ImageBuildError(f"hack/images.sh build {name} failed (exit {proc.returncode}):\n{_tail(proc.stderr)}")
    return images_sh("tag", name).stdout.strip()


def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])


def image_size(image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


# ------------------------------------------------------------------------------------------- Deployment -> podman


@dataclass
class PodEnvironment:
    """What the kubelet supplies that a Deployment does not spell out: the pod's name and namespace (downward API),
    the API server's address, the ServiceAccount token directory, and extra environment (e.g. S3 credentials that a
    cluster gives through its node identity)."""

    pod_name: str
    namespace: str
    kubernetes_service: tuple[str, int] | None = None
    service_account_dir: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: Where disk-backed emptyDirs live on the host (one fresh directory per volume).
    volume_dir: Path | None = None


def _only(obj: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    unknown = set(obj) - known
    if unknown:
        raise AssertionError(f"{what} has fields the podman translation does not know: {sorted(unknown)}")


def _user(pod_sc: Mapping[str, Any], sc: Mapping[str, Any], image_user: str) -> tuple[int, int]:
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    if uid is None:  # the image's USER, as the kubelet would run it
        uid_s, _, gid_s = image_user.partition(":")
        assert uid_s.isdigit(), f"the image's USER {image_user!r} is not numeric: runAsNonRoot cannot verify it"
        uid, gid = int(uid_s), int(gid_s) if gid_s.isdigit() else gid
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        assert uid != 0, "runAsNonRoot with uid 0: the kubelet would refuse to start this container"
    return int(uid), int(gid if gid is not None else uid)


def _resources(resources: Mapping[str, Any]) -> list[str]:
    limits = resources.get("limits") or {}
    flags: list[str] = []
    if "memory" in limits:
        flags += ["--memory", _quantity_bytes(limits["memory"])]
    if "cpu" in limits:
        cpu = str(limits["cpu"])
        flags += ["--cpus", f"{int(cpu[:-1]) / 1000:g}" if cpu.endswith("m") else cpu]
    return flags  # extended resources (nvidia.com/gpu) need a device plugin: none on this machine


def _quantity_bytes(q: str | int) -> str:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", str(q))
    assert m, f"unsupported quantity {q!r}"
    return str(int(m.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[m.group(2)])


def podman_run_args(deployment: Mapping[str, Any], env: PodEnvironment, *, container: str | None = None,
                    image_user: str = "") -> list[str]:
    """``podman run`` arguments (after ``run``) starting the Deployment's container as its pod spec says.

    Host network (the pod's ports are the host's), the root filesystem read-only only when the spec says so and
    then with no implicit tmpfs (podman adds /tmp, /run otherwise), every volume an emptyDir (:func:`_empty_dir`), the
    ServiceAccount token directory mounted read-only when the pod automounts it.
    """
    pod = deployment["spec"]["template"]["spec"]
    _only(pod, POD_NOT_TRANSLATED, "the pod spec")
    [c] = [c for c in pod["containers"] if container is None or c["name"] == container]
    _only(c, NOT_TRANSLATED | {"image", "command", "args", "env", "securityContext", "volumeMounts"},
          f"container {c['name']}")
    pod_sc, sc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    _only(pod_sc, frozenset({"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"}), "pod securityContext")
    _only(sc, frozenset({"runAsNonRoot", "runAsUser", "runAsGroup", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
                         "privileged", "capabilities", "seccompProfile"}), "container securityContext")
    uid, gid = _user(pod_sc, sc, image_user)
    args = ["-d", "--name", env.pod_name, "--network", "host", "--user", f"{uid}:{gid}",
            "--stop-timeout", str(pod.get("terminationGracePeriodSeconds", 30))]
    if "fsGroup" in pod_sc:
        args += ["--group-add", str(pod_sc["fsGroup"])]
    if sc.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    assert not sc.get("privileged"), "privileged containers are not translated"
    caps = sc.get("capabilities") or {}
    _only(caps, frozenset({"drop", "add"}), "capabilities")
    args += [f"--cap-drop={'all' if d == 'ALL' else d}" for d in caps.get("drop", [])]
    args += [f"--cap-add={a}" for a in caps.get("add", [])]
    for seccomp in (pod_sc.get("seccompProfile"), sc.get("seccompProfile")):
        assert seccomp in (None, {"type": "RuntimeDefault"}), f"seccomp profile {seccomp} not translated"  # podman's default
    args += _resources(c.get("resources") or {})

    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in c.get("volumeMounts", []):
        vol = volumes[mount["name"]]
        _only(vol, frozenset({"name", "emptyDir"}), f"volume {vol['name']}")
        args += _empty_dir(vol["name"], vol["emptyDir"] or {}, mount["mountPath"], pod_sc.get("fsGroup"), env)

    if pod.get("automountServiceAccountToken"):
        assert env.service_account_dir is not None, "the pod mounts its ServiceAccount token: give service_account_dir"
        args += ["-v", f"{env.service_account_dir}:{SERVICE_ACCOUNT_DIR}:ro"]
    kube_env: dict[str, str] = {}
    if env.kubernetes_service is not None:  # the kubelet sets these in every container
        host, port = env.kubernetes_service
        kube_env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port)}
    for k, v in {**kube_env, **_container_env(c, env), **env.extra_env}.items():
        args += ["-e", f"{k}={v}"]
    if "command" in c:
        args += ["--entrypoint", json.dumps(c["command"])]
    args.append(c["image"])
    args += [str(a) for a in c.get("args", [])]
    return args


def _empty_dir(name: str, spec: Mapping[str, Any], path: str, fs_group: int | None, env: PodEnvironment) -> list[str]:
    """An emptyDir as the kubelet makes it: empty, world-writable (0777; with an fsGroup owned by that group, setgid).

    medium: Memory is a tmpfs (its sizeLimit the tmpfs size). A disk-backed one is a fresh host directory: podman 4.3
    gives a tmpfs over a directory of the image that directory's mode, not the one asked for, and cannot set a
    tmpfs's owner, so a tmpfs would not be writable the way an emptyDir is.
    """
    _only(spec, frozenset({"medium", "sizeLimit"}), f"emptyDir {name}")
    if spec.get("medium") == "Memory":
        opts = [f"destination={path}", "tmpfs-mode=1777"]
        if "sizeLimit" in spec:
            opts.append(f"tmpfs-size={_quantity_bytes(spec['sizeLimit'])}")
        return ["--mount", ",".join(["type=tmpfs", *opts])]
    assert env.volume_dir is not None, f"emptyDir {name} is disk-backed: give PodEnvironment.volume_dir"
    host = env.volume_dir / name
    host.mkdir(parents=True)
    host.chmod(0o777)
    if fs_group is not None:
        os.chown(host, -1, fs_group)
        host.chmod(0o2777)
    return ["-v", f"{host}:{path}:rw"]


def _container_env(c: Mapping[str, Any], env: PodEnvironment) -> dict[str, str]:
    fields = {"metadata.name": env.pod_name, "metadata.namespace": env.namespace}
    out: dict[str, str] = {}
    for var in c.get("env", []):
        if "value" in var:
            out[var["name"]] = str(var["value"])
        else:
            ref = var["valueFrom"]["fieldRef"]["fieldPath"]
            assert ref in fields, f"env {var['name']}: fieldRef {ref} not translated"
            out[var["name"]] = fields[ref]
    return out


def service_account_dir(path: Path, token: str, ca_crt: bytes, namespace: str) -> Path:
    """The projected ServiceAccount volume as a pod sees it: token, ca.crt, namespace (world-readable, as projected)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    for name, data in (("token", token.encode()), ("ca.crt", ca_crt), ("namespace", namespace.encode())):
        (path / name).write_bytes(data)
        (path / name).chmod(0o644)
    return path


@dataclass
class Container:
    """A container started with :func:`podman_run_args`; removed by :meth:`remove`."""

    name: str

    @classmethod
    def start(cls, args: Sequence[str]) -> Container:
        name = args[args.index("--name") + 1]
        podman("rm", "-f", "--ignore", name)
        podman("run", *args)
        return cls(name)

    def state(self) -> dict[str, Any]:
        [info] = json.loads(podman("container", "inspect", self.name).stdout)
        return info

    def running(self) -> bool:
        return bool(self.state()["State"]["Running"])

    def answers(self, url: str) -> bool:
        """GET ``url`` answers 200, as a kubelet probe sees it (refused: not yet); a container that exited fails at once
        with its log instead of waiting out the deadline."""
        import httpx

        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            if not self.running():
                pytest.fail(f"container {self.name} exited ({self.state()['State'].get('ExitCode')}):\n{self.logs()}")
            return False

    def logs(self, lines: int = 60) -> str:
        proc = podman("logs", "--tail", str(lines), self.name, check=False)
        return proc.stdout + proc.stderr

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, check=False)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, as the kubelet sends it; the exit code once the process ended."""
        podman("kill", "--signal", "TERM", self.name)
        return int(podman("wait", self.name, timeout=timeout_s).stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        podman("rm", "-f", "--ignore", "-t", "0", self.name, check=False)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# ------------------------------------------------------------------------------------------- secrets in layers


def layer_files(image: str) -> Iterator[tuple[str, str, bytes]]:
    """(layer, path, content) of every regular file in every layer of the image, then its config and history.

    Layers, not the merged filesystem: a secret added by one step and deleted by a later one is still in the image.
    They are read where podman keeps them unpacked (hack/images.sh's overlay store), which is much faster than
    exporting and decompressing an archive of several GB.
    """
    [info] = json.loads(podman("image", "inspect", image).stdout)
    data = info["GraphDriver"]["Data"]
    layers = [*reversed(data.get("LowerDir", "").split(":")), data["UpperDir"]]
    for layer in filter(None, layers):
        root = Path(layer)
        name = root.parent.name[:12]
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield name, "/" + str(path.relative_to(root)), path.read_bytes()
    yield "config", "image config", json.dumps(info.get("Config", {})).encode()
    yield "history", "image history", podman("history", "--no-trunc", "--format", "json", image).stdout.encode()


def private_ca_needles(host_bundle: Path, public: Sequence[Path]) -> list[bytes]:
    """A distinctive line of each certificate in the host's CA bundle that none of ``public`` (bundles or folders of
    .crt files: the distribution's and certifi's roots) holds, e.g. an intercepting proxy's CA: what must never be
    found in an image. Empty when the host trusts only public roots."""
    def blocks(text: bytes) -> set[bytes]:
        return set(re.findall(rb"-----BEGIN CERTIFICATE-----\s+(.*?)-----END CERTIFICATE-----", text, re.S))

    known: set[bytes] = set()
    for path in public:
        for f in ([path] if path.is_file() else sorted(path.rglob("*.crt")) if path.is_dir() else []):
            known |= blocks(f.read_bytes())
    needles = []
    for body in sorted(blocks(host_bundle.read_bytes() if host_bundle.is_file() else b"") - known):
        lines = [ln for ln in body.split() if len(ln) == 64]
        if lines:
            needles.append(lines[len(lines) // 2])
    return needles


def scan_for(image: str, needles: Mapping[str, bytes], pem_needles: Mapping[str, bytes] = {},
             forbidden_paths: Sequence[str] = ()) -> list[str]:
    """Findings: '<what> in layer <id>: <path>' for every needle found in a layer file (or the config/history), every
    PEM needle in a file holding PEM data, and every non-empty file whose path matches one of ``forbidden_paths``
    (regexes)."""
    findings: list[str] = []
    patterns = [re.compile(p) for p in forbidden_paths]
    for layer, path, data in layer_files(image):
        checks = dict(needles)
        if b"-----BEGIN" in data:  # certificates travel as PEM; one fast search spares the others on most files
            checks.update(pem_needles)
        findings += [f"{what} in layer {layer}: {path}" for what, needle in checks.items() if needle and needle in data]
        # An empty file is a build's mount point (podman build -v leaves one behind): it carries nothing.
        findings += [f"forbidden file in layer {layer}: {path}" for p in patterns if data and p.search(path)]
    return findings


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/support/images.py build operator
    import sys

    if sys.argv[1:2] == ["build"]:
        print(build(sys.argv[2]))
    else:
        pytest.exit("usage: images.py build operator|server")
