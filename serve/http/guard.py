"""`RequestGuard`, the ASGI layer in front of every route: it decides who is calling before any
byte of the body is read, and caps every body while it streams.

FastAPI reads and parses a request's body before it runs the route's dependencies, so a check in
a dependency alone would let an unauthenticated client make the ingress read (and parse) a body of
any size, and would answer a bad body before a missing key. Here:

- a request for a non-public route without a valid key (or, for a media file, a signed link) is
  answered 401 at once, its body unread;
- a `Content-Length` over the route's limit is answered 413 at once; a chunked body is counted as
  it arrives and stopped with 413 at the first chunk past the limit.

It is a plain ASGI middleware, not Starlette's `BaseHTTPMiddleware`, which wraps streaming
responses in a task group and logs "Future exception was never retrieved" whenever an SSE client
disconnects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException

from serve.store import StoreUnavailable

from .auth import CALLER_STATE, is_public
from .errors import ApiError, error_response

if TYPE_CHECKING:
    from serve.services import ApiServices

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Every JSON body the API takes is small (lyrics ≤ 5000 characters): refuse huge ones unread.
MAX_JSON_BYTES = 256 * 1024


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a route's body may have, and what sets that limit."""

    bytes: int
    set_by: str

    def message(self) -> str:
        return f"the request body is over {self.bytes} bytes ({self.set_by})"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streaming body passes its limit. An HTTPException, so
    FastAPI's body parsing passes it through untouched, and the error handlers render it."""

    def __init__(self, limit: BodyLimit) -> None:
        super().__init__(413, limit.message())
        self.limit = limit


def body_limit(services: ApiServices, path: str) -> BodyLimit:
    """The most bytes a body sent to `path` may have."""
    config = services.config
    if path == "/v1/loras":
        return BodyLimit(config.loras.max_upload_bytes, "loras.max_upload_bytes")
    if path == "/v1/verify":
        return BodyLimit(config.api.max_verify_bytes, "api.max_verify_bytes")
    if path == "/v1/uploads":
        return BodyLimit(config.uploads.max_bytes, "uploads.max_bytes")
    return BodyLimit(MAX_JSON_BYTES, "every JSON body of the API is far smaller")


class RequestGuard:
    def __init__(self, app: ASGIApp, services_of: Callable[[], ApiServices]) -> None:
        self.app = app
        self._services_of = services_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = self._services_of()
        root = scope.get("root_path", "")
        path = scope["path"].removeprefix(root) if root else scope["path"]
        method = scope["method"]
        limit = body_limit(services, path)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if not is_public(method, path) and not _signed_media_request(method, scope):
                client = scope.get("client")
                host = client[0] if client else None
                caller = await services.auth.caller(headers.get("authorization"), host)
                scope.setdefault("state", {})[CALLER_STATE] = caller
            length = headers.get("content-length", "")
            if length.isascii() and length.isdigit() and int(length) > limit.bytes:
                raise _too_large(limit)
        except StoreUnavailable:  # keys are looked up in the job store: a restart, an outage
            retry_after = {"Retry-After": str(services.retry_after_s)}
            message = "the job store is unavailable for a moment; retry later"
            response = error_response(503, "store_unavailable", message, None, retry_after)
            await response(scope, receive, send)
            return
        except ApiError as error:
            response = error_response(
                error.status, error.code, error.message, error.field, error.headers
            )
            await response(scope, receive, send)
            return

        received = 0
        response_started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.bytes:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracking_send)
        except BodyTooLarge as error:  # read outside FastAPI's body parsing (a route's own read)
            if response_started:
                raise
            error_ = _too_large(error.limit)
            await error_response(error_.status, error_.code, error_.message, error_.field)(
                scope, receive, send
            )


def _too_large(limit: BodyLimit) -> ApiError:
    return ApiError(413, "request_too_large", limit.message(), "body")


def _signed_media_request(method: str, scope: Scope) -> bool:
    """A GET or HEAD carrying a link signature: the media route checks it (it needs the song's
    owner from the store). Such requests have no body to protect."""
    return method in ("GET", "HEAD") and b"sig=" in scope.get("query_string", b"")
