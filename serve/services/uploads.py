"""Audio files callers upload, per owner: `POST /v1/uploads` checks, decodes and stores one;
list, get and delete; and `source`, what song edits (`source`, `reference_audio`) resolve an
upload id with.

An upload is checked before anything decodes it: its size (`uploads.max_bytes`), then its format,
judged from its first bytes (never its name or content type) against `uploads.formats`. It is
decoded off the event loop, at most a little past `uploads.max_duration_s` (a longer file is
refused without decoding the rest), made float32 stereo at 48 kHz and stored in the raw render
format (`pipeline.audio.raw_render_bytes`), so a decoder loads it as it loads a render. A C2PA
manifest it carries is read (and validated) on upload, and its report kept with the upload.
Each API replica decodes at most `uploads.max_concurrent_decodes` at once and queues at most
`uploads.max_waiting_decodes` (then 429), and an owner keeps at most `uploads.max_per_owner`.

Storage is the object store alone: `uploads/<owner>/<id>/original.<format>` (the file as sent,
its manifest intact, for edits to name as their C2PA ingredient), `audio.npy`, then `upload.json`
(so a listed upload always has its files). Another owner's upload is as good as absent (404).
Uploads expire with `jobs.retention_days`: the conductors' retention sweep deletes them
(`serve.workflow.retention.sweep_expired_uploads`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.audio import STORED_RAW_RATE
from serve.http.errors import ApiError
from serve.store import (
    RAW_RENDER_CONTENT_TYPE,
    UPLOAD_AUDIO_NAME,
    UPLOAD_ID_PATTERN,
    UPLOAD_RECORD_NAME,
    new_upload_id,
    upload_key,
    upload_location,
    upload_prefix,
)
from serve.upload_schemas import UploadList, UploadOut
from serve.workflow.retention import DAY_S

if TYPE_CHECKING:
    from serve.config import AppConfig, UploadFormat
    from serve.store import ObjectStore

UPLOAD_SAMPLE_RATE = STORED_RAW_RATE  # what the decoder reads raw .npy audio at
UPLOAD_CHANNELS = 2
# Decoding runs this far past uploads.max_duration_s, so a longer file is told apart from one of
# exactly the limit, and no further.
_DECODE_PAST_LIMIT_S = 1.0
# A file may run this much over the limit and be kept (cut to it): the padding an encoder adds
# to a lossy file that does not record it (an mp3 without a LAME info frame: up to two frames).
_LENGTH_GRACE_S = 0.05
_MAX_FILENAME_CHARS = 255
# ISO BMFF brands of audio in MP4 besides "M4A " (which pipeline.provenance knows): audiobooks
# and files written by tools that label audio-only MP4 as generic MP4.
_MP4_AUDIO_BRANDS = (b"M4A ", b"M4B ", b"mp41", b"mp42", b"isom", b"iso2")
_SIGNABLE = ("m4a", "mp3", "flac", "wav")
_OTHER_CONTENT_TYPES = {"aac": "audio/aac", "ogg": "audio/ogg", "opus": "audio/ogg"}


def _original_name(fmt: str) -> str:
    return f"original.{fmt}"


def _content_type(fmt: str) -> str:
    from pipeline.encode import CONTENT_TYPES

    return CONTENT_TYPES.get(fmt) or _OTHER_CONTENT_TYPES[fmt]


@dataclass(frozen=True)
class UploadSource:
    """An upload as song edits use it: `key` names its audio in the object store, float32
    stereo `.npy` at `sample_rate` (48000) Hz, `pipeline.audio.raw_render_from_bytes` reads it.
    `c2pa` is the report `pipeline.provenance.read_credentials` gave on upload, None when the file
    carried no manifest. `original_key` names the file as it was uploaded (byte for byte, any
    manifest in it intact), of format `format`."""

    id: str
    key: str
    duration_s: float
    sample_rate: int
    c2pa: dict[str, Any] | None
    filename: str | None
    original_key: str
    format: str


def sniff_upload_format(data: bytes) -> UploadFormat | None:
    """An upload's format from its first bytes, or None for anything else: the delivery formats
    (`pipeline.provenance.sniff_audio_format`: wav, flac, mp3, m4a), audio in MP4 of other brands
    (m4a), raw AAC in ADTS frames (aac), and Ogg: Opus (opus), anything else (ogg)."""
    from pipeline.provenance import sniff_audio_format

    delivery = sniff_audio_format(data)
    if delivery is not None:
        return delivery
    if len(data) >= 12 and data[4:8] == b"ftyp":
        box_size = int.from_bytes(data[:4], "big")
        brands = data[8 : min(max(box_size, 12), len(data))]
        candidates = [brands[:4]] + [brands[k : k + 4] for k in range(8, len(brands) - 3, 4)]
        return "m4a" if any(brand in _MP4_AUDIO_BRANDS for brand in candidates) else None
    if len(data) >= 27 and data[:4] == b"OggS":
        # The first page holds the codec's identification header, after the segment table.
        payload = 27 + data[26]
        return "opus" if data[payload : payload + 8] == b"OpusHead" else "ogg"
    # ADTS: a 12-bit sync word, then MPEG version, layer 00 (what tells it from MP3).
    if len(data) >= 7 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return "aac"
    return None


@dataclass(frozen=True)
class _Decoded:
    audio_npy: bytes
    duration_s: float
    original_sample_rate: int
    original_channels: int
    c2pa: dict[str, Any] | None


class _TooLong(Exception):
    pass


def _decode(data: bytes, fmt: str, max_duration_s: float) -> _Decoded:
    """Decode, check the length, conform and read credentials (on a worker thread).

    Raises `_TooLong` past `max_duration_s` (and its grace), ValueError for data that holds no
    decodable audio."""
    import numpy as np

    from pipeline.audio import conform_audio, raw_render_bytes
    from pipeline.encode import decode_audio
    from pipeline.provenance import read_credentials

    audio, rate = decode_audio(data, max_duration_s=max_duration_s + _DECODE_PAST_LIMIT_S)
    if audio.shape[-1] == 0 or rate <= 0:
        raise ValueError("no audio frames in data")
    if audio.shape[-1] > (max_duration_s + _LENGTH_GRACE_S) * rate:
        raise _TooLong
    audio = audio[:, : round(max_duration_s * rate)]
    original_channels = int(audio.shape[0])
    # Float files may hold NaN or infinities: silence is the safe reading of them.
    audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    stereo = conform_audio(audio, rate, UPLOAD_SAMPLE_RATE)
    report = read_credentials(data, fmt if fmt in _SIGNABLE else None)  # type: ignore[arg-type]
    return _Decoded(
        audio_npy=raw_render_bytes(stereo),
        duration_s=stereo.shape[-1] / UPLOAD_SAMPLE_RATE,
        original_sample_rate=int(rate),
        original_channels=original_channels,
        c2pa=report if report["present"] else None,
    )


def _clean_filename(filename: str | None) -> str | None:
    """The name a file was sent with, without any directory part or control characters."""
    if not filename:
        return None
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) != "Cc").strip()
    return name[:_MAX_FILENAME_CHARS] or None


class UploadService:
    def __init__(self, config: AppConfig, objects: ObjectStore) -> None:
        self._config = config
        self._objects = objects
        # Per API replica: decoding is the memory- and CPU-heavy step, so it is admitted here
        # (uploads.max_concurrent_decodes at once, uploads.max_waiting_decodes queued).
        self._decode_slots = asyncio.Semaphore(config.uploads.max_concurrent_decodes)
        self._waiting_decodes = 0

    async def create(self, owner: str, data: bytes, filename: str | None) -> UploadOut:
        """Check, decode and store an uploaded file as `owner`'s. 413 over `uploads.max_bytes`;
        415 for a format not in `uploads.formats`; 422 for an empty or undecodable file or one
        longer than `uploads.max_duration_s`; 409 when `owner` keeps `uploads.max_per_owner`
        already; 429 with Retry-After when this replica's decodes and their queue are full; all
        name the field `file`."""
        settings = self._config.uploads
        if len(data) > settings.max_bytes:
            raise ApiError(
                413,
                "request_too_large",
                f"uploads are limited to {settings.max_bytes} bytes (uploads.max_bytes)",
                "file",
            )
        if not data:
            raise ApiError(422, "invalid_audio", "the file is empty: send an audio file", "file")
        fmt = sniff_upload_format(data)
        if fmt is None or fmt not in settings.formats:
            accepted = ", ".join(settings.formats)
            raise ApiError(
                415,
                "unsupported_media_type",
                f"the file is not audio in a format this server accepts ({accepted}; judged "
                "from its bytes, not its name): upload one of those",
                "file",
            )
        await self._check_owner_cap(owner)
        try:
            async with self._decode_slot():
                decoded = await asyncio.to_thread(_decode, data, fmt, settings.max_duration_s)
        except _TooLong:
            raise ApiError(
                422,
                "audio_too_long",
                f"the file holds more than {settings.max_duration_s:g} s of audio, the most an "
                "upload may (uploads.max_duration_s): trim it",
                "file",
            ) from None
        except ValueError as error:
            raise ApiError(
                422,
                "invalid_audio",
                f"the file looks like {fmt} but holds no audio that decodes ({error}): upload "
                "a whole, undamaged file",
                "file",
            ) from error
        created_at = time.time()
        upload_id = new_upload_id(created_at)
        record = {
            "id": upload_id,
            "duration_s": decoded.duration_s,
            "sample_rate": UPLOAD_SAMPLE_RATE,
            "channels": UPLOAD_CHANNELS,
            "format": fmt,
            "original_sample_rate": decoded.original_sample_rate,
            "original_channels": decoded.original_channels,
            "size_bytes": len(data),
            "filename": _clean_filename(filename),
            "c2pa": decoded.c2pa,
            # The id holds the time to the ms; the record keeps the same instant.
            "created_at": int(created_at * 1000) / 1000,
        }
        objects = self._objects
        await objects.put(
            upload_key(owner, upload_id, _original_name(fmt)), data, _content_type(fmt)
        )
        await objects.put(
            upload_key(owner, upload_id, UPLOAD_AUDIO_NAME),
            decoded.audio_npy,
            RAW_RENDER_CONTENT_TYPE,
        )
        await objects.put(
            upload_key(owner, upload_id, UPLOAD_RECORD_NAME),
            json.dumps(record).encode(),
            "application/json",
        )
        return self._out(record)

    async def _check_owner_cap(self, owner: str) -> None:
        """409 when `owner` keeps `uploads.max_per_owner` uploads. Checked before decoding, so
        two uploads racing for the last place may both be kept: the cap is a soft one."""
        cap = self._config.uploads.max_per_owner
        if cap is None:
            return
        kept = len(await self._ids(owner))
        if kept >= cap:
            raise ApiError(
                409,
                "too_many_uploads",
                f"this key keeps {kept} uploads, the most allowed (uploads.max_per_owner = {cap}): "
                "delete some with DELETE /v1/uploads/{id}, or wait for them to expire",
                "file",
            )

    @contextlib.asynccontextmanager
    async def _decode_slot(self) -> AsyncIterator[None]:
        """One of this replica's `uploads.max_concurrent_decodes`, waited for in a queue of at
        most `uploads.max_waiting_decodes`; a full queue is a 429 with Retry-After."""
        settings = self._config.uploads
        if self._decode_slots.locked() and self._waiting_decodes >= settings.max_waiting_decodes:
            retry_after = self._config.api.overload_retry_after_s
            raise ApiError(
                429,
                "uploads_busy",
                f"this server is decoding {settings.max_concurrent_decodes} uploads with "
                f"{self._waiting_decodes} waiting (uploads.max_concurrent_decodes, "
                f"uploads.max_waiting_decodes): send the file again after {retry_after} s",
                "file",
                {"Retry-After": str(retry_after)},
            )
        self._waiting_decodes += 1
        try:
            await self._decode_slots.acquire()
        finally:
            self._waiting_decodes -= 1
        try:
            yield
        finally:
            self._decode_slots.release()

    async def _ids(self, owner: str) -> list[str]:
        """`owner`'s upload ids, newest first (ids are time-ordered)."""
        keys = await self._objects.list_keys(upload_prefix(owner))
        return sorted(
            {
                located[1]
                for key in keys
                if key.endswith(f"/{UPLOAD_RECORD_NAME}")
                and (located := upload_location(key)) is not None
            },
            reverse=True,
        )

    async def list(self, owner: str, limit: int, cursor: str | None) -> UploadList:
        """`owner`'s uploads, newest first, `limit` a page; `cursor` is the last id of the page
        before (422 naming `cursor` for anything else)."""
        if cursor is not None and not UPLOAD_ID_PATTERN.match(cursor):
            raise ApiError(
                422,
                "invalid_request",
                "cursor must be the next_cursor of an earlier page of GET /v1/uploads",
                "cursor",
            )
        ids = await self._ids(owner)
        if cursor is not None:
            ids = [upload_id for upload_id in ids if upload_id < cursor]
        page: list[UploadOut] = []
        for upload_id in ids[:limit]:
            record = await self._record(owner, upload_id)
            if record is not None:  # deleted since the listing
                page.append(self._out(record))
        return UploadList(uploads=page, next_cursor=ids[limit - 1] if len(ids) > limit else None)

    async def get(self, owner: str, upload_id: str) -> UploadOut:
        """One of `owner`'s uploads; 404 for any other id (another owner's included)."""
        record = await self._record(owner, upload_id)
        if record is None:
            raise _not_found(upload_id)
        return self._out(record)

    async def delete(self, owner: str, upload_id: str) -> None:
        """Delete one of `owner`'s uploads, every file of it; 404 for any other id."""
        if await self._record(owner, upload_id) is None:
            raise _not_found(upload_id)
        await self._objects.delete_prefix(upload_key(owner, upload_id))

    async def source(self, owner: str, upload_id: str, field: str) -> UploadSource:
        """What `upload_id` names for `owner`, for a song edit to read. A 422 naming `field`
        (e.g. "source.upload" or "reference_audio.upload") when `owner` has no such upload
        (unknown, deleted, expired or another owner's)."""
        record = await self._record(owner, upload_id)
        if record is None:
            raise ApiError(
                422,
                "invalid_request",
                f"no upload with id {upload_id!r}; POST /v1/uploads first",
                field,
            )
        return UploadSource(
            id=record["id"],
            key=upload_key(owner, record["id"], UPLOAD_AUDIO_NAME),
            duration_s=float(record["duration_s"]),
            sample_rate=int(record["sample_rate"]),
            c2pa=record.get("c2pa"),
            filename=record.get("filename"),
            original_key=upload_key(owner, record["id"], _original_name(record["format"])),
            format=record["format"],
        )

    async def _record(self, owner: str, upload_id: str) -> dict[str, Any] | None:
        if not UPLOAD_ID_PATTERN.match(upload_id):  # an id from a URL must not wander the store
            return None
        try:
            data = await self._objects.get(upload_key(owner, upload_id, UPLOAD_RECORD_NAME))
        except KeyError:
            return None
        record: dict[str, Any] = json.loads(data)
        return record

    def _out(self, record: dict[str, Any]) -> UploadOut:
        retention_days = self._config.jobs.retention_days
        created_at = float(record["created_at"])
        return UploadOut.model_validate(
            {
                **record,
                "expires_at": (
                    created_at + retention_days * DAY_S if retention_days is not None else None
                ),
            }
        )


def _not_found(upload_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no upload with id {upload_id!r}", "id")
