"""Per-epoch training checkpoints, so a trainer killed mid-run (spot reclaim) resumes instead of starting over.

After each epoch ``train.train_and_evaluate`` saves, through a ``CheckpointStore`` (a directory or an S3 prefix):

* ``epoch-NNNN.safetensors``: every tensor: the model (``model/...``), the best-so-far model (``best/...``), the
  optimiser's state (``optim/<param>/<key>``) and the random generators (``rng/generator``, ``rng/torch``), so a
  resumed run draws the same batches and dropout masks as an uninterrupted one;
* ``latest.json`` **last**: the pointer: the epoch, the tensors file's name and sha256, the best epoch and its
  validation HR@10, the history, whether early stopping ended training, the optimiser's non-tensor state, and a
  fingerprint of what was trained (architecture, seed, sizes, hyper-parameters, a hash of the training split).

Writing the pointer last makes a checkpoint atomic: a trainer killed while writing the tensors leaves the previous
pointer, which still names the previous (complete) file; that file is deleted only after the new pointer is written.
On start the trainer reads the pointer; a missing, unreadable or mismatched checkpoint (other data, other
architecture, a sha256 that does not match, a file that is not safetensors) is ignored with a warning and training
starts from epoch 1: a bad checkpoint costs time, never the run. No pickle is ever read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)
POINTER_NAME = "latest.json"
FORMAT = 1


class CheckpointStore(Protocol):
    """Where checkpoints live: named blobs; ``put`` of one name is atomic (readers see the old or the new bytes)."""

    where: str

    def get(self, name: str) -> bytes | None: ...

    def put(self, name: str, data: bytes) -> None: ...

    def delete(self, name: str) -> None: ...


@dataclass
class DirStore:
    """Checkpoints in a local directory (tests, ``hybridrec train``); each file is replaced atomically."""

    root: Path

    @property
    def where(self) -> str:
        return str(self.root)

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, self.root / name)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)


@dataclass
class S3Store:
    """Checkpoints under an S3 prefix (a PUT is atomic per object)."""

    client: Any
    bucket: str
    prefix: str  # ends with "/"

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def get(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in {"NoSuchKey", "404", "NoSuchBucket"}:
                return None
            raise

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)


@dataclass
class TrainState:
    """Everything the epoch loop needs to go on after ``epoch`` as if it had never stopped."""

    epoch: int
    model: dict[str, Any]
    optimiser: dict[str, Any]  # torch optimiser state_dict
    best_hr: float
    best_epoch: int
    best_model: dict[str, Any]
    history: list[dict[str, float]]
    stopped: bool  # early stopping ended training at ``epoch``
    generator_state: Any  # torch.Generator.get_state()
    torch_rng_state: Any  # torch.get_rng_state()
    fingerprint: dict[str, Any] = field(default_factory=dict)


def _tensor_file_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}.safetensors"


def _encode(state: TrainState) -> tuple[bytes, dict[str, Any]]:
    """(safetensors bytes, the JSON-able rest of the optimiser state) of a state."""
    import torch
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for prefix, sd in (("model/", state.model), ("best/", state.best_model)):
        for name, t in sd.items():
            tensors[prefix + name] = t.detach().cpu().clone().contiguous()
    optim_scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state.optimiser["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = value.detach().cpu().clone().contiguous()
            else:
                optim_scalars.setdefault(str(pid), {})[key] = value
    tensors["rng/generator"] = state.generator_state.clone()
    tensors["rng/torch"] = state.torch_rng_state.clone()
    rest = {"optim_scalars": optim_scalars, "param_groups": state.optimiser["param_groups"]}
    return save(tensors), rest


class EpochCheckpoints:
    """Save and find the latest complete per-epoch checkpoint in a store."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store

    def save(self, state: TrainState) -> None:
        data, rest = _encode(state)
        name = _tensor_file_name(state.epoch)
        previous = self._pointer_file()
        self.store.put(name, data)
        pointer = {
            "format": FORMAT, "epoch": state.epoch, "file": name, "sha256": hashlib.sha256(data).hexdigest(),
            "bestHitRateAt10": state.best_hr, "bestEpoch": state.best_epoch, "history": state.history,
            "stopped": state.stopped, "fingerprint": state.fingerprint, **rest,
        }
        self.store.put(POINTER_NAME, json.dumps(pointer, sort_keys=True).encode())  # last: the checkpoint is complete
        if previous and previous != name:
            try:
                self.store.delete(previous)
            except Exception as exc:  # noqa: BLE001 - a leftover file wastes space, nothing else
                log.warning("could not delete the old checkpoint %s/%s: %s", self.store.where, previous, exc)
        log.info("checkpoint of epoch %d written to %s", state.epoch, self.store.where)

    def _pointer_file(self) -> str | None:
        try:
            raw = self.store.get(POINTER_NAME)
            return str(json.loads(raw)["file"]) if raw else None
        except Exception:  # noqa: BLE001 - an unreadable pointer names nothing to delete
            return None

    def load(self, fingerprint: dict[str, Any]) -> TrainState | None:
        """The latest complete checkpoint made for this ``fingerprint``, or None (logged when one was unusable)."""
        try:
            return self._load(fingerprint)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with a checkpoint, training from scratch works
            log.warning("ignoring the checkpoint at %s, training from epoch 1: %s", self.store.where, exc)
            return None

    def _load(self, fingerprint: dict[str, Any]) -> TrainState | None:
        import torch
        from safetensors.torch import load

        raw = self.store.get(POINTER_NAME)
        if raw is None:
            return None
        pointer = json.loads(raw)
        if pointer.get("format") != FORMAT:
            raise ValueError(f"format {pointer.get('format')!r}, this trainer reads {FORMAT}")
        if pointer.get("fingerprint") != fingerprint:
            raise ValueError("it was made for other data, architecture or hyper-parameters")
        data = self.store.get(str(pointer["file"]))
        if data is None:
            raise ValueError(f"{pointer['file']} is missing")
        if hashlib.sha256(data).hexdigest() != pointer["sha256"]:
            raise ValueError(f"{pointer['file']} does not match the sha256 its pointer records")
        tensors = load(data)  # safetensors: raises on anything that is not a well-formed file
        model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
        best = {k[len("best/"):]: v for k, v in tensors.items() if k.startswith("best/")}
        optim_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, pid, name = key.split("/", 2)
                optim_state.setdefault(int(pid), {})[name] = value
        for pid, scalars in pointer.get("optim_scalars", {}).items():
            optim_state.setdefault(int(pid), {}).update(scalars)
        return TrainState(
            epoch=int(pointer["epoch"]), model=model, best_model=best,
            optimiser={"state": optim_state, "param_groups": pointer["param_groups"]},
            best_hr=float(pointer["bestHitRateAt10"]), best_epoch=int(pointer["bestEpoch"]),
            history=list(pointer["history"]), stopped=bool(pointer["stopped"]),
            generator_state=tensors["rng/generator"].to(torch.uint8), torch_rng_state=tensors["rng/torch"].to(torch.uint8),
            fingerprint=fingerprint,
        )
