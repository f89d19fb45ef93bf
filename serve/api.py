"""`SongAPI` — the HTTP ingress (FastAPI) of HTTP API v1.

It validates, persists the job and answers 202 at once; it never waits on generation. Status, SSE
events, audio (with HTTP Range) and peaks are served from the job and object stores, so any ingress
replica can answer for any job.

Every error has one shape: `{"error": {"code", "message", "field"}}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api_errors import ApiError, error_response, unless_overloaded
from .config import LORA_MODELS
from .lazy_delivery import LazyDelivery
from .loras import LoraInfo, LoraRegistry, LoraValidator
from .media_urls import MediaUrlSigner, sign_playlist
from .metrics import song_metrics
from .queue_estimate import QueueEstimator
from .schemas import (
    LoraList,
    LoraOut,
    LyricsOut,
    LyricsRequest,
    LyricsSourceOut,
    PoolList,
    PoolOut,
    QueueOut,
    SectionOut,
    SongAccepted,
    SongLinks,
    SongList,
    SongOut,
    SongRequest,
    StemOut,
    StemsOut,
    TagsOut,
    TagsRequest,
    VariationOut,
    VerifyOut,
)
from .store import (
    FINISHED_STEMS_STATUSES,
    EventRecord,
    JobRecord,
    StemsRecord,
    StoreUnavailable,
    VariationRecord,
    open_job_store,
    open_object_store,
)

if TYPE_CHECKING:
    from .config import AppConfig

logger = logging.getLogger("ray.serve")

LOCAL_OWNER = "local"
# Every JSON body the API takes is small (lyrics ≤ 5000 characters): refuse huge ones unread.
MAX_REQUEST_BYTES = 256 * 1024
_TERMINAL_EVENTS = frozenset({"done", "error"})  # of the song; stems may still follow
_HEALTH_TIMEOUT_S = 5.0
# How often an SSE stream of a queued song looks at its place in line (other songs move it).
_QUEUE_POLL_S = 1.0

app = FastAPI(
    title="songserve",
    version="1",
    summary="Song generation: ideas or lyrics plus a style in, finished songs out.",
)


@app.middleware("http")
async def _limit_request_size(request: Request, call_next: Any) -> Response:
    length = request.headers.get("content-length", "")
    api = current_api()
    limit = {
        "/v1/loras": api.max_upload_bytes,
        "/v1/verify": api.max_verify_bytes,
    }.get(request.url.path, MAX_REQUEST_BYTES)
    if length.isdigit() and int(length) > limit:
        return error_response(
            413, "request_too_large", f"the request body is over {limit} bytes", "body"
        )
    response: Response = await call_next(request)
    return response


def _count_refusal(request: Request, status: int, code: str) -> None:
    """429 and 503 answers, by reason and route template (`songserve_admissions_refused`)."""
    if status in (429, 503):
        route = getattr(request.scope.get("route"), "path", "unmatched")
        song_metrics().refused.inc(tags={"status": str(status), "reason": code, "route": route})


@app.exception_handler(ApiError)
async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    _count_refusal(request, error.status, error.code)
    return error_response(error.status, error.code, error.message, error.field, error.headers)


@app.exception_handler(StoreUnavailable)
async def _store_unavailable(request: Request, error: StoreUnavailable) -> JSONResponse:
    # A database outage or restart: nothing the client did, and over in seconds.
    _count_refusal(request, 503, "store_unavailable")
    retry_after = str(current_api().retry_after_s)
    message = "the job store is unavailable for a moment; retry later"
    return error_response(503, "store_unavailable", message, None, {"Retry-After": retry_after})


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0]
    location = [
        str(part)
        for part in first.get("loc", ())
        if part not in ("body", "query", "path", "header")
    ]
    field = ".".join(location) or None
    if first.get("type") == "missing" and field is None:
        message = "the request body is missing: send a JSON object"
        field = "body"
    elif first.get("type") == "json_invalid":
        message = f"the request body is not valid JSON ({first.get('ctx', {}).get('error', '')})"
        field = "body"
    elif first.get("type") == "extra_forbidden":
        message = f"unknown field {field!r}: remove it (see the API reference for the fields)"
    else:
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return error_response(422, "invalid_request", message, field)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), None)


def _iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (start, end) of a single `Range: bytes=…` header, None to send everything.

    Raises ApiError 416 for a range that lies outside the object. Multi-range requests are answered
    with the whole object, which RFC 9110 allows.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    spec = header.removeprefix("bytes=").strip()
    first, _, last = spec.partition("-")
    try:
        if first == "":  # suffix: the last N bytes
            length = int(last)
            if length <= 0:
                raise ValueError
            return max(size - length, 0), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None  # malformed ranges are ignored, per RFC 9110
    if start >= size or start > end:
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"byte range {spec} is outside 0-{size - 1}",
            "Range",
            {"Content-Range": f"bytes */{size}"},
        )
    return start, min(end, size - 1)


def _format_sse(seq: int, event_type: str, data: dict[str, Any]) -> str:
    return f"id: {seq}\nevent: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class SongAPI:
    """What HTTP API v1 does; the route functions at the bottom of this module call into it."""

    def __init__(
        self,
        config: AppConfig,
        conductor: Any,
        lyrics: Any,
        tags: Any,
        router: Any = None,
        verifier: Any = None,
        encoder: Any = None,
    ) -> None:
        self._config = config
        self._jobs = open_job_store(config.storage)
        self._objects = open_object_store(config.storage)
        self._conductor, self._lyrics, self._tags, self._router = conductor, lyrics, tags, router
        self._verifier, self._encoder = verifier, encoder
        self._models = ["auto", *config.models.served_models]
        self._loras = LoraRegistry(self._objects)
        self._lora_validator: LoraValidator | None = None
        self.max_upload_bytes = config.loras.max_upload_bytes
        self.max_verify_bytes = config.api.max_verify_bytes
        self.retry_after_s = config.api.overload_retry_after_s
        self._sse_subscribers = 0
        self._queue = QueueEstimator(config, self._jobs, router)
        self._lazy = LazyDelivery(config, self._jobs, encoder)
        if config.loras.preload:
            # Registering validates each file against the base checkpoint: do it off the
            # constructor so the replica comes up at once.
            self._preloading = asyncio.get_running_loop().create_task(self._preload_loras())
        self._media_signer = _media_signer(config)
        # Keys are compared by hash so the owner id stored with jobs never reveals a key.
        self._api_key_hashes = frozenset(
            hashlib.sha256(key.get_secret_value().encode()).hexdigest()
            for key in config.auth.api_keys
        )

    # -- helpers ----------------------------------------------------------------------------------

    def owner(self, request: Request) -> str:
        """The caller's owner id; raises 401 when the caller may not use the API."""
        if not self._api_key_hashes:
            client = request.client.host if request.client else None
            if _is_loopback(client):
                return LOCAL_OWNER
            raise ApiError(
                401,
                "unauthorized",
                "this server has no API keys configured, so it serves only clients on its own "
                "machine; set auth.api_keys (or SONGSERVE_API_KEYS) to accept remote clients",
                "Authorization",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme.lower() == "bearer" and any(
            hmac.compare_digest(digest, known) for known in self._api_key_hashes
        ):
            return f"key_{digest[:16]}"
        raise ApiError(
            401,
            "unauthorized",
            "missing or unknown API key: send `Authorization: Bearer <api key>`",
            "Authorization",
            {"WWW-Authenticate": "Bearer"},
        )

    async def _owned_job(self, song_id: str, owner: str) -> JobRecord:
        job = await self._jobs.get_job(song_id)
        if job is None or job.owner != owner:  # someone else's song is as good as absent
            raise ApiError(404, "not_found", f"no song with id {song_id!r}", "id")
        return job

    def _url(self, path: str) -> str:
        base = self._config.api.public_base_url
        return f"{base.rstrip('/')}{path}" if base else path

    def _media_url(self, path: str, owner: str) -> str:
        """A link to a file of `owner`'s, signed when the API needs keys (see serve.media_urls)."""
        url = self._url(path)
        if self._media_signer is None:
            return url
        return f"{url}?{self._media_signer.query(path, owner)}"

    def media_owner(self, request: Request) -> str:
        """The owner of a request for a media file: by a signed link, or as `owner` decides."""
        signer = self._media_signer
        if signer is None or "sig" not in request.query_params:
            return self.owner(request)
        root = request.scope.get("root_path", "")
        path = request.url.path.removeprefix(root) if root else request.url.path
        owner = signer.owner_of(path, request.query_params)
        if owner is None and request.headers.get("authorization"):
            return self.owner(request)  # an expired link, but the caller has a key
        if owner is None:
            raise ApiError(
                403,
                "invalid_signature",
                "this link has expired or was altered: get fresh links from the song (or send "
                "`Authorization: Bearer <api key>`)",
                "sig",
            )
        return owner

    def _variation_out(self, job_id: str, owner: str, variation: VariationRecord) -> VariationOut:
        prefix = f"/v1/songs/{job_id}/variations/{variation.index}"
        # A lazy format is linked once the master it is made from is kept.
        audio: dict[str, str] = {
            fmt: self._media_url(f"{prefix}/audio.{fmt}", owner)
            for fmt in self._config.postprocess.formats
            if fmt in variation.objects or "master" in variation.objects
        }
        has = variation.objects.__contains__
        return VariationOut(
            index=variation.index,
            status=variation.status,  # type: ignore[arg-type]
            model=variation.model,
            model_version=variation.model_version,
            seed=variation.seed,
            duration_s=variation.duration_s,
            sample_rate=variation.sample_rate,
            loudness_lufs=variation.loudness_lufs,
            true_peak_dbtp=variation.true_peak_dbtp,
            audio=audio,
            peaks=self._media_url(f"{prefix}/peaks", owner) if has("peaks") else None,
            hls=self._media_url(f"{prefix}/hls/index.m3u8", owner) if has("hls") else None,
            provenance=variation.render.get("provenance"),
            error=variation.error,
        )

    def _song_out(self, job: JobRecord, queue: QueueOut | None = None) -> SongOut:
        tags = _tags_out(job.tags) if job.tags is not None else None
        return SongOut(
            id=job.id,
            status=job.status,  # type: ignore[arg-type]
            stage=job.stage,
            progress=round(job.progress, 4),
            created_at=_iso(job.created_at),
            updated_at=_iso(job.updated_at),
            request=SongRequest.model_validate(job.request),
            lyrics=job.lyrics,
            lyrics_source=job.lyrics_source,  # type: ignore[arg-type]
            tags=tags,
            error=job.error,  # type: ignore[arg-type]
            variations=[self._variation_out(job.id, job.owner, v) for v in job.variations],
            queue=queue,
        )

    async def _check_song_request(self, body: SongRequest) -> SongRequest:
        """Rules pydantic cannot name a field for, and what depends on this server (models,
        registered LoRAs); returns the cleaned request."""
        body = body.model_copy(
            update={name: getattr(body, name) or None for name in ("prompt", "lyrics", "style")}
        )
        if not (body.prompt or body.lyrics or body.style):
            raise ApiError(
                422, "invalid_request", "give at least one of prompt, lyrics or style", "prompt"
            )
        if body.lyrics and body.instrumental:
            raise ApiError(
                422,
                "invalid_request",
                "lyrics cannot be combined with instrumental: true; drop one of them",
                "lyrics",
            )
        if body.model not in self._models:
            raise ApiError(
                422,
                "invalid_request",
                f"unknown model {body.model!r}; this server offers: {', '.join(self._models)}",
                "model",
            )
        if body.lora is not None:
            await self._check_lora(body.lora.id, body.model)
        return body

    async def _check_lora(self, lora_id: str, model: str) -> None:
        """A LoRA request must name a registered LoRA and a model that takes LoRAs; checked
        here, before any decoding."""
        lora_models = [m for m in self._config.models.served_models if m in LORA_MODELS]
        if (model != "auto" and model not in LORA_MODELS) or not lora_models:
            raise ApiError(
                422,
                "invalid_request",
                f"model {model!r} does not take LoRAs"
                + (f"; use one of: {', '.join(lora_models)}" if lora_models else ""),
                "lora.id",
            )
        if await self._loras.get(lora_id) is None:
            known = [info.id for info in await self._loras.list()]
            raise ApiError(
                422,
                "invalid_request",
                f"unknown LoRA {lora_id!r}; registered: {', '.join(known) or 'none'} "
                "(upload with POST /v1/loras)",
                "lora.id",
            )

    async def _call(self, response: Any) -> Any:
        """Await a deployment call, turning back-pressure into 503 + Retry-After."""
        return await unless_overloaded(response, self._config.api.overload_retry_after_s)

    # -- operations (the routes below are a few lines each over these) ---------------------------

    async def health(self) -> dict[str, str]:
        """`ok` once the graph answers: job store, conductor, tags and lyrics replicas."""
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    self._jobs.get_job("healthz"),
                    self._conductor.check_health.remote(),
                    self._tags.check_health.remote(),
                    self._lyrics.check_health.remote(),
                ),
                timeout=_HEALTH_TIMEOUT_S,
            )
        except Exception as error:
            raise ApiError(
                503,
                "unavailable",
                f"not ready: {type(error).__name__}: {error}",
                None,
                {"Retry-After": "1"},
            ) from error
        return {"status": "ok"}

    async def create_song(
        self, body: SongRequest, owner: str, idempotency_key: str | None
    ) -> SongAccepted:
        body = await self._check_song_request(body)
        if await self._jobs.count_jobs("queued") >= self._config.jobs.max_queued_jobs:
            raise ApiError(
                429,
                "too_many_queued",
                "too many songs are waiting; retry later",
                None,
                {"Retry-After": str(self._config.api.overload_retry_after_s)},
            )
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31 - 4)
        stored_request = body.model_dump(mode="json") | {"seed": seed}
        job, created = await self._jobs.create_job(
            owner=owner,
            request=stored_request,
            seed=seed,
            variations=body.variations,
            idempotency_key=idempotency_key,
        )
        # A retry without a seed matches the job whatever seed the server chose for it.
        ignore_seed = {"seed": None} if body.seed is None else {}
        if not created and job.request | ignore_seed != stored_request | ignore_seed:
            raise ApiError(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request; use a new key",
                "Idempotency-Key",
            )
        if created:
            self._conductor.wake.remote()  # fire and forget: polling picks the job up anyway
        return SongAccepted(
            id=job.id,
            status=job.status,  # type: ignore[arg-type]
            links=SongLinks(
                self=self._url(f"/v1/songs/{job.id}"),
                events=self._url(f"/v1/songs/{job.id}/events"),
            ),
        )

    async def list_songs(self, owner: str, limit: int, cursor: str | None) -> SongList:
        try:
            jobs, next_cursor = await self._jobs.list_jobs(owner, limit=limit, cursor=cursor)
        except ValueError as error:
            raise ApiError(422, "invalid_request", str(error), "cursor") from error
        return SongList(songs=[self._song_out(job) for job in jobs], next_cursor=next_cursor)

    async def get_song(self, song_id: str, owner: str) -> SongOut:
        job = await self._owned_job(song_id, owner)
        queue = await self._queue.queue_out(job.id, job.request) if job.status == "queued" else None
        return self._song_out(job, queue)

    async def event_stream(self, song_id: str, owner: str, after: int) -> AsyncIterator[str]:
        """SSE frames of a song's events after `after`; ends once the song is done (or failed)
        and none of its stems jobs is still queued or running. While the song is queued, a
        `queue` frame (no id: it is not in the log) tells its place when the stream opens and
        whenever the place changes."""
        job = await self._owned_job(song_id, owner)  # 404 before the stream starts
        queue_of = job.request if job.status == "queued" else None
        return self._subscribed(self._event_frames(song_id, owner, after, queue_of))

    async def _subscribed(self, frames: AsyncIterator[str]) -> AsyncIterator[str]:
        """`frames`, counted in `songserve_sse_subscribers` while the client listens."""
        self._sse_subscribers += 1
        song_metrics().sse_subscribers.set(self._sse_subscribers)
        try:
            async for frame in frames:
                yield frame
        finally:
            self._sse_subscribers -= 1
            song_metrics().sse_subscribers.set(self._sse_subscribers)

    async def _event_frames(
        self, job_id: str, owner: str, after: int, queue_of: dict[str, Any] | None = None
    ) -> AsyncIterator[str]:
        """`queue_of`: the song's request while it is queued (its place is then watched)."""
        keepalive_s = self._config.api.sse_keepalive_s
        yield "retry: 2000\n\n"
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        position: int | None = None
        # A stream resumed past the end closes at once; after that the song's status is read only
        # when an event may have ended it or on keep-alive, so an idle stream costs no queries
        # on Postgres (LISTEN/NOTIFY wakes it).
        check_status = True
        while True:
            try:
                if (
                    check_status
                    and await self._nothing_more(job_id)
                    and not await self._jobs.events_after(job_id, after, limit=1)
                ):
                    return
                if queue_of is not None:
                    queue = await self._queue.queue_out(job_id, queue_of)
                    if queue is None:
                        queue_of = None  # it left the queue: its events tell the rest
                    elif queue.position != position:
                        position = queue.position
                        last_sent = loop.time()
                        yield f"event: queue\ndata: {queue.model_dump_json()}\n\n"
                # While queued, look at the place every _QUEUE_POLL_S (other songs move it).
                wait_s = keepalive_s if queue_of is None else min(keepalive_s, _QUEUE_POLL_S)
                events = await self._jobs.wait_for_events(job_id, after, wait_s)
            except StoreUnavailable:
                # A database restart: keep the client connected and carry on where it was,
                # rather than cutting the response (it would reconnect, but noisily).
                yield ": the job store is unavailable; waiting\n\n"
                await asyncio.sleep(min(keepalive_s, 1.0))
                continue
            check_status = not events
            if events:
                last_sent = loop.time()
            for event in events:
                yield _format_sse(event.seq, event.type, self._event_out(job_id, owner, event))
                after = event.seq
                check_status |= event.type in _TERMINAL_EVENTS or (
                    event.type == "stems" and event.data.get("status") in FINISHED_STEMS_STATUSES
                )
            if not events and loop.time() - last_sent >= keepalive_s - 0.01:
                last_sent = loop.time()
                yield ": keep-alive\n\n"

    async def _nothing_more(self, job_id: str) -> bool:
        """Whether a song will log no more events: it ended and no stems job is under way."""
        job = await self._jobs.get_job(job_id)
        if job is None:
            return True
        if not job.is_terminal:
            return False
        return not any(stems.is_active for stems in await self._jobs.list_stems(job_id))

    def _event_out(self, job_id: str, owner: str, event: EventRecord) -> dict[str, Any]:
        """An event's data as clients see it: object keys become URLs."""
        data: dict[str, Any] = event.data
        if event.type == "variation":
            variation = VariationRecord(**data)
            return self._variation_out(job_id, owner, variation).model_dump(mode="json")
        if event.type == "stems" and "stems" in data:
            index = data["variation"]
            return {
                **data,
                "stems": [
                    {"name": name, "audio": self._stem_urls(job_id, owner, index, name, formats)}
                    for name, formats in data["stems"].items()
                ],
            }
        return data

    async def audio(
        self,
        song_id: str,
        index: int,
        fmt: str,
        owner: str,
        range_header: str | None,
        head_only: bool,
    ) -> Response:
        job = await self._owned_job(song_id, owner)
        variation = self._finished_variation(job, index, not_ready_status=404)
        key = variation.objects.get(fmt)
        if key is None:
            key = await self._lazy.key(job, variation, fmt)
        return await self._serve_object(key, f"{job.id}-v{index}.{fmt}", range_header, head_only)

    async def _serve_object(
        self, key: str, filename: str, range_header: str | None, head_only: bool
    ) -> Response:
        """A stored audio file, whole or the byte range asked for; with `storage.presign_media`
        on an S3 store, a redirect to a presigned link instead, so the bytes bypass the API."""
        info = await self._objects.stat(key)
        if info is None:
            raise ApiError(404, "not_found", f"{filename} is missing from storage", None)
        if self._config.storage.presign_media:
            url = await self._objects.presigned_url(key, self._config.auth.media_url_ttl_s)
            if url is not None:  # the S3 link answers Range and HEAD itself
                return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
        byte_range = parse_byte_range(range_header, info.size)
        start, end = byte_range or (0, info.size - 1)
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Length": str(end - start + 1),
            "Cache-Control": "private, max-age=31536000, immutable",
            "Content-Disposition": f'inline; filename="{filename}"',
        }
        if byte_range is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
        status = 206 if byte_range is not None else 200
        if head_only:
            return Response(status_code=status, headers=headers, media_type=info.content_type)
        return StreamingResponse(
            self._objects.iter_range(key, start, end),
            status_code=status,
            headers=headers,
            media_type=info.content_type,
        )

    async def hls_file(self, song_id: str, index: int, name: str, owner: str) -> Response:
        """A file of the variation's HLS rendition: the playlist or one of its segments (their
        URLs in the playlist are relative, so they resolve to this same route)."""
        if not _HLS_FILE.fullmatch(name):
            raise ApiError(404, "not_found", f"{name!r} is not part of an HLS rendition", "name")
        job = await self._owned_job(song_id, owner)
        playlist_key = self._variation_object(job, index, "hls")
        from pipeline.hls import hls_content_type

        try:
            data = await self._objects.get(f"{playlist_key.rsplit('/', 1)[0]}/{name}")
        except KeyError:
            raise ApiError(
                404, "not_found", f"variation {index} has no HLS file {name}", "name"
            ) from None
        cache = "private, max-age=31536000, immutable"
        if self._media_signer is not None and name.endswith(".m3u8"):
            # Players drop the playlist's query when they resolve its segment URIs: each URI
            # gets the rendition's signature written in, and the playlist lives as long as it.
            path = f"/v1/songs/{job.id}/variations/{index}/hls/{name}"
            data = sign_playlist(data, self._media_signer.query(path, owner))
            cache = "private, max-age=300"
        return Response(data, media_type=hls_content_type(name), headers={"Cache-Control": cache})

    async def peaks(self, song_id: str, index: int, owner: str) -> bytes:
        job = await self._owned_job(song_id, owner)
        return await self._objects.get(self._variation_object(job, index, "peaks"))

    @staticmethod
    def _finished_variation(job: JobRecord, index: int, not_ready_status: int) -> VariationRecord:
        """Variation `index` of `job`: 404 when there is none, `not_ready_status` until it has
        succeeded."""
        variation = next((v for v in job.variations if v.index == index), None)
        if variation is None:
            raise ApiError(
                404,
                "not_found",
                f"song {job.id} has variations 0-{len(job.variations) - 1}",
                "index",
            )
        if variation.status != "succeeded":
            raise ApiError(
                not_ready_status,
                "not_ready",
                f"variation {index} is {variation.status}; wait for its `variation` event",
                "index",
            )
        return variation

    def _variation_object(self, job: JobRecord, index: int, name: str) -> str:
        variation = self._finished_variation(job, index, not_ready_status=404)
        if name not in variation.objects:
            raise ApiError(
                404,
                "not_found",
                f"this server does not produce {name} files (postprocess.formats)",
                "fmt",
            )
        return variation.objects[name]

    # -- stems ------------------------------------------------------------------------------------

    def _stem_urls(
        self, job_id: str, owner: str, index: int, name: str, formats: Iterable[str]
    ) -> dict[str, str]:
        prefix = f"/v1/songs/{job_id}/variations/{index}/stems"
        return {fmt: self._media_url(f"{prefix}/{name}.{fmt}", owner) for fmt in formats}

    def _stems_out(self, record: StemsRecord, owner: str) -> StemsOut:
        loudness = record.info.get("loudness_lufs", {})
        return StemsOut(
            song_id=record.job_id,
            variation=record.index,
            status=record.status,  # type: ignore[arg-type]
            progress=round(record.progress, 4),
            method=record.info.get("method"),
            stems=[
                StemOut(
                    name=name,
                    audio=self._stem_urls(record.job_id, owner, record.index, name, files),
                    loudness_lufs=loudness.get(name),
                )
                for name, files in record.objects.items()
            ],
            provenance=record.info.get("provenance"),
            error=record.error,
            events=self._url(f"/v1/songs/{record.job_id}/events"),
        )

    def _check_stems_possible(self, job: JobRecord, index: int) -> None:
        """409 unless the variation is finished and this server can make its stems."""
        variation = self._finished_variation(job, index, not_ready_status=409)
        if variation.model != "sketch" and self._config.postprocess.stems.demucs_checkpoint is None:
            raise ApiError(
                409,
                "stems_unavailable",
                f"variation {index} was made by {variation.model}, which has no exact stems, and "
                "this server has no stem separator (postprocess.stems.demucs_checkpoint)",
                "index",
            )

    async def request_stems(self, song_id: str, index: int, owner: str) -> StemsOut:
        """Queue a variation's stems (a failed attempt is queued again); stems already queued,
        running or made are returned as they are."""
        job = await self._owned_job(song_id, owner)
        self._check_stems_possible(job, index)
        record, created = await self._jobs.request_stems(job.id, index)
        if created:
            self._conductor.wake.remote()  # fire and forget: polling picks the job up anyway
        return self._stems_out(record, owner)

    async def get_stems(self, song_id: str, index: int, owner: str) -> StemsOut:
        job = await self._owned_job(song_id, owner)
        return self._stems_out(await self._stems_record(job, index), owner)

    async def _stems_record(self, job: JobRecord, index: int) -> StemsRecord:
        record = await self._jobs.get_stems(job.id, index)
        if record is None:
            raise ApiError(
                404,
                "not_found",
                f"no stems were asked for variation {index}: POST "
                f"/v1/songs/{job.id}/variations/{index}/stems to make them",
                "index",
            )
        return record

    async def stem_audio(
        self,
        song_id: str,
        index: int,
        name: str,
        fmt: str,
        owner: str,
        range_header: str | None,
        head_only: bool,
    ) -> Response:
        job = await self._owned_job(song_id, owner)
        record = await self._stems_record(job, index)
        if record.status != "succeeded":
            raise ApiError(
                404,
                "not_ready",
                f"the stems of variation {index} are {record.status}; wait for their `stems` event",
                "index",
            )
        key = record.objects.get(name, {}).get(fmt)
        if key is None:
            raise ApiError(
                404,
                "not_found",
                f"no {fmt} file of stem {name!r}; stems: {', '.join(record.objects)}",
                "name",
            )
        return await self._serve_object(
            key, f"{job.id}-v{index}-{name}.{fmt}", range_header, head_only
        )

    async def write_lyrics(self, body: LyricsRequest) -> LyricsOut:
        written = await self._call(
            self._lyrics.write.remote(
                body.prompt,
                body.duration_s,
                style=body.style,
                language=body.language,
                seed=body.seed,
            )
        )
        return LyricsOut(
            lyrics=written.text,
            sections=[SectionOut(tag=s.tag, lines=list(s.lines)) for s in written.sections],
            source=LyricsSourceOut(
                engine=written.engine,
                model=written.model,
                fallback_reason=written.fallback_reason,
                repairs=written.repairs,
            ),
        )

    async def normalize_tags(self, body: TagsRequest) -> TagsOut:
        tags = await self._call(
            self._tags.normalize.remote(
                body.text, language=body.language, instrumental=body.instrumental
            )
        )
        return _tags_out(tags.to_dict())

    async def pools(self) -> list[dict[str, Any]]:
        pools: list[dict[str, Any]] = await self._call(self._router.pools.remote())
        return pools

    # -- LoRA registry ----------------------------------------------------------------------------

    def _validator(self) -> LoraValidator:
        """Checks uploads against the base checkpoint (imports torch on first use only)."""
        if self._lora_validator is None:
            checkpoint = self._config.models.lora_checkpoint
            if checkpoint is None:
                raise ApiError(
                    409,
                    "no_lora_model",
                    "no pool on this server serves a model that takes LoRAs (models.pools)",
                    None,
                )
            from deployments.ace_step import lora_validator

            self._lora_validator = lora_validator(checkpoint, max_rank=self._config.loras.max_rank)
        return self._lora_validator

    async def register_lora(self, lora_id: str, weights: bytes) -> LoraInfo:
        validate = self._validator()
        if len(weights) > self._config.loras.max_upload_bytes:
            raise ApiError(
                413,
                "request_too_large",
                f"LoRA files are limited to {self._config.loras.max_upload_bytes} bytes "
                "(loras.max_upload_bytes)",
                "file",
            )
        try:
            return await self._loras.register(
                lora_id,
                weights,
                model="ace-step",
                validate=validate,
            )
        except ValueError as error:
            field = "id" if "LoRA ids" in str(error) else "file"
            raise ApiError(422, "invalid_lora", str(error), field) from error

    async def verify(self, data: bytes) -> dict[str, Any]:
        """C2PA credentials and watermark of an uploaded audio file. The format is checked from
        its first bytes before anything decodes it; the Verifier does the work."""
        from pipeline.provenance import sniff_audio_format

        if len(data) > self._config.api.max_verify_bytes:
            raise ApiError(
                413,
                "request_too_large",
                f"files are limited to {self._config.api.max_verify_bytes} bytes "
                "(api.max_verify_bytes)",
                "file",
            )
        fmt = sniff_audio_format(data)
        if fmt is None:
            raise ApiError(
                415,
                "unsupported_media_type",
                "the file is not m4a, mp3, flac or wav audio; upload one of those",
                "file",
            )
        result: dict[str, Any] = await self._call(
            self._verifier.verify.remote(data, fmt, self._config.api.max_verify_seconds)
        )
        return result

    async def list_loras(self) -> list[LoraInfo]:
        return await self._loras.list()

    async def delete_lora(self, lora_id: str) -> None:
        if not await self._loras.delete(lora_id):
            raise ApiError(404, "not_found", f"no LoRA with id {lora_id!r}", "id")

    async def _preload_loras(self) -> None:
        for lora in self._config.loras.preload:
            if await self._loras.get(lora.id) is not None:
                continue
            try:
                weights = await asyncio.to_thread(Path(lora.path).read_bytes)
                validate = self._validator()
                await self._loras.register(lora.id, weights, model="ace-step", validate=validate)
                logger.info("registered LoRA %s from %s", lora.id, lora.path)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
                logger.error(
                    "loras.preload %s (%s) was not registered: %s", lora.id, lora.path, error
                )


