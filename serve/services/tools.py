"""The calls a client makes around songs: write lyrics, normalise a style, verify a file's
credentials, see the decoder pools, and health."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from serve.http.errors import ApiError
from serve.schemas import (
    LyricsOut,
    LyricsRequest,
    LyricsSourceOut,
    SectionOut,
    TagsOut,
    TagsRequest,
)

from .views import tags_out

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.store import JobStore

    from .graph import Graph

_HEALTH_TIMEOUT_S = 5.0


class ToolService:
    def __init__(self, config: AppConfig, jobs: JobStore, graph: Graph) -> None:
        self._config = config
        self._jobs = jobs
        self._graph = graph

    async def health(self) -> dict[str, str]:
        """`ok` once the graph answers: job store, conductor, tags and lyrics replicas."""
        try:
            await asyncio.wait_for(
                asyncio.gather(self._jobs.get_job("healthz"), self._graph.check_health()),
                timeout=_HEALTH_TIMEOUT_S,
            )
        except Exception as error:
            raise ApiError(
                503,
                "unavailable",
                f"not ready: {type(error).__name__}: {error}",
                None,
                {"Retry-After": "1"},
            ) from error
        return {"status": "ok"}

    async def write_lyrics(self, body: LyricsRequest) -> LyricsOut:
        written = await self._graph.write_lyrics(
            body.prompt, body.duration_s, style=body.style, language=body.language, seed=body.seed
        )
        return LyricsOut(
            lyrics=written.text,
            sections=[SectionOut(tag=s.tag, lines=list(s.lines)) for s in written.sections],
            source=LyricsSourceOut(
                engine=written.engine,
                model=written.model,
                fallback_reason=written.fallback_reason,
                repairs=written.repairs,
            ),
        )

    async def normalize_tags(self, body: TagsRequest) -> TagsOut:
        tags = await self._graph.normalize_tags(
            body.text, language=body.language, instrumental=body.instrumental
        )
        return tags_out(tags.to_dict())

    async def pools(self) -> list[dict[str, Any]]:
        """The router's report of each pool, with what the pool serves (from the config)."""
        from pipeline.song_contracts import capabilities_of

        served = {pool.name: pool for pool in self._config.models.pools}
        listed = await self._graph.pools()
        for entry in listed:
            pool = served.get(entry["name"])
            if pool is not None:
                capabilities = capabilities_of(pool.model)
                entry |= {
                    "tasks": sorted(pool.served_tasks),
                    "loras": capabilities.loras,
                    "reference_audio": capabilities.reference_audio,
                }
        return listed

    async def verify(self, data: bytes) -> dict[str, Any]:
        """C2PA credentials and watermark of an uploaded audio file. The format is checked from
        its first bytes before anything decodes it; the Verifier does the work."""
        from pipeline.provenance import sniff_audio_format

        limit = self._config.api.max_verify_bytes
        if len(data) > limit:
            raise ApiError(
                413,
                "request_too_large",
                f"files are limited to {limit} bytes (api.max_verify_bytes)",
                "file",
            )
        fmt = sniff_audio_format(data)
        if fmt is None:
            raise ApiError(
                415,
                "unsupported_media_type",
                "the file is not m4a, mp3, flac or wav audio; upload one of those",
                "file",
            )
        return await self._graph.verify(data, fmt, self._config.api.max_verify_seconds)
