"""`SongAPI` — the HTTP ingress replica: HTTP API v1 (`serve.http`) over services (`serve.services`)
whose calls into the graph go through this replica's Serve handles (`HandleGraph`).

It validates, persists the job and answers 202 at once; it never waits on generation. Status, SSE
events, audio (with HTTP Range) and peaks are served from the job and object stores, so any ingress
replica can answer for any job.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from serve.http.app import create_app
from serve.http.errors import overloaded
from serve.services import ApiServices, build_services

if TYPE_CHECKING:
    from pipeline.tags import StyleTags
    from serve.config import AppConfig
    from serve.services.graph import WrittenLyricsLike


def _replica_services() -> ApiServices:
    from ray import serve

    return cast(SongAPI, serve.get_replica_context().servable_object).services


app = create_app(_replica_services)


class HandleGraph:
    """`serve.services.graph.Graph` over Serve handles; back-pressure becomes 503 + Retry-After."""

    def __init__(
        self,
        retry_after_s: int,
        conductor: Any,
        lyrics: Any,
        tags: Any,
        router: Any,
        verifier: Any,
        encoder: Any,
    ) -> None:
        self._retry_after_s = retry_after_s
        self._conductor, self._lyrics, self._tags = conductor, lyrics, tags
        self._router, self._verifier, self._encoder = router, verifier, encoder

    async def _call(self, response: Any) -> Any:
        from ray.serve.exceptions import BackPressureError

        try:
            return await response
        except BackPressureError as error:
            raise overloaded(self._retry_after_s) from error

    async def wake_conductor(self) -> None:
        self._conductor.wake.remote()  # fire and forget: polling picks the job up anyway

    async def stop_job(self, job_id: str) -> None:
        self._conductor.stop.remote(job_id)  # fire and forget: the lease renewal catches it too

    async def check_health(self) -> None:
        await asyncio.gather(
            self._conductor.check_health.remote(),
            self._tags.check_health.remote(),
            self._lyrics.check_health.remote(),
        )

    async def write_lyrics(
        self, prompt: str, duration_s: float, *, style: str | None, language: str, seed: int
    ) -> WrittenLyricsLike:
        response = self._lyrics.write.remote(
            prompt, duration_s, style=style, language=language, seed=seed
        )
        return cast("WrittenLyricsLike", await self._call(response))

    async def normalize_tags(self, text: str, *, language: str, instrumental: bool) -> StyleTags:
        response = self._tags.normalize.remote(text, language=language, instrumental=instrumental)
        return cast("StyleTags", await self._call(response))

    async def pools(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], await self._call(self._router.pools.remote()))

    async def verify(self, data: bytes, fmt: str, max_seconds: float) -> dict[str, Any]:
        response = self._verifier.verify.remote(data, fmt, max_seconds)
        return cast(dict[str, Any], await self._call(response))

    async def deliver(self, job_id: str, index: int, fmt: str, token: str) -> str:
        return cast(str, await self._call(self._encoder.deliver.remote(job_id, index, fmt, token)))


class SongAPI:
    """The ingress deployment (`serve.app` wraps it with `serve.ingress(app)`)."""

    def __init__(
        self,
        config: AppConfig,
        conductor: Any,
        lyrics: Any,
        tags: Any,
        router: Any = None,
        verifier: Any = None,
        encoder: Any = None,
    ) -> None:
        graph = HandleGraph(
            config.api.overload_retry_after_s, conductor, lyrics, tags, router, verifier, encoder
        )
        self.services = build_services(config, graph)
        if config.loras.preload:
            # Registering validates each file against the base checkpoint: do it off the
            # constructor so the replica comes up at once.
            self._preloading = asyncio.get_running_loop().create_task(self.services.loras.preload())
