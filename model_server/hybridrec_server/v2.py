"""Open Inference Protocol (KServe V2, REST/JSON) for the recommender: tensors in, tensors out.

Pure functions (no HTTP): the app's ``/v2`` routes call them. The model's V2 signature:

inputs (at least one; both with the same batch size ``B``):
  ``user_id``  BYTES ``[B]`` or ``[B, 1]``: user ids (for sequence models: whose stored history to use)
  ``history``  BYTES ``[B, L]`` (sequence models only): recent item ids, oldest first; ``""`` is padding. Longer
               than the model's window -> the most recent items are kept; unknown ids are skipped and counted;
               a row of padding only means "no history given": the stored history of its user id is used.
request parameter ``k`` (int, 1..100, default 10): items per row.
outputs: ``item_ids`` BYTES ``[B, k]``, ``scores`` FP32 ``[B, k]``, ``fallback`` BOOL ``[B]``. A row with fewer than
``k`` items (a catalogue or popular list shorter than ``k``) is padded with ``""`` / ``0.0``.

Tensor data is accepted flat (row-major, as ``tritonclient`` sends it) or nested, or in the binary tensor data
extension (``Inference-Header-Content-Length``; BYTES elements as 4-byte little-endian length + UTF-8), which
``tritonclient`` uses by default. Responses are always JSON. Errors are ``{"error": "<message>"}``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import InvalidInputError, ModelNotFoundError

__all__ = [
    "InferRequest", "InvalidInputError", "ModelNotFoundError", "model_metadata", "parse_infer", "render_infer",
    "split_binary",
]

MAX_ROWS = 256
MAX_K = 100
DEFAULT_K = 10
INPUT_USER = "user_id"
INPUT_HISTORY = "history"
OUTPUTS = ("item_ids", "scores", "fallback")


@dataclass(frozen=True)
class InferRequest:
    """A decoded V2 inference request: one row per user."""

    request_id: str | None
    user_ids: list[str]
    histories: list[list[str]] | None
    k: int
    outputs: tuple[str, ...]


def model_metadata(name: str, version: str, sequential: bool) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the tensors this model takes and returns."""
    inputs = [{"name": INPUT_USER, "datatype": "BYTES", "shape": [-1]}]
    if sequential:
        inputs.append({"name": INPUT_HISTORY, "datatype": "BYTES", "shape": [-1, -1]})
    return {
        "name": name,
        "versions": [version] if version else [],
        "platform": "hybridrec_pytorch",
        "inputs": inputs,
        "outputs": [
            {"name": "item_ids", "datatype": "BYTES", "shape": [-1, -1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
            {"name": "fallback", "datatype": "BOOL", "shape": [-1]},
        ],
    }


def _flatten(data: Any, name: str) -> list[Any]:
    """Row-major elements of ``data`` (flat or nested lists)."""
    if not isinstance(data, list):
        raise InvalidInputError(f"input '{name}': data must be a list", name)
    if not any(isinstance(x, list) for x in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def _binary_bytes(blob: bytes, name: str) -> list[str]:
    """BYTES elements of the binary extension: each a 4-byte little-endian length and that many UTF-8 bytes."""
    out: list[str] = []
    pos = 0
    while pos < len(blob):
        if pos + 4 > len(blob):
            raise InvalidInputError(f"input '{name}': truncated binary element length", name)
        (size,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        if pos + size > len(blob):
            raise InvalidInputError(f"input '{name}': binary element overruns its data", name)
        try:
            out.append(blob[pos : pos + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidInputError(f"input '{name}': element {len(out)} is not valid UTF-8", name) from None
        pos += size
    return out


class _Binary:
    """The binary part of a request, handed out to inputs in order of appearance."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.pos = 0

    def take(self, size: Any, name: str) -> bytes:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or self.pos + size > len(self.blob):
            raise InvalidInputError(f"input '{name}': binary_data_size {size!r} exceeds the binary data sent", name)
        part = self.blob[self.pos : self.pos + size]
        self.pos += size
        return part


def _tensor(spec: Any, name: str, rank: tuple[int, ...], binary: _Binary) -> tuple[list[int], list[str]]:
    """Shape and string elements of one BYTES input; ``rank``: the accepted numbers of dimensions."""
    datatype = spec.get("datatype")
    if datatype != "BYTES":
        raise InvalidInputError(f"input '{name}': datatype {datatype!r}, expected 'BYTES'", name)
    params = spec.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise InvalidInputError(f"input '{name}': 'parameters' must be an object", name)
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) not in rank
    ):
        want = " or ".join(f"{r}-d" for r in rank)
        raise InvalidInputError(f"input '{name}': shape {shape!r} is invalid, expected {want} non-negative ints", name)
    if len(shape) == 2 and name == INPUT_USER and shape[1] != 1:
        raise InvalidInputError(f"input '{name}': shape {shape!r}, expected [B] or [B, 1]", name)
    if not 1 <= shape[0] <= MAX_ROWS:
        raise InvalidInputError(f"input '{name}': batch dimension {shape[0]} outside 1..{MAX_ROWS}", name)
    if "binary_data_size" in params:
        flat: list[Any] = _binary_bytes(binary.take(params["binary_data_size"], name), name)
    else:
        flat = _flatten(spec.get("data"), name)
    expected = 1
    for d in shape:
        expected *= d
    if len(flat) != expected:
        raise InvalidInputError(f"input '{name}': {len(flat)} elements do not fill shape {shape}", name)
    for i, x in enumerate(flat):
        if type(x) is not str:
            raise InvalidInputError(f"input '{name}': element {i} is {type(x).__name__}, expected a string", name)
        if len(x) > 256:
            raise InvalidInputError(f"input '{name}': element {i} longer than 256 characters", name)
    return shape, flat


def split_binary(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a body; ``header_length``: the ``Inference-Header-Content-Length`` header."""
    if header_length is None:
        return raw, b""
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise InvalidInputError(f"Inference-Header-Content-Length {header_length!r} is not a valid length", "body")
    n = int(header_length)
    return raw[:n], raw[n:]


def parse_infer(doc: Any, sequential: bool, binary: bytes = b"") -> InferRequest:
    """Validate a decoded V2 inference request body (and its binary part, if any) against the model's signature."""
    blobs = _Binary(binary)
    if not isinstance(doc, dict):
        raise InvalidInputError("request body must be a JSON object", "body")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError("'inputs' must be a non-empty list", "inputs")
    allowed = (INPUT_USER, INPUT_HISTORY) if sequential else (INPUT_USER,)
    seen: dict[str, dict[str, Any]] = {}
    for spec in inputs:
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            raise InvalidInputError("every input needs a string 'name'", "inputs")
        if name not in allowed:
            raise InvalidInputError(f"unknown input '{name}'; this model takes {', '.join(allowed)}", name)
        if name in seen:
            raise InvalidInputError(f"input '{name}' given twice", name)
        seen[name] = spec
    users: list[str] | None = None
    histories: list[list[str]] | None = None
    rows = 0
    if INPUT_USER in seen:
        shape, users = _tensor(seen[INPUT_USER], INPUT_USER, (1, 2), blobs)
        rows = shape[0]
    if INPUT_HISTORY in seen:
        shape, flat = _tensor(seen[INPUT_HISTORY], INPUT_HISTORY, (2,), blobs)
        if users is not None and shape[0] != rows:
            raise InvalidInputError(
                f"input '{INPUT_HISTORY}': batch dimension {shape[0]} differs from '{INPUT_USER}' ({rows})",
                INPUT_HISTORY,
            )
        rows, width = shape
        histories = [[x for x in flat[r * width : (r + 1) * width] if x] for r in range(rows)]
    if users is None:
        if not sequential:
            raise InvalidInputError(f"input '{INPUT_USER}' is required", INPUT_USER)
        users = [""] * rows
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInputError("'parameters' must be an object", "parameters")
    k = params.get("k", DEFAULT_K)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidInputError(f"parameter 'k' must be an integer in 1..{MAX_K}", "k")
    outputs = OUTPUTS
    requested = doc.get("outputs")
    if requested is not None:
        if not isinstance(requested, list):
            raise InvalidInputError("'outputs' must be a list", "outputs")
        names = [o.get("name") if isinstance(o, dict) else None for o in requested]
        for name in names:
            if name not in OUTPUTS:
                raise InvalidInputError(f"unknown output {name!r}; this model returns {', '.join(OUTPUTS)}", "outputs")
        outputs = tuple(dict.fromkeys(names)) or OUTPUTS  # type: ignore[arg-type]
    request_id = doc.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, users, histories, k, outputs)


def render_infer(
    model_name: str,
    version: str,
    request: InferRequest,
    rows: Sequence[tuple[Sequence[tuple[str, float]], bool]],
) -> bytes:
    """The V2 response body, serialised once: ``rows`` holds (items with scores, fallback) per request row."""
    k = request.k
    width = min(k, max((len(items) for items, _ in rows), default=0))
    ids: list[str] = []
    scores: list[float] = []
    for items, _ in rows:
        kept = items[:width]
        ids.extend(item for item, _ in kept)
        scores.extend(score for _, score in kept)
        pad = width - len(kept)
        if pad:
            ids.extend([""] * pad)
            scores.extend([0.0] * pad)
    b = len(rows)
    tensors = {
        "item_ids": {"name": "item_ids", "datatype": "BYTES", "shape": [b, width], "data": ids},
        "scores": {"name": "scores", "datatype": "FP32", "shape": [b, width], "data": scores},
        "fallback": {"name": "fallback", "datatype": "BOOL", "shape": [b], "data": [fb for _, fb in rows]},
    }
    doc: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request.request_id is not None:
        doc["id"] = request.request_id
    doc["outputs"] = [tensors[name] for name in request.outputs]
    return json.dumps(doc, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
