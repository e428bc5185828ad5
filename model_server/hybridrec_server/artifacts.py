"""Model artifacts: a flat directory (or S3 prefix) holding ``config.json``, ``model.safetensors`` and
``manifest.json`` (sha256 + size of every other file).

Integrity rules, enforced by :func:`read_verified` for every load path:

* the manifest must exist, parse, and (optionally) hash to the pinned ``HYBRIDREC_MODEL_SHA256``;
* every listed file must exist with exactly the listed size and sha256, and no unlisted file may be present;
* pickled weights are refused by name (.pt/.pth/.pkl/.bin/...), by pickle magic bytes and by the torch
  zip signature, and the weights must parse as safetensors;
* files are read once into memory and the verified bytes are what gets deserialised, so a file
  swapped after verification is never loaded.

S3 pushes upload the manifest last (a reader that sees a manifest sees a complete artifact); pulls
download into a temporary sibling directory, verify, then rename into place, so a failed pull
leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

MANIFEST_NAME = "manifest.json"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MANIFEST_FORMAT = "hybridrec-artifact/1"
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib"})
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class ArtifactError(Exception):
    """An artifact cannot be used. ``path`` names the offending file (or the artifact itself)."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(f"{path}: {message}" if path is not None else message)
        self.reason = message
        self.path = str(path) if path is not None else None

    def at(self, path: str | os.PathLike[str]) -> "ArtifactError":
        """The same error, re-anchored to a fuller path (e.g. the S3 key or the file in its directory)."""
        return type(self)(self.reason, path)


class ArtifactIntegrityError(ArtifactError):
    """A file is missing, truncated, tampered with or unexpected."""


class PickleRefusedError(ArtifactError):
    """A file is (or is named like) a pickle; pickles execute code on load, so they are never loaded."""


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def build_manifest(files: Mapping[str, bytes]) -> bytes:
    """Canonical manifest bytes for the given file contents (sorted keys: the hash is reproducible)."""
    entries = {name: {"sha256": sha256_hex(data), "size": len(data)} for name, data in files.items()}
    doc = {"format": MANIFEST_FORMAT, "files": dict(sorted(entries.items()))}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def pickle_signature(head: bytes) -> str | None:
    """Describe why ``head`` (the first bytes of a file) looks like a pickle or torch archive, else None."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"pickle protocol {head[1]} header"
    if head[:4] == b"PK\x03\x04":
        return "zip archive (torch.save format)"
    return None


def check_safetensors(data: bytes, name: str) -> None:
    """Raise unless ``data`` starts with a well-formed safetensors JSON header."""
    sniff = pickle_signature(data[:8])
    if len(data) < 10:
        raise ArtifactIntegrityError("too short to be a safetensors file", name)
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len == 0 or header_len > MAX_SAFETENSORS_HEADER or 8 + header_len > len(data):
        if sniff:
            raise PickleRefusedError(f"refusing pickled weights ({sniff})", name)
        raise ArtifactIntegrityError("not a safetensors file (bad header length)", name)
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        if sniff:
            raise PickleRefusedError(f"refusing pickled weights ({sniff})", name) from None
        raise ArtifactIntegrityError("not a safetensors file (header is not JSON)", name) from None
    if not isinstance(header, dict):
        raise ArtifactIntegrityError("not a safetensors file (header is not an object)", name)


def _check_name(name: str) -> None:
    """Manifest entries must be plain file names: no directories, no traversal."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or name == MANIFEST_NAME:
        raise ArtifactIntegrityError("invalid file name in manifest", name)


def _refuse_pickle_name(name: str) -> None:
    if Path(name).suffix.lower() in PICKLE_SUFFIXES:
        raise PickleRefusedError("refusing pickle-format file (by suffix); use safetensors", name)


