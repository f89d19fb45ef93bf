"""A variation's files: audio in each format (Range, HEAD), its HLS rendition, its peaks and its
stems' audio.
Reached with a key or through the signed links the API hands out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serve.services import ApiServices

from ..auth import MediaOwner
from ..deps import Services
from ..media import IMMUTABLE, object_response
from .params import FileFormat, SongId, VariationIndex

router = APIRouter(tags=["media"])

AUDIO_PATH = "/v1/songs/{song_id}/variations/{index}/audio.{fmt}"
STEM_AUDIO_PATH = "/v1/songs/{song_id}/variations/{index}/stems/{name}.{fmt}"


@router.get(AUDIO_PATH)
@router.head(AUDIO_PATH, include_in_schema=False)
async def variation_audio(
    song_id: SongId,
    index: VariationIndex,
    fmt: FileFormat,
    request: Request,
    services: Services,
    owner: MediaOwner,
) -> Response:
    key, filename = await services.media.audio_key(song_id, index, fmt, owner)
    return await _stored_file(services, request, key, filename)


@router.get("/v1/songs/{song_id}/variations/{index}/hls/{name}")
async def variation_hls(
    song_id: SongId, index: VariationIndex, name: str, services: Services, owner: MediaOwner
) -> Response:
    """HLS playback: `hls/index.m3u8`, then the segments it names."""
    from pipeline.hls import hls_content_type

    data, signed_playlist = await services.media.hls_file(song_id, index, name, owner)
    # A signed playlist lives as long as the signature written into it.
    cache = "private, max-age=300" if signed_playlist else IMMUTABLE
    return Response(data, media_type=hls_content_type(name), headers={"Cache-Control": cache})


@router.get("/v1/songs/{song_id}/variations/{index}/peaks")
async def variation_peaks(
    song_id: SongId, index: VariationIndex, services: Services, owner: MediaOwner
) -> Response:
    return Response(
        await services.media.peaks(song_id, index, owner), media_type="application/json"
    )


@router.get(STEM_AUDIO_PATH)
@router.head(STEM_AUDIO_PATH, include_in_schema=False)
async def stem_audio(
    song_id: SongId,
    index: VariationIndex,
    name: str,
    fmt: FileFormat,
    request: Request,
    services: Services,
    owner: MediaOwner,
) -> Response:
    key, filename = await services.stems.file_key(song_id, index, name, fmt, owner)
    return await _stored_file(services, request, key, filename)


async def _stored_file(services: ApiServices, request: Request, key: str, name: str) -> Response:
    """A stored file as the request asks for it: whole or a byte range, or only its headers."""
    range_header, head_only = request.headers.get("range"), request.method == "HEAD"
    return await object_response(
        services.objects, services.config, key, name, range_header, head_only
    )