def _media_signer(config: AppConfig) -> MediaUrlSigner | None:
    """The signer of media links, or None when the API takes no keys (loopback only)."""
    auth = config.auth
    if not auth.api_keys:
        return None
    if auth.media_url_secret is not None:
        secret = auth.media_url_secret.get_secret_value().encode()
        return MediaUrlSigner(secret, auth.media_url_ttl_s)
    keys = [key.get_secret_value() for key in auth.api_keys]
    return MediaUrlSigner.derived_from_keys(keys, auth.media_url_ttl_s)


def _tags_out(tags: dict[str, Any]) -> TagsOut:
    """The HTTP shape of StyleTags (`family` is internal to the song models), with the forms
    each song model takes."""
    from pipeline.semantic_tags import ace_step_metadata, yue_genre_tags
    from pipeline.tags import StyleTags

    style = StyleTags.from_dict(tags)
    yue = yue_genre_tags(style)
    models = {
        "ace_step": {"caption": style.caption, **ace_step_metadata(style)},
        "yue": {"tags": yue, "prompt": " ".join(yue)},
    }
    fields = {k: v for k, v in tags.items() if k != "family"}
    return TagsOut.model_validate({**fields, "models": models})


# --------------------------------------------------------------------------------------------------
# Routes: a few lines each. The SongAPI replica serving the request is injected; `serve.app` wraps
# SongAPI with `serve.ingress(app)`.


