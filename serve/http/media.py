"""Stored files over HTTP: whole, or the byte range asked for (RFC 9110 single ranges), HEAD, and
with `storage.presign_media` on an S3 store a redirect to a presigned link so the bytes bypass the
API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.responses import RedirectResponse, Response, StreamingResponse

from .errors import ApiError

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.store import ObjectStore

IMMUTABLE = "private, max-age=31536000, immutable"


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (start, end) of a single `Range: bytes=…` header, None to send everything.

    Raises ApiError 416 for a satisfiable-looking range that lies outside the object (a start at
    or past its end, or an empty suffix `-0`). A range-spec that is not valid (`5-2`, garbage)
    is ignored, and so are multi-range requests: both get the whole object, as RFC 9110 allows.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    spec = header.removeprefix("bytes=").strip()
    first, _, last = spec.partition("-")
    if not all(part == "" or (part.isascii() and part.isdigit()) for part in (first, last)):
        return None
    if first == "":
        if last == "":
            return None
        length = _position(last)  # suffix: the last N bytes
        if length == 0 or size == 0:
            raise _unsatisfiable(spec, size)
        return max(size - length, 0), size - 1
    start = _position(first)
    if last and _position(last) < start:
        return None  # an invalid range-spec: ignored (RFC 9110 §14.1.1)
    end = _position(last) if last else size - 1
    if start >= size:
        raise _unsatisfiable(spec, size)
    return start, min(end, size - 1)


def _position(digits: str) -> int:
    """A byte position; one past any file's end when it has more digits than any file has bytes
    (and before `int` would refuse a string that long)."""
    return int(digits) if len(digits) <= 18 else 10**18


def _unsatisfiable(spec: str, size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"byte range {spec} is outside 0-{size - 1}" if size else "the file is empty",
        "Range",
        {"Content-Range": f"bytes */{size}"},
    )


async def object_response(
    objects: ObjectStore,
    config: AppConfig,
    key: str,
    filename: str,
    range_header: str | None,
    head_only: bool,
) -> Response:
    info = await objects.stat(key)
    if info is None:
        raise ApiError(404, "not_found", f"{filename} is missing from storage", None)
    if config.storage.presign_media:
        url = await objects.presigned_url(key, config.auth.media_url_ttl_s)
        if url is not None:  # the S3 link answers Range and HEAD itself
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    byte_range = parse_byte_range(range_header, info.size)
    start, end = byte_range or (0, info.size - 1)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start + 1),
        "Cache-Control": IMMUTABLE,
        "Content-Disposition": f'inline; filename="{filename}"',
    }
    if byte_range is not None:
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    status = 206 if byte_range is not None else 200
    if head_only:
        return Response(status_code=status, headers=headers, media_type=info.content_type)
    return StreamingResponse(
        objects.iter_range(key, start, end),
        status_code=status,
        headers=headers,
        media_type=info.content_type,
    )
