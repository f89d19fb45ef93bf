"""`ObjectStore` — the contract for bytes: encoded audio, peaks, raw renders, stems, LoRA files,
uploads.

Keys are deterministic, derived from (job, variation, artefact), so a re-run after a crash
overwrites instead of duplicating. Backends: `FilesystemObjectStore` (the embedded default, one
machine) and `S3ObjectStore` (any S3-compatible service, for a cluster).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


def song_prefix(job_id: str) -> str:
    """Every object of a song lives under this prefix (deleting the song deletes it)."""
    return f"songs/{job_id}/"


def variation_key(job_id: str, index: int, name: str) -> str:
    """The key of one artefact of a variation, e.g. `songs/<job>/v0/audio.m4a`."""
    return f"{song_prefix(job_id)}v{index}/{name}"


RAW_RENDER_CONTENT_TYPE = "application/x-npy"


def raw_render_key(job_id: str, index: int) -> str:
    """Where a variation's raw render (before mastering) lives: written by the decoder, read by
    the post-processor, kept so a failed master is redone without rendering again."""
    return variation_key(job_id, index, "render.npy")


def variation_audio_key(job_id: str, index: int, fmt: str) -> str:
    """Where a variation's delivered file of format `fmt` lives (eager or made on request)."""
    return variation_key(job_id, index, f"audio.{fmt}")


MASTER_CONTENT_TYPE = "audio/flac"
MASTER_INFO_CONTENT_TYPE = "application/json"


def master_key(job_id: str, index: int) -> str:
    """The delivered master of a variation (mastered and watermarked, before any lossy encode),
    as 24-bit FLAC: what lazy formats are encoded from on their first request. 24 bits is the
    depth of the flac and wav downloads, so those come out sample-identical to an eager encode;
    it is about half the size of float32 and decodes at hundreds of × real time."""
    return variation_key(job_id, index, "master.flac")


VARIATION_AUDIO_PREFERENCE = ("master", "wav", "flac", "m4a", "mp3")
"""Which of a variation's recorded objects to read its delivered audio from, best first: the kept
master (24-bit FLAC, there whenever a format is made on request), then the lossless files, then
the lossy ones (their codec's error comes along)."""


def master_info_key(job_id: str, index: int) -> str:
    """Next to the master: its sample rate and the content credentials its files are signed
    with (JSON), so a file encoded later is signed exactly as the eager ones were."""
    return variation_key(job_id, index, "master.json")


UPLOADS_ROOT = "uploads/"
UPLOAD_AUDIO_NAME = "audio.npy"
"""An upload's audio, decoded and made 48 kHz stereo, in the raw render format
(`pipeline.audio.raw_render_bytes`, content type `RAW_RENDER_CONTENT_TYPE`)."""
UPLOAD_RECORD_NAME = "upload.json"
"""What the API shows of an upload (written after the audio: a listed upload has its audio)."""
UPLOAD_ID_PATTERN = re.compile(r"^upl_[0-9a-f]{28}$")


def new_upload_id(created_at: float) -> str:
    """Time-ordered, unguessable id: `upl_` + 12 hex digits of ms since the epoch + 16 random
    hex digits. The time in it is what the retention sweep reads (no record to fetch), and ids
    sort newest last."""
    return f"upl_{int(created_at * 1000):012x}{secrets.token_hex(8)}"


def upload_created_at(upload_id: str) -> float | None:
    """When upload `upload_id` was made (epoch seconds, ms precision); None for a malformed id."""
    if not UPLOAD_ID_PATTERN.match(upload_id):
        return None
    return int(upload_id[4:16], 16) / 1000


def upload_prefix(owner: str) -> str:
    """Every upload of `owner` lives under this prefix. ValueError for an owner id that would
    break the layout (none the server issues does: see `serve.http.auth`)."""
    if not owner or "/" in owner or owner in (".", ".."):
        raise ValueError(f"owner id {owner!r} cannot name an uploads prefix")
    return f"{UPLOADS_ROOT}{owner}/"


def upload_key(owner: str, upload_id: str, name: str = "") -> str:
    """The key of one file of an upload, e.g. `uploads/<owner>/<id>/audio.npy`; without a
    name, the prefix of the whole upload (deleting it deletes the upload)."""
    return f"{upload_prefix(owner)}{upload_id}/{name}"


def upload_location(key: str) -> tuple[str, str] | None:
    """(owner, upload id) of a key under `UPLOADS_ROOT`, or None for any other key."""
    parts = key.split("/")
    if len(parts) < 4 or f"{parts[0]}/" != UPLOADS_ROOT or not UPLOAD_ID_PATTERN.match(parts[2]):
        return None
    return parts[1], parts[2]


REPLICATE_PREDICTION_CONTENT_TYPE = "application/json"
REPLICATE_PREDICTIONS_ROOT = "replicate/predictions/"


def replicate_prediction_key(prediction_id: str) -> str:
    """Where the ingress leaves a Replicate prediction's result delivered by webhook (JSON: id,
    status, output, error, metrics), for the decoder replica that waits for it. ValueError for an
    id that would break the layout (Replicate's are lower-case letters and digits)."""
    if not prediction_id or not prediction_id.isascii() or not prediction_id.isalnum():
        raise ValueError(f"prediction id {prediction_id!r} cannot name a key")
    return f"{REPLICATE_PREDICTIONS_ROOT}{prediction_id}.json"


class ChecksumMismatch(RuntimeError):
    """What the store holds after a write is not what was sent."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str


class ObjectStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key` with its content type, replacing what was there atomically;
        the stored bytes are verified against a checksum (ChecksumMismatch)."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object; raises KeyError when missing."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None: ...

    def iter_range(
        self, key: str, start: int, end: int, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Bytes `start..end` inclusive, in chunks."""
        ...

    async def delete_prefix(self, prefix: str) -> None: ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a folder-like path ending in "/"), sorted."""
        ...

    async def presigned_url(self, key: str, expires_s: float) -> str | None:
        """A time-limited GET link clients can fetch directly, bypassing the API; None where the
        backend has no such links (local files)."""
        ...


def object_kind(key: str) -> str:
    """What an object is, from its key alone (a metric's low-cardinality tag): render, audio,
    hls, peaks, master, stems, lora, upload or other."""
    parts = key.split("/")
    if parts[0] == "loras":
        return "lora"
    if f"{parts[0]}/" == UPLOADS_ROOT:
        return "upload"
    if parts[0] != "songs" or len(parts) < 4:
        return "other"
    name = parts[3]
    if name in ("stems", "hls"):
        return name
    stem = name.split(".", 1)[0]
    return {"render": "render", "audio": "audio", "peaks": "peaks", "master": "master"}.get(
        stem, "other"
    )