def current_api() -> SongAPI:
    from ray import serve

    return cast(SongAPI, serve.get_replica_context().servable_object)


Api = Annotated[SongAPI, Depends(current_api)]


@app.get("/healthz")
async def healthz(api: Api) -> dict[str, str]:
    return await api.health()


@app.post("/v1/songs", status_code=202, response_model=SongAccepted)
async def create_song(
    body: SongRequest,
    request: Request,
    api: Api,
    idempotency_key: str | None = Header(None, max_length=255),
) -> JSONResponse:
    accepted = await api.create_song(body, api.owner(request), idempotency_key)
    return JSONResponse(
        accepted.model_dump(mode="json"), status_code=202, headers={"Location": accepted.links.self}
    )


@app.get("/v1/songs", response_model=SongList)
async def list_songs(
    request: Request,
    api: Api,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, max_length=200),
) -> SongList:
    return await api.list_songs(api.owner(request), limit, cursor)


@app.get("/v1/songs/{song_id}", response_model=SongOut)
async def get_song(song_id: str, request: Request, api: Api) -> SongOut:
    return await api.get_song(song_id, api.owner(request))


@app.get("/v1/songs/{song_id}/events")
async def song_events(
    song_id: str, request: Request, api: Api, last_event_id: str | None = Header(None)
) -> StreamingResponse:
    """SSE: stage, progress, variation, done, error — and stems, stems_progress for stems asked
    for. Replays past events first; resumes after `Last-Event-ID`; closes after `done` or
    `error` once no stems are being made."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    frames = await api.event_stream(song_id, api.owner(request), after)
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


_AUDIO_PATH = "/v1/songs/{song_id}/variations/{index}/audio.{fmt}"
# A bare file name (no path), with an extension of pipeline.hls's renditions.
_HLS_FILE = re.compile(r"[A-Za-z0-9_-]{1,64}\.(m3u8|aac)")


@app.get(_AUDIO_PATH)
@app.head(_AUDIO_PATH, include_in_schema=False)
async def variation_audio(
    song_id: str, index: int, fmt: Literal["m4a", "mp3", "wav", "flac"], request: Request, api: Api
) -> Response:
    return await api.audio(
        song_id,
        index,
        fmt,
        api.media_owner(request),
        request.headers.get("range"),
        request.method == "HEAD",
    )


@app.get("/v1/songs/{song_id}/variations/{index}/hls/{name}")
async def variation_hls(
    song_id: str, index: int, name: str, request: Request, api: Api
) -> Response:
    """HLS playback: `hls/index.m3u8`, then the segments it names."""
    return await api.hls_file(song_id, index, name, api.media_owner(request))


_STEMS_PATH = "/v1/songs/{song_id}/variations/{index}/stems"


@app.post(_STEMS_PATH, status_code=202, response_model=StemsOut)
async def request_stems(song_id: str, index: int, request: Request, api: Api) -> JSONResponse:
    """Make the variation's stems (drums, bass, other, vocals): 202 while they are made, with
    progress on the song's event stream; 200 when they exist already."""
    stems = await api.request_stems(song_id, index, api.owner(request))
    return JSONResponse(
        stems.model_dump(mode="json"),
        status_code=202 if stems.status in ("queued", "running") else 200,
        headers={"Location": f"/v1/songs/{song_id}/variations/{index}/stems"},
    )


