"""Songs: create, list, read, cancel, delete, their event stream, and the caller's usage."""

from __future__ import annotations

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from serve.schemas import SongAccepted, SongList, SongOut, SongRequest, UsageOut

from ..auth import CallerOf, Owner
from ..deps import Services
from ..events import parse_last_event_id
from .params import SongId

router = APIRouter(tags=["songs"])


@router.post("/v1/songs", status_code=202, response_model=SongAccepted)
async def create_song(
    body: SongRequest,
    services: Services,
    caller: CallerOf,
    idempotency_key: str | None = Header(
        None,
        min_length=1,
        max_length=255,
        description="Retries with the same key return the same song instead of a new one.",
    ),
) -> JSONResponse:
    accepted = await services.songs.create(body, caller, idempotency_key)
    return JSONResponse(
        accepted.model_dump(mode="json"), status_code=202, headers={"Location": accepted.links.self}
    )


@router.get("/v1/songs", response_model=SongList)
async def list_songs(
    services: Services,
    owner: Owner,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, max_length=200),
    q: str | None = Query(
        None,
        max_length=200,
        description="Only songs whose prompt, title, style or lyrics contain every word of it "
        "(case-insensitive); page on with the same q and the next_cursor.",
    ),
) -> SongList:
    return await services.songs.list(owner, limit, cursor, q)


@router.get("/v1/songs/{song_id}", response_model=SongOut)
async def get_song(song_id: SongId, services: Services, owner: Owner) -> SongOut:
    return await services.songs.get(song_id, owner)


@router.delete("/v1/songs/{song_id}", status_code=204)
async def delete_song(song_id: SongId, services: Services, owner: Owner) -> Response:
    """Delete a finished song and every file of it (audio, HLS, peaks, stems, the master).
    409 while it is still being made."""
    await services.songs.delete(song_id, owner)
    return Response(status_code=204)


@router.post("/v1/songs/{song_id}/cancel", response_model=SongOut)
async def cancel_song(song_id: SongId, services: Services, owner: Owner) -> SongOut:
    """Stop a queued or running song. It is `canceled` at once (a `canceled` event ends its
    stream, and it no longer counts against your quotas); a render in progress stops within
    seconds. Variations already finished stay. 409 when the song had already finished."""
    return await services.songs.cancel(song_id, owner)


@router.get("/v1/songs/{song_id}/events")
async def song_events(
    song_id: SongId,
    request: Request,
    services: Services,
    owner: Owner,
    last_event_id: str | None = Header(None, max_length=32),
) -> StreamingResponse:
    """SSE: stage, progress, variation, done, error, canceled — and stems, stems_progress for
    stems asked for. Replays past events first; resumes after `Last-Event-ID`; closes after
    `done`, `error` or `canceled` once no stems are being made."""
    after = parse_last_event_id(last_event_id)
    frames = await services.events.open(song_id, owner, after)
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/v1/usage", response_model=UsageOut)
async def usage(services: Services, caller: CallerOf) -> UsageOut:
    """What you have used of your quotas: today's songs and audio, and your songs in work now."""
    return await services.quotas.usage(caller)
