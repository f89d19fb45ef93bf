"""Stems of a finished variation: asked for (queued as a stems job the conductor leases), read,
and their files looked up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.song_contracts import capabilities_of
from serve.http.errors import ApiError

from .media import finished_variation

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.schemas import StemsOut
    from serve.store import JobRecord, JobStore, StemsRecord

    from .graph import Graph
    from .media import MediaService
    from .songs import SongService
    from .views import Views


class StemsService:
    def __init__(
        self,
        config: AppConfig,
        jobs: JobStore,
        songs: SongService,
        media: MediaService,
        graph: Graph,
        views: Views,
    ) -> None:
        self._config = config
        self._jobs = jobs
        self._songs = songs
        self._media = media
        self._graph = graph
        self._views = views

    async def request(self, song_id: str, index: int, owner: str) -> StemsOut:
        """Queue a variation's stems (a failed attempt is queued again); stems already queued,
        running or made are returned as they are."""
        job = await self._songs.owned_job(song_id, owner)
        self._check_possible(job, index)
        record, created = await self._jobs.request_stems(job.id, index)
        if created:
            await self._graph.wake_conductor()
        return self._views.stems(record, owner)

    async def get(self, song_id: str, index: int, owner: str) -> StemsOut:
        job = await self._songs.owned_job(song_id, owner)
        return self._views.stems(await self._record(job, index), owner)

    async def file_key(
        self, song_id: str, index: int, name: str, fmt: str, owner: str
    ) -> tuple[str, str]:
        job = await self._songs.owned_job(song_id, owner)
        record = await self._record(job, index)
        return await self._media.stem_key(job.id, index, name, fmt, owner, record)

    def _check_possible(self, job: JobRecord, index: int) -> None:
        """409 unless the variation is finished and this server can make its stems."""
        variation = finished_variation(job, index, not_ready_status=409)
        exact = capabilities_of(variation.model or "").exact_stems
        if not exact and self._config.postprocess.stems.demucs_checkpoint is None:
            raise ApiError(
                409,
                "stems_unavailable",
                f"variation {index} was made by {variation.model}, which has no exact stems, and "
                "this server has no stem separator (postprocess.stems.demucs_checkpoint)",
                "index",
            )

    async def _record(self, job: JobRecord, index: int) -> StemsRecord:
        record = await self._jobs.get_stems(job.id, index)
        if record is None:
            raise ApiError(
                404,
                "not_found",
                f"no stems were asked for variation {index}: POST "
                f"/v1/songs/{job.id}/variations/{index}/stems to make them",
                "index",
            )
        return record
