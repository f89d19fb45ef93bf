"""Where a queued song stands: its place in line (from the job store) and when it should start
(from the audio still to render before it and the decoder pools' load and measured speed)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .pool_load import PoolLoad, expected_start_s, serving_pools
from .schemas import QueueOut
from .store.records import BacklogKey, QueuePlace

if TYPE_CHECKING:
    from .config import AppConfig
    from .services.graph import Graph
    from .store import JobStore

logger = logging.getLogger("ray.serve")

# How long the pools' load read from the router is reused, and how long reading it may take.
_POOLS_CACHE_S = 2.0
_POOLS_TIMEOUT_S = 5.0
# How long one read of every queued song's place serves all asking (the SSE streams of queued
# songs look once a second): a place is at most this stale.
_PLACES_CACHE_S = 1.0


class QueueEstimator:
    def __init__(self, config: AppConfig, jobs: JobStore, graph: Graph | None) -> None:
        """`graph`: where the router's `pools()` come from (None: the configured figures only)."""
        self._config = config
        self._jobs = jobs
        self._graph = graph
        # The router's last `pools()` (see _pool_loads); until it answers, the configured figures.
        self._pools_seen: list[dict[str, Any]] = [
            {
                "name": pool.name,
                "model": pool.model,
                "placeable": True,
                "replicas": pool.deployment.num_replicas,
                "capacity": pool.deployment.num_replicas * pool.deployment.max_ongoing_requests,
                "in_flight": 0,
                "seconds_per_audio_second": pool.expected_render_s_per_audio_s,
            }
            for pool in config.models.pools
        ]
        self._pools_at = -float("inf")
        # Every queued song's place, read at once (`JobStore.queue_places`) and shared: a stream
        # per queued song asking on its own would cost a query over the whole line each, every
        # second, for every song in it.
        self._places: dict[str, QueuePlace] = {}
        self._places_at = -float("inf")

    async def queue_out(self, job_id: str, request: dict[str, Any]) -> QueueOut | None:
        """A queued song's place in line and expected start; None once it left the queue."""
        place = await self._place(job_id)
        if place is None:
            return None
        loads = await self._pool_loads(BacklogKey.of_request(request))
        start = expected_start_s(place.audio_s_ahead, loads) if loads else None
        return QueueOut(
            position=place.position,
            expected_start_s=None if start is None else round(start, 1),
        )

    async def _place(self, job_id: str) -> QueuePlace | None:
        """From the shared read of the line, at most `_PLACES_CACHE_S` old; a song that read
        does not list (queued since, or no longer queued) is asked about on its own."""
        now = asyncio.get_running_loop().time()
        if now - self._places_at >= _PLACES_CACHE_S:
            # Marked fresh before the read, so songs asking meanwhile use the last read.
            self._places_at = now
            try:
                self._places = await self._jobs.queue_places()
            except BaseException:
                self._places_at = -float("inf")  # the next caller reads again
                raise
        place = self._places.get(job_id)
        return place if place is not None else await self._jobs.queue_place(job_id)

    async def _pool_loads(self, song: BacklogKey) -> list[PoolLoad]:
        """The placeable pools that would render `song` (`serving_pools`: those of its model,
        for auto of the first model in `candidate_models` order with any, that serve its task),
        as the router last reported them (the configured figures until it has). So an auto cover
        waits for the pools that cover, and a LoRA song for the pools whose model takes one. The
        report is cached for `_POOLS_CACHE_S`, so queued songs polled at once cost one router
        call; [] when no placeable pool renders the song."""
        now = asyncio.get_running_loop().time()
        if self._graph is not None and now - self._pools_at >= _POOLS_CACHE_S:
            self._pools_at = now
            try:
                self._pools_seen = await asyncio.wait_for(self._graph.pools(), _POOLS_TIMEOUT_S)
            except Exception as error:  # noqa: BLE001 - an estimate is optional
                logger.warning("could not read the decoder pools' load: %r", error)
        serves = {pool.name: pool.served_tasks for pool in self._config.models.pools}
        pools = serving_pools(
            [p for p in self._pools_seen if p["placeable"]],
            model=song.model,
            task=song.task,
            language=song.language,
            auto_order=self._config.models.auto_order,
            model_of=lambda p: str(p["model"]),
            tasks_of=lambda p: serves.get(p["name"], frozenset()),
            with_lora=song.lora,
            reference=song.reference,
        )
        return [
            PoolLoad(
                replicas=max(p["replicas"] or 0, 1),
                capacity=p["capacity"],
                renders=p["in_flight"],
                audio_s=p.get("in_flight_audio_s", 0.0),
                seconds_per_audio_second=p["seconds_per_audio_second"],
            )
            for p in pools
        ]