def parse_manifest(data: bytes, expected_sha256: str | None = None) -> dict[str, dict[str, Any]]:
    """Validate manifest bytes (and the optional pin) and return ``{name: {sha256, size}}``."""
    if expected_sha256:
        actual = sha256_hex(data)
        if actual != expected_sha256.lower():
            raise ArtifactIntegrityError(
                f"sha256 {actual} does not match pinned HYBRIDREC_MODEL_SHA256 {expected_sha256}",
                MANIFEST_NAME,
            )
    try:
        doc = json.loads(data)
        files = doc["files"]
        if doc.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
        out = {str(n): {"sha256": str(e["sha256"]), "size": int(e["size"])} for n, e in files.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactIntegrityError(f"malformed manifest ({exc})", MANIFEST_NAME) from None
    for name in out:
        _check_name(name)
        _refuse_pickle_name(name)
    for required in (CONFIG_NAME, WEIGHTS_NAME):
        if required not in out:
            raise ArtifactIntegrityError(f"manifest does not list {required}", MANIFEST_NAME)
    return out


def verify_file_bytes(name: str, data: bytes, entry: Mapping[str, Any]) -> None:
    """Check one file's bytes against its manifest entry and refuse pickles by content."""
    if len(data) != entry["size"]:
        kind = "truncated" if len(data) < entry["size"] else "size mismatch"
        raise ArtifactIntegrityError(f"{kind}: expected {entry['size']} bytes, found {len(data)}", name)
    actual = sha256_hex(data)
    if actual != entry["sha256"]:
        raise ArtifactIntegrityError(f"sha256 mismatch: manifest {entry['sha256']}, file {actual}", name)
    if name.endswith(".safetensors"):
        check_safetensors(data, name)
    else:
        sniff = pickle_signature(data[:8])
        if sniff:
            raise PickleRefusedError(f"refusing pickle content ({sniff})", name)


@dataclass(frozen=True)
class VerifiedArtifact:
    """The verified contents of an artifact, held in memory."""

    directory: Path
    manifest_sha256: str
    config: dict[str, Any]
    weights: bytes


def read_verified(directory: str | os.PathLike[str], expected_sha256: str | None = None) -> VerifiedArtifact:
    """Read and verify a local artifact directory; raise :class:`ArtifactError` naming the bad file."""
    root = Path(directory)
    if not root.is_dir():
        raise ArtifactIntegrityError("artifact directory does not exist", root)
    manifest_path = root / MANIFEST_NAME
    try:
        manifest_bytes = manifest_path.read_bytes()
    except FileNotFoundError:
        raise ArtifactIntegrityError("missing manifest.json: refusing an unverifiable artifact", manifest_path) from None
    entries = parse_manifest(manifest_bytes, expected_sha256)
    present = {p.name for p in root.iterdir()} - {MANIFEST_NAME}
    for extra in sorted(present - set(entries)):
        _refuse_pickle_name(extra)
        raise ArtifactIntegrityError("file is not listed in manifest.json", root / extra)
    contents: dict[str, bytes] = {}
    for name, entry in entries.items():
        try:
            data = (root / name).read_bytes()
        except FileNotFoundError:
            raise ArtifactIntegrityError("missing file listed in manifest.json", root / name) from None
        try:
            verify_file_bytes(name, data, entry)
        except ArtifactError as exc:
            raise exc.at(root / name) from None
        contents[name] = data
    try:
        config = json.loads(contents[CONFIG_NAME])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactIntegrityError(f"config is not JSON ({exc})", root / CONFIG_NAME) from None
    return VerifiedArtifact(root, sha256_hex(manifest_bytes), config, contents[WEIGHTS_NAME])


def write_artifact(dest: str | os.PathLike[str], config: Mapping[str, Any], weights: bytes) -> Path:
    """Write config, weights and manifest into ``dest`` (created; must not hold another artifact)."""
    check_safetensors(weights, WEIGHTS_NAME)
    files = {
        CONFIG_NAME: (json.dumps(dict(config), indent=1, sort_keys=True) + "\n").encode(),
        WEIGHTS_NAME: weights,
    }
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    # written last, as on S3: a directory with a manifest is complete
    (root / MANIFEST_NAME).write_bytes(build_manifest(files))
    return root


def place_atomically(staging: Path, dest: Path) -> Path:
    """Move a fully verified staging directory to ``dest``, replacing whatever was there.

    Tolerates concurrent pullers of the same artifact (several servers sharing a cache dir): whoever
    loses the final rename discards its staging copy, since the winner's copy was verified too.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staging, dest)  # dest absent or an empty directory
        return dest
    except OSError:
        pass
    old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(dest, old)
    except FileNotFoundError:
        pass
    try:
        os.replace(staging, dest)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix/`` split into parts; ``prefix`` is empty or ends with '/'."""

    bucket: str
    prefix: str

    def key(self, name: str) -> str:
        """Object key of a file in this artifact."""
        return f"{self.prefix}{name}"


def parse_s3_uri(uri: str) -> S3Location:
    """Parse ``s3://bucket/some/prefix`` (a trailing slash is implied)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    prefix = parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Location(parsed.netloc, prefix)


def s3_client(endpoint_url: str | None = None) -> Any:
    """boto3 S3 client on the standard credential chain; ``AWS_ENDPOINT_URL`` is honoured by boto3 itself."""
    import boto3
    from botocore.config import Config

    custom = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    # S3-compatible stores on custom endpoints (moto, MinIO, Ceph) want path-style addressing.
    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"} if custom else {},
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def push(src: str | os.PathLike[str], uri: str, endpoint_url: str | None = None, client: Any = None) -> str:
    """Verify a local artifact, upload its files, then the manifest last. Returns the manifest sha256."""
    artifact_dir = Path(src)
    verified = read_verified(artifact_dir)
    loc = parse_s3_uri(uri)
    s3 = client or s3_client(endpoint_url)
    manifest_bytes = (artifact_dir / MANIFEST_NAME).read_bytes()
    for name in parse_manifest(manifest_bytes):
        s3.put_object(Bucket=loc.bucket, Key=loc.key(name), Body=(artifact_dir / name).read_bytes())
    s3.put_object(Bucket=loc.bucket, Key=loc.key(MANIFEST_NAME), Body=manifest_bytes)
    return verified.manifest_sha256


def _get_object(s3: Any, loc: S3Location, name: str) -> bytes:
    from botocore.exceptions import ClientError

    try:
        return s3.get_object(Bucket=loc.bucket, Key=loc.key(name))["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"NoSuchKey", "404", "NoSuchBucket"}:
            raise ArtifactIntegrityError(f"object not found ({code})", f"s3://{loc.bucket}/{loc.key(name)}") from None
        raise


def pull(
    uri: str,
    dest: str | os.PathLike[str],
    endpoint_url: str | None = None,
    expected_sha256: str | None = None,
    client: Any = None,
) -> Path:
    """Download an artifact into a temporary sibling of ``dest``, verify it, then move it into place.

    On any failure the staging directory is removed and ``dest`` is left untouched.
    """
    return pull_verified(uri, dest, endpoint_url, expected_sha256, client).directory


def pull_verified(
    uri: str,
    dest: str | os.PathLike[str],
    endpoint_url: str | None = None,
    expected_sha256: str | None = None,
    client: Any = None,
) -> VerifiedArtifact:
    """:func:`pull`, returning the verified contents read from the staging copy (no re-read after the move)."""
    loc = parse_s3_uri(uri)
    s3 = client or s3_client(endpoint_url)
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.pull-", dir=target.parent))
    try:
        manifest_bytes = _get_object(s3, loc, MANIFEST_NAME)
        entries = parse_manifest(manifest_bytes, expected_sha256)
        for name, entry in entries.items():
            data = _get_object(s3, loc, name)
            try:
                verify_file_bytes(name, data, entry)
            except ArtifactError as exc:
                raise exc.at(f"s3://{loc.bucket}/{loc.key(name)}") from None
            (staging / name).write_bytes(data)
        (staging / MANIFEST_NAME).write_bytes(manifest_bytes)
        verified = read_verified(staging, expected_sha256)
        placed = place_atomically(staging, target)
        return VerifiedArtifact(placed, verified.manifest_sha256, verified.config, verified.weights)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _cache_slot(uri: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    """One directory per URI under the cache: a re-pull of the same URI replaces the old copy atomically."""
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "hybridrec-model-cache"
    return cache / hashlib.sha256(uri.encode()).hexdigest()[:16]


def fetch_verified(
    uri: str,
    cache_dir: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
    endpoint_url: str | None = None,
) -> VerifiedArtifact:
    """Verified contents of ``HYBRIDREC_MODEL_URI`` (S3 pulls go through the cache dir)."""
    if urlparse(uri).scheme == "s3":
        return pull_verified(uri, _cache_slot(uri, cache_dir), endpoint_url, expected_sha256)
    return read_verified(resolve_model_uri(uri), expected_sha256)


def resolve_model_uri(
    uri: str,
    cache_dir: str | os.PathLike[str] | None = None,
    expected_sha256: str | None = None,
    endpoint_url: str | None = None,
) -> Path:
    """Turn ``HYBRIDREC_MODEL_URI`` into a local artifact directory (pulling from S3 into the cache)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return pull(uri, _cache_slot(uri, cache_dir), endpoint_url=endpoint_url, expected_sha256=expected_sha256)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme in {"", None}:
        return Path(uri)
    raise ValueError(f"unsupported model URI scheme {parsed.scheme!r} in {uri!r} (use s3://, file:// or a path)")
