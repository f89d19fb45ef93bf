"""The Suno-compatible surface under `/api/`, for clients written against the common open Suno
API wrappers (the mapping onto the native API is in `serve.services.suno`)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from serve.schemas import (
    SunoClip,
    SunoCustomGenerate,
    SunoGenerate,
    SunoLimit,
    SunoLyrics,
    SunoLyricsRequest,
)

from ..auth import CallerOf
from ..deps import Services

router = APIRouter(prefix="/api", tags=["suno-compatible"])


@router.post("/generate", response_model=list[SunoClip])
async def generate(body: SunoGenerate, services: Services, caller: CallerOf) -> list[SunoClip]:
    """Two clips from an idea (description mode)."""
    suno = services.suno
    request = suno.request(
        {"prompt": "prompt", "instrumental": "make_instrumental"},
        prompt=body.prompt,
        instrumental=body.make_instrumental,
        model=suno.model(body.model),
    )
    return await suno.generate(request, caller, body.wait_audio)


@router.post("/custom_generate", response_model=list[SunoClip])
async def custom_generate(
    body: SunoCustomGenerate, services: Services, caller: CallerOf
) -> list[SunoClip]:
    """Two clips of your lyrics (`prompt`) in a style (`tags`)."""
    suno = services.suno
    request = suno.request(
        {"lyrics": "prompt", "style": "tags", "negative_style": "negative_tags", "title": "title"},
        lyrics=None if body.make_instrumental else body.prompt or None,
        style=body.tags or None,
        negative_style=body.negative_tags or None,
        title=body.title or None,
        instrumental=body.make_instrumental,
        model=suno.model(body.model),
    )
    return await suno.generate(request, caller, body.wait_audio)


@router.get("/get", response_model=list[SunoClip])
async def get_clips(
    services: Services,
    caller: CallerOf,
    ids: str | None = Query(None, max_length=8000, description="Clip ids, comma-separated."),
) -> list[SunoClip]:
    """The clips named, or your latest ones."""
    return await services.suno.get(ids, caller)


@router.post("/generate_lyrics", response_model=SunoLyrics)
async def generate_lyrics(body: SunoLyricsRequest, services: Services) -> SunoLyrics:
    return await services.suno.lyrics(body.prompt)


@router.get("/get_limit", response_model=SunoLimit)
async def get_limit(services: Services, caller: CallerOf) -> SunoLimit:
    """Today's song quota, as Suno credits (10 per song)."""
    return await services.suno.limit(caller)
