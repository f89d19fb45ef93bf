"""The API's one error shape, `{"error": {"code", "message", "field"}}`, and the handlers that
put every failure into it: our own `ApiError`, request validation, bodies that do not parse,
Starlette's 404/405 (405 keeps its `Allow` header) and a job store outage (503 + Retry-After).

429 and 503 answers are counted by reason and route template (`songserve_admissions_refused`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    """An error a client can act on, rendered in the API's one error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}},
        status_code=status,
        headers=headers,
    )


def overloaded(retry_after_s: int) -> ApiError:
    """The answer when a deployment the request needs pushes back: 503 + Retry-After."""
    return ApiError(
        503,
        "overloaded",
        "the server is busy; retry later",
        None,
        {"Retry-After": str(retry_after_s)},
    )


def unparseable_body(detail: str) -> ApiError:
    """One answer for a body that does not parse, JSON or multipart: 400 naming `body`."""
    return ApiError(400, "invalid_body", f"the request body does not parse: {detail}", "body")


def _count_refusal(request: Request, status: int, code: str) -> None:
    if status in (429, 503):
        from serve.metrics import song_metrics

        route = getattr(request.scope.get("route"), "path", "unmatched")
        song_metrics().refused.inc(tags={"status": str(status), "reason": code, "route": route})


def _validation_error(error: RequestValidationError) -> ApiError:
    first = error.errors()[0]
    kind = first.get("type")
    location = [
        str(part)
        for part in first.get("loc", ())
        if part not in ("body", "query", "path", "header")
    ]
    field = ".".join(location) or None
    if kind == "json_invalid":
        return unparseable_body(f"not valid JSON ({first.get('ctx', {}).get('error', '')})")
    if kind == "missing" and field is None:
        return ApiError(422, "invalid_request", "the request body is missing", "body")
    if kind == "model_attributes_type" or (kind == "dict_type" and field is None):
        return ApiError(422, "invalid_request", "the request body must be a JSON object", "body")
    if kind == "extra_forbidden":
        message = f"unknown field {field!r}: remove it (see the API reference for the fields)"
    else:
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return ApiError(422, "invalid_request", message, field)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this request's path."""
    from starlette.routing import Match

    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.routes
        )
    ]


def install_error_handlers(app: FastAPI, retry_after_s: Any) -> None:
    """`retry_after_s()`: the Retry-After of a store outage (read per request: it is config)."""
    from serve.store import StoreUnavailable

    async def api_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, ApiError)
        _count_refusal(request, error.status, error.code)
        return error_response(error.status, error.code, error.message, error.field, error.headers)

    async def store_unavailable(request: Request, _: Exception) -> JSONResponse:
        # A database outage or restart: nothing the client did, and over in seconds.
        return await api_error(
            request,
            ApiError(
                503,
                "store_unavailable",
                "the job store is unavailable for a moment; retry later",
                None,
                {"Retry-After": str(retry_after_s())},
            ),
        )

    async def validation_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        return await api_error(request, _validation_error(error))

    async def http_error(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code == 400:  # Starlette's "error parsing the body" (multipart, form)
            return await api_error(request, unparseable_body(str(error.detail)))
        if error.status_code == 413:  # serve.http.guard's cap on a streaming body
            too_large = ApiError(413, "request_too_large", str(error.detail), "body")
            return await api_error(request, too_large)
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        headers = dict(error.headers or {})
        if error.status_code == 405:  # Starlette names the methods of one route of the path
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(error.status_code, code, str(error.detail), None, headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StoreUnavailable, store_unavailable)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