@app.get(_STEMS_PATH, response_model=StemsOut)
async def get_stems(song_id: str, index: int, request: Request, api: Api) -> StemsOut:
    return await api.get_stems(song_id, index, api.owner(request))


_STEM_AUDIO_PATH = _STEMS_PATH + "/{name}.{fmt}"


@app.get(_STEM_AUDIO_PATH)
@app.head(_STEM_AUDIO_PATH, include_in_schema=False)
async def stem_audio(
    song_id: str,
    index: int,
    name: str,
    fmt: Literal["m4a", "mp3", "wav", "flac"],
    request: Request,
    api: Api,
) -> Response:
    return await api.stem_audio(
        song_id,
        index,
        name,
        fmt,
        api.media_owner(request),
        request.headers.get("range"),
        request.method == "HEAD",
    )


@app.get("/v1/songs/{song_id}/variations/{index}/peaks")
async def variation_peaks(song_id: str, index: int, request: Request, api: Api) -> Response:
    return Response(
        await api.peaks(song_id, index, api.media_owner(request)), media_type="application/json"
    )


@app.post("/v1/lyrics", response_model=LyricsOut)
async def write_lyrics(body: LyricsRequest, request: Request, api: Api) -> LyricsOut:
    api.owner(request)
    return await api.write_lyrics(body)


