"""Around songs: write lyrics, normalise a style, verify a file, see the decoder pools."""

from __future__ import annotations

from fastapi import APIRouter, File, UploadFile

from serve.schemas import (
    LyricsOut,
    LyricsRequest,
    PoolList,
    PoolOut,
    TagsOut,
    TagsRequest,
    VerifyOut,
)

from ..deps import Services

router = APIRouter(tags=["tools"])


@router.post("/v1/lyrics", response_model=LyricsOut)
async def write_lyrics(body: LyricsRequest, services: Services) -> LyricsOut:
    return await services.tools.write_lyrics(body)


@router.post("/v1/tags/normalize", response_model=TagsOut)
async def normalize_tags(body: TagsRequest, services: Services) -> TagsOut:
    return await services.tools.normalize_tags(body)


@router.post("/v1/verify", response_model=VerifyOut)
async def verify_audio(
    services: Services,
    file: UploadFile = File(..., description="An m4a, mp3, flac or wav file to check."),
) -> VerifyOut:
    """Does this file carry valid songserve content credentials, and a watermark?"""
    # One byte over the limit is enough to refuse it.
    data = await file.read(services.config.api.max_verify_bytes + 1)
    return VerifyOut.model_validate(await services.tools.verify(data))


@router.get("/v1/pools", response_model=PoolList)
async def list_pools(services: Services) -> PoolList:
    """Decoder pools and whether the cluster can place them (an operator's first question when
    songs of one model never start)."""
    return PoolList(pools=[PoolOut.model_validate(p) for p in await services.tools.pools()])
