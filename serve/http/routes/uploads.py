"""Audio uploads, per owner: upload (multipart, capped while it streams), list, get, delete. An
upload's id is what song edits take as `source.upload` or `reference_audio.upload`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Path, Query, UploadFile
from fastapi.responses import Response

from serve.upload_schemas import UploadList, UploadOut

from ..auth import Owner
from ..deps import Services

router = APIRouter(tags=["uploads"])

UploadId = Annotated[str, Path(min_length=1, max_length=64, description="The upload's id.")]


@router.post("/v1/uploads", status_code=201, response_model=UploadOut)
async def create_upload(
    services: Services,
    owner: Owner,
    file: UploadFile = File(
        ...,
        description="An audio file (uploads.formats: wav, mp3, flac, m4a, aac, ogg, opus), "
        "judged from its bytes.",
    ),
) -> UploadOut:
    """Store an audio file that only your key can see or use: decoded and made 48 kHz stereo.
    413 over `uploads.max_bytes`; 415 for a format not accepted; 422 for a file that does not
    decode or runs longer than `uploads.max_duration_s`; 409 when your key keeps
    `uploads.max_per_owner` uploads; 429 with Retry-After when this server's decodes are busy."""
    # The body was capped as it streamed (serve.http.guard); one byte over the limit is enough.
    data = await file.read(services.config.uploads.max_bytes + 1)
    return await services.uploads.create(owner, data, file.filename)


@router.get("/v1/uploads", response_model=UploadList)
async def list_uploads(
    services: Services,
    owner: Owner,
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, max_length=64),
) -> UploadList:
    """Your uploads, newest first."""
    return await services.uploads.list(owner, limit, cursor)


@router.get("/v1/uploads/{upload_id}", response_model=UploadOut)
async def get_upload(upload_id: UploadId, services: Services, owner: Owner) -> UploadOut:
    return await services.uploads.get(owner, upload_id)


@router.delete("/v1/uploads/{upload_id}", status_code=204)
async def delete_upload(upload_id: UploadId, services: Services, owner: Owner) -> Response:
    """Delete one of your uploads (its audio and record); 404 for any id you do not have."""
    await services.uploads.delete(owner, upload_id)
    return Response(status_code=204)