@app.post("/v1/tags/normalize", response_model=TagsOut)
async def normalize_tags(body: TagsRequest, request: Request, api: Api) -> TagsOut:
    api.owner(request)
    return await api.normalize_tags(body)


@app.post("/v1/loras", status_code=201, response_model=LoraOut)
async def upload_lora(
    request: Request,
    api: Api,
    id: str = Form(..., max_length=64, description="The id requests will use in `lora.id`."),
    file: UploadFile = File(..., description="A pytorch_lora_weights.safetensors file."),
) -> LoraOut:
    api.owner(request)
    info = await api.register_lora(id, await file.read())
    return LoraOut.model_validate(asdict(info))


@app.post("/v1/verify", response_model=VerifyOut)
async def verify_audio(
    request: Request,
    api: Api,
    file: UploadFile = File(..., description="An m4a, mp3, flac or wav file to check."),
) -> VerifyOut:
    """Does this file carry valid songserve content credentials, and a watermark?"""
    api.owner(request)
    # One byte over the limit is enough to refuse it; a chunked upload has no Content-Length.
    return VerifyOut.model_validate(await api.verify(await file.read(api.max_verify_bytes + 1)))


@app.get("/v1/loras", response_model=LoraList)
async def list_loras(request: Request, api: Api) -> LoraList:
    api.owner(request)
    return LoraList(loras=[LoraOut.model_validate(asdict(i)) for i in await api.list_loras()])


@app.delete("/v1/loras/{lora_id}", status_code=204)
async def delete_lora(lora_id: str, request: Request, api: Api) -> Response:
    api.owner(request)
    await api.delete_lora(lora_id)
    return Response(status_code=204)


@app.get("/v1/pools", response_model=PoolList)
async def list_pools(request: Request, api: Api) -> PoolList:
    """Decoder pools and whether the cluster can place them (an operator's first question when
    songs of one model never start)."""
    api.owner(request)
    return PoolList(pools=[PoolOut.model_validate(p) for p in await api.pools()])
