"""The ONE table mapping error types to HTTP status + stable error code, and the JSON error body.

Every error a client sees is ``{"error": {"code": ..., "message": ..., "field": ...}}``; codes are a
stable API (clients and alerts may match on them), messages are for humans. Unknown exceptions map
to 500 ``internal_error`` with a generic message: no traceback or exception text reaches a client.
The Open Inference Protocol routes (``/v2``) use the same table but the protocol's flat body,
``{"error": "<message>"}`` (:func:`v2_error`), and answer invalid requests with 400 instead of 422.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import QueueFullError, ShuttingDownError


class ApiError(Exception):
    """A client-facing error with an optional offending field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownItemError(ApiError):
    """A request names item ids the model does not know (in ``candidates``)."""


class InvalidInputError(ApiError):
    """A V2 (Open Inference Protocol) request names an unknown input or gives one a wrong datatype, shape or data."""


class ModelNotFoundError(ApiError):
    """A V2 path names a model this server does not serve."""


class ModelNotReadyError(ApiError):
    """The model is still loading/warming up, or the server is shutting down."""


@dataclass(frozen=True)
class ErrorSpec:
    """HTTP status and stable machine-readable code for an error type."""

    status: int
    code: str


ERROR_TABLE: Mapping[type[BaseException], ErrorSpec] = {
    RequestValidationError: ErrorSpec(422, "invalid_request"),
    UnknownItemError: ErrorSpec(422, "unknown_item"),
    InvalidInputError: ErrorSpec(400, "invalid_input"),
    ModelNotFoundError: ErrorSpec(404, "model_not_found"),
    QueueFullError: ErrorSpec(429, "overloaded"),
    ModelNotReadyError: ErrorSpec(503, "not_ready"),
    ShuttingDownError: ErrorSpec(503, "shutting_down"),
    StarletteHTTPException: ErrorSpec(400, "http_error"),  # status taken from the exception
}
INTERNAL_ERROR = ErrorSpec(500, "internal_error")
HTTP_STATUS_CODES: Mapping[int, str] = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def spec_for(exc: BaseException) -> ErrorSpec:
    """Look the exception's class (or its nearest listed base class) up in :data:`ERROR_TABLE`."""
    for cls in type(exc).__mro__:
        spec = ERROR_TABLE.get(cls)
        if spec is not None:
            if isinstance(exc, StarletteHTTPException):
                return ErrorSpec(exc.status_code, HTTP_STATUS_CODES.get(exc.status_code, spec.code))
            return spec
    return INTERNAL_ERROR


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON error envelope."""
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def _loc_to_field(loc: Iterable[Any]) -> str:
    """('body', 'requests', 2, 'k') -> 'requests[2].k'; a body-level error (bad JSON) -> 'body'."""
    parts = list(loc)
    if parts and parts[0] in {"body", "query", "path", "header"} and len(parts) > 1:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out = f"{out}[{part}]" if out else "body"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out or "body"


def validation_details(exc: RequestValidationError) -> list[dict[str, str]]:
    """Field + message per pydantic error, without echoing the client's input back."""
    details = []
    for err in exc.errors():
        loc = err.get("loc", ())
        field = "body" if err.get("type") == "json_invalid" else _loc_to_field(loc)
        details.append({"field": field, "message": str(err.get("msg", "invalid value"))})
    return details


def describe(exc: BaseException) -> tuple[ErrorSpec, dict[str, Any], dict[str, str]]:
    """Status/code, JSON body and extra headers for any exception."""
    spec = spec_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, RequestValidationError):
        details = validation_details(exc)
        first = details[0] if details else {"field": "body", "message": "invalid request"}
        body = error_body(spec.code, f"{first['field']}: {first['message']}", first["field"], details=details)
    elif isinstance(exc, ApiError):
        body = error_body(spec.code, exc.message, exc.field)
    elif isinstance(exc, QueueFullError):
        headers["Retry-After"] = str(exc.retry_after_s)
        body = error_body(spec.code, str(exc))
    elif isinstance(exc, ShuttingDownError):
        body = error_body(spec.code, "server is shutting down; retry on another replica")
    elif isinstance(exc, StarletteHTTPException):
        body = error_body(spec.code, str(exc.detail))
        headers.update(exc.headers or {})
    else:
        body = error_body(spec.code, "internal server error")
    return spec, body, headers


def v2_error(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, ``{"error": message}`` body and headers of an exception on an Open Inference Protocol route."""
    spec, body, headers = describe(exc)
    status = 400 if spec.status == 422 else spec.status  # the protocol answers bad requests with 400
    return status, {"error": body["error"]["message"]}, headers
