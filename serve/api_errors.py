"""The API's one error shape: `ApiError` (what a client can act on) and its JSON response, and
back-pressure from a deployment turned into 503 + Retry-After."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


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


async def unless_overloaded(response: Any, retry_after_s: int) -> Any:
    """Await a deployment call, turning back-pressure into 503 + Retry-After."""
    from ray.serve.exceptions import BackPressureError

    try:
        return await response
    except BackPressureError as error:
        raise ApiError(
            503,
            "overloaded",
            "the server is busy; retry later",
            None,
            {"Retry-After": str(retry_after_s)},
        ) from error
