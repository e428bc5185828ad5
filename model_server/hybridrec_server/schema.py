"""The /v1 wire format: request and response models, strict body parsing and the documented error responses.

Kept apart from the app factory (``app.py``) so the routes read as routes; the Open Inference Protocol's format is in
``v2.py``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException



def _id_from_int(value: Any) -> Any:
    """Accept integer ids (MovieLens-style) as strings; everything else must already be a string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Id = Annotated[
    StrictStr,
    BeforeValidator(_id_from_int),
    Field(min_length=1, max_length=256, description="User or item id (string; integers accepted)"),
]
# List elements are validated natively (no Python call per id: 256 x 10,000 ids took ~1 s of validation holding the
# interpreter lock); integers are turned into strings by one call per list instead.
ItemIds = list[Annotated[StrictStr, Field(min_length=1, max_length=256)]]
MAX_LIST = 10_000
MAX_BATCH_REQUESTS = 256
#: Paths counted in the request metrics (probes and scrapes are not traffic); the V2 infer path, which holds the
#: model name, is added per app (``v2_infer``).
API_ENDPOINTS: dict[str, str] = {"/v1/recommend": "recommend", "/v1/recommend:batch": "recommend_batch"}
#: Bodies up to this size are parsed on the event loop: a thread hop costs more than parsing them (~50 us against
#: a few us), and a 4 KiB parse cannot hold the loop long enough to matter to /healthz; larger ones go to a thread.
INLINE_PARSE_BYTES = 4096


def _not_text(value: str) -> bool:
    """True when ``value`` cannot be UTF-8 (a lone UTF-16 surrogate from a ``\\ud800`` JSON escape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _ids_from_ints(value: Any) -> Any:
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


class RecommendRequest(BaseModel):
    """Top-k recommendations for one user."""

    model_config = ConfigDict(extra="forbid")
    user_id: Id
    k: int = Field(10, ge=1, le=100, description="How many items to return (1..100)")
    candidates: Annotated[ItemIds | None, BeforeValidator(_ids_from_ints)] = Field(
        None, max_length=MAX_LIST, description="Rank only these items (string ids; integers accepted)"
    )
    exclude: Annotated[ItemIds | None, BeforeValidator(_ids_from_ints)] = Field(
        None, max_length=MAX_LIST, description="Never return these items (string ids; integers accepted)"
    )
    history: Annotated[ItemIds | None, BeforeValidator(_ids_from_ints)] = Field(
        None,
        max_length=MAX_LIST,
        description="Sequence models: the user's recent items, oldest first (overrides the stored history of "
        "user_id; only the most recent window is used; unknown ids are skipped and counted). Ignored by id models.",
    )

    @field_validator("user_id")
    @classmethod
    def _user_id_is_text(cls, value: str) -> str:
        if _not_text(value):
            raise PydanticCustomError("invalid_id", "not valid text: it holds a lone UTF-16 surrogate")
        return value

    @field_validator("candidates", "exclude", "history")
    @classmethod
    def _ids_are_text(cls, value: list[str] | None) -> list[str] | None:
        # One encode of the joined list (fast path); the index is looked up only when it fails.
        if value and _not_text("".join(value)):
            index = next(i for i, v in enumerate(value) if _not_text(v))
            raise PydanticCustomError(
                "invalid_id", "item [{index}] is not valid text: it holds a lone UTF-16 surrogate", {"index": index}
            )
        return value


class BatchRecommendRequest(BaseModel):
    """Several recommendation requests in one call."""

    model_config = ConfigDict(extra="forbid")
    requests: list[RecommendRequest] = Field(..., min_length=1, max_length=MAX_BATCH_REQUESTS)


class _BatchEnvelope(BaseModel):
    """The batch body without its entries: they are validated one by one (see ``parse_batch``)."""

    model_config = ConfigDict(extra="forbid")
    requests: list[Any] = Field(..., min_length=1, max_length=MAX_BATCH_REQUESTS)


# ------------------------------------------------------------------------------------------ request parsing
# Bodies are parsed and validated on a worker thread in steps of one request each, never on the event loop: a
# 256 x 10,000-candidate batch used to hold the loop ~2.5 s and /healthz with it (issue 9 item 8).


def _errors_at(exc: ValidationError, *prefix: Any) -> RequestValidationError:
    return RequestValidationError(
        [{**err, "loc": (*prefix, *err["loc"])} for err in exc.errors(include_url=False, include_input=False)]
    )


def load_json(raw: bytes) -> Any:
    """The JSON document of a body; undecodable bytes or bad JSON are a 422 on ``body``, never a 400/500."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.start), "msg": f"body is not valid UTF-8 (byte {exc.start})"}]
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": f"JSON decode error: {exc.msg}"}]
        ) from None


def parse_single(raw: bytes) -> RecommendRequest:
    try:
        return RecommendRequest.model_validate(load_json(raw))
    except ValidationError as exc:
        raise _errors_at(exc, "body") from None


def parse_batch(raw: bytes) -> list[RecommendRequest]:
    try:
        envelope = _BatchEnvelope.model_validate(load_json(raw))
    except ValidationError as exc:
        raise _errors_at(exc, "body") from None
    out = []
    for i, item in enumerate(envelope.requests):
        try:
            out.append(RecommendRequest.model_validate(item))
        except ValidationError as exc:
            raise _errors_at(exc, "body", "requests", i) from None
    return out


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its ``$defs`` references inlined (for ``openapi_extra``)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _inline_defs(model.model_json_schema())}}}}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 beyond ``limit`` bytes (before reading it when the length is declared)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise StarletteHTTPException(413, f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise StarletteHTTPException(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    model: str
    version: str
    user_id: str
    items: list[ScoredItem]
    fallback: bool = Field(description="True when the user is unknown and popular items were served")


class BatchRecommendResponse(BaseModel):
    responses: list[RecommendResponse]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (422, "invalid request (field named in error.field) or unknown candidate items"),
        (429, "queue full; retry after the Retry-After header"),
        (503, "model not ready or server shutting down"),
    )
}
