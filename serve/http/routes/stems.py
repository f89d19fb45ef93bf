"""A variation's stems: ask for them and read their state (their files are media routes)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serve.schemas import StemsOut

from ..auth import Owner
from ..deps import Services
from .params import SongId, VariationIndex

router = APIRouter(tags=["stems"])

STEMS_PATH = "/v1/songs/{song_id}/variations/{index}/stems"


@router.post(STEMS_PATH, status_code=202, response_model=StemsOut)
async def request_stems(
    song_id: SongId, index: VariationIndex, services: Services, owner: Owner
) -> JSONResponse:
    """Make the variation's stems (drums, bass, other, vocals): 202 while they are made, with
    progress on the song's event stream; 200 when they exist already."""
    stems = await services.stems.request(song_id, index, owner)
    return JSONResponse(
        stems.model_dump(mode="json"),
        status_code=202 if stems.status in ("queued", "running") else 200,
        headers={"Location": services.views.url(f"/v1/songs/{song_id}/variations/{index}/stems")},
    )


@router.get(STEMS_PATH, response_model=StemsOut)
async def get_stems(
    song_id: SongId, index: VariationIndex, services: Services, owner: Owner
) -> StemsOut:
    return await services.stems.get(song_id, index, owner)
