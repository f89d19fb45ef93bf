"""Response models of `/v1/uploads` (kept beside `serve.schemas`, whose C2PA report they reuse)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from serve.config import UploadFormat
from serve.schemas import C2paOut


class UploadOut(BaseModel):
    """An uploaded audio file, as stored: decoded and made 48 kHz stereo."""

    id: str = Field(..., description="Use it as `source.upload` or `reference_audio.upload`.")
    duration_s: float = Field(..., description="Seconds of audio stored.")
    sample_rate: int = Field(..., description="Of the stored audio: always 48000.")
    channels: int = Field(..., description="Of the stored audio: always 2.")
    format: UploadFormat = Field(
        ..., description="What the file was, judged from its bytes (not its name or type)."
    )
    original_sample_rate: int = Field(..., description="The file's own sample rate, in Hz.")
    original_channels: int = Field(..., description="The file's own channel count.")
    size_bytes: int = Field(..., description="Size of the file as uploaded.")
    filename: str | None = Field(None, description="The name the file was uploaded with.")
    c2pa: C2paOut | None = Field(
        None,
        description="The file's C2PA content credentials as read on upload; null when it "
        "carries no manifest.",
    )
    created_at: float = Field(..., description="Epoch seconds.")
    expires_at: float | None = Field(
        None,
        description="Epoch seconds after which the upload may be deleted (jobs.retention_days); "
        "null: kept until deleted.",
    )


class UploadList(BaseModel):
    uploads: list[UploadOut] = Field(..., description="Newest first.")
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next (older) page; null on the last."
    )
