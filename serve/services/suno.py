"""The Suno-compatible surface (`/api/*`) as a mapping onto the native songs API, so clients
written against the common open Suno API wrappers work unchanged. The same keys, quotas and
tenancy apply: every call goes through `SongService` and `Quotas` as the caller.

- A generation is one native song with two variations; each variation is a clip, whose id is
  `<song id>.<variation index>`.
- Clip status: queued → `queued` (`submitted` before the store has it), running → `streaming`,
  a finished variation → `complete`, a failed or canceled one → `error` (`error_message`
  "canceled" for a song canceled through `POST /v1/songs/{id}/cancel`).
- `audio_url` is the variation's mp3 (made on its first request, as every lazy format), signed
  when the server takes keys.
- `tags` → `style`, `negative_tags` → `negative_style` (recorded; no served model takes a
  negative prompt yet), custom-mode `prompt` → `lyrics`, `title` → `title`, `make_instrumental`
  → `instrumental`, a Suno model name (`chirp-*`) → `auto`.
- `wait_audio: true` answers once every clip is complete or failed (at most
  `api.suno_wait_audio_s`).
- `get_limit` reports the daily song quota as credits, 10 per song (Suno's price of two clips).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from serve.http.errors import ApiError
from serve.schemas import SongRequest, SunoClip, SunoLimit, SunoLyrics

from .views import iso

if TYPE_CHECKING:
    from serve.http.auth import Caller
    from serve.store import JobRecord, JobStore

    from .quotas import Quotas
    from .songs import SongService
    from .tools import ToolService
    from .views import Views

CLIPS_PER_GENERATION = 2
CREDITS_PER_SONG = 10
_SUNO_MODELS = ("chirp-",)  # chirp-v3-0, chirp-v3-5, chirp-v4, chirp-auk …
_STATUS = {
    "queued": "queued",
    "running": "streaming",
    "succeeded": "complete",
    "failed": "error",
    "canceled": "error",  # Suno's clips have no canceled state
}


def clip_id(song_id: str, index: int) -> str:
    return f"{song_id}.{index}"


def parse_clip_id(value: str) -> tuple[str, int]:
    song_id, dot, index = value.strip().rpartition(".")
    if not dot or not song_id or not index.isascii() or not index.isdigit() or len(index) > 2:
        raise ApiError(422, "invalid_request", f"{value!r} is not a clip id (SONG_ID.INDEX)", "ids")
    return song_id, int(index)


class SunoService:
    def __init__(
        self,
        jobs: JobStore,
        songs: SongService,
        tools: ToolService,
        quotas: Quotas,
        views: Views,
        served_models: list[str],
        wait_audio_s: float,
    ) -> None:
        self._wait_audio_s = wait_audio_s
        self._jobs = jobs
        self._songs = songs
        self._tools = tools
        self._quotas = quotas
        self._views = views
        self._models = served_models

    def model(self, name: str | None) -> str:
        if not name or name.startswith(_SUNO_MODELS) or name == "auto":
            return "auto"
        if name in self._models:
            return name
        raise ApiError(
            422,
            "invalid_request",
            f"unknown model {name!r}; use a Suno model name (chirp-…, rendered by this server's "
            f"default) or one of: {', '.join(self._models)}",
            "model",
        )

    def request(self, suno_field: dict[str, str], **fields: Any) -> SongRequest:
        """The native request of a Suno one; a value the native API refuses is a 422 naming the
        Suno field (`suno_field`: native name → Suno name)."""
        from pydantic import ValidationError

        try:
            return SongRequest(variations=CLIPS_PER_GENERATION, **fields)
        except ValidationError as error:
            first = error.errors()[0]
            native = str(first["loc"][0]) if first.get("loc") else ""
            field = suno_field.get(native, native) or None
            raise ApiError(422, "invalid_request", f"{field}: {first['msg']}", field) from None

    async def generate(
        self, request: SongRequest, caller: Caller, wait_audio: bool
    ) -> list[SunoClip]:
        accepted = await self._songs.create(request, caller, None)
        job = await self._songs.owned_job(accepted.id, caller.owner)
        if wait_audio:
            job = await self._finished(job)
        return self._clips(job)

    async def get(self, ids: str | None, caller: Caller) -> list[SunoClip]:
        if not ids:
            page = await self._jobs.list_jobs(caller.owner, limit=20)
            return [clip for job in page[0] for clip in self._clips(job)]
        wanted = [parse_clip_id(part) for part in ids.split(",") if part.strip()][:100]
        clips: list[SunoClip] = []
        for song_id, index in wanted:
            job = await self._songs.owned_job(song_id, caller.owner)
            clips.extend(clip for clip in self._clips(job) if clip.id == clip_id(job.id, index))
        return clips

    async def lyrics(self, prompt: str) -> SunoLyrics:
        from pydantic import ValidationError

        from serve.schemas import LyricsRequest

        try:
            request = LyricsRequest(prompt=prompt)
        except ValidationError as error:
            message = f"prompt: {error.errors()[0]['msg']}"
            raise ApiError(422, "invalid_request", message, "prompt") from None
        written = await self._tools.write_lyrics(request)
        title = prompt.strip().splitlines()[0][:60] if prompt.strip() else "Untitled"
        return SunoLyrics(text=written.lyrics, title=title, status="complete")

    async def limit(self, caller: Caller) -> SunoLimit:
        usage = await self._quotas.usage(caller)
        songs = usage.songs_today
        left = None if songs.limit is None else max(songs.limit - songs.used, 0) * CREDITS_PER_SONG
        return SunoLimit(
            credits_left=left,
            period="day",
            monthly_limit=None,
            monthly_usage=int(songs.used) * CREDITS_PER_SONG,
        )

    async def _finished(self, job: JobRecord) -> JobRecord:
        """`job` once it is finished (or as it is after `api.suno_wait_audio_s`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_audio_s
        after = 0
        while not job.is_terminal and (remaining := deadline - loop.time()) > 0:
            events = await self._jobs.wait_for_events(job.id, after, min(remaining, 5.0))
            after = events[-1].seq if events else after
            latest = await self._jobs.get_job(job.id)
            if latest is None:
                break
            job = latest
        return job

    def _clips(self, job: JobRecord) -> list[SunoClip]:
        request: dict[str, Any] = job.request
        error = (job.error or {}).get("message")
        if job.status == "canceled":
            error = "canceled"
        clips = []
        for variation in job.variations:
            status = _STATUS.get(variation.status, "submitted")
            path = f"/v1/songs/{job.id}/variations/{variation.index}/audio.mp3"
            ready = variation.status == "succeeded"
            clips.append(
                SunoClip(
                    id=clip_id(job.id, variation.index),
                    title=request.get("title") or "",
                    status=status,  # type: ignore[arg-type]
                    audio_url=self._views.media_url(path, job.owner) if ready else None,
                    lyric=job.lyrics or request.get("lyrics") or "",
                    tags=request.get("style") or "",
                    negative_tags=request.get("negative_style") or "",
                    duration=variation.duration_s,
                    model_name=variation.model or request.get("model") or "auto",
                    created_at=iso(job.created_at),
                    error_message=(variation.error or {}).get("message") or error
                    if status == "error"
                    else None,
                )
            )
        return clips
