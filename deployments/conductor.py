"""`Conductor` — claims song and stems jobs from the job store and drives each claim, durably.

What a claim does is in `song_stages.SongStages` (lyrics → tags → N variations rendered and
mastered → done) and `stems_stages.StemsStages` (the stems of one variation, on the StemMaker).
Each kind is driven by a `serve.workflow.leasing.LeasedRunner` (room, heartbeats, the job
timeout, hand-back on shutdown); this deployment holds the two runners, the one claim loop over
both, and the replica's background work: the jobs gauge, retention, webhooks and the backlog it
reports to Serve's autoscaler.

Durability: jobs are *claimed* from the job store with a lease that a heartbeat renews; every stage
result is written back before the next stage starts, and a variation that succeeded is never
rendered again. If this replica dies, its leases expire and any conductor replica (this one after a
restart included) claims the job and resumes from the last finished stage. Claims are counted; a job
that keeps killing its workers fails with a reason. The API nudges a replica with `wake()` so new
jobs start at once; polling covers everything else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

from serve.autoscaling import BacklogReporter
from serve.metrics import song_metrics
from serve.store import (
    open_job_store,
    open_object_store,
)
from serve.workflow import Backoff, patient_store
from serve.workflow.leasing import Claimed, LeasedRunner, LeasedWork
from serve.workflow.retention import RetentionSweeper

from .failures import describe_failure
from .song_stages import SongStages
from .stems_stages import StemsStages

if TYPE_CHECKING:
    from serve.config import AppConfig

logger = logging.getLogger("ray.serve")

# How often each replica counts the store's queued and running songs for `songserve_jobs`
# (Prometheus scrapes about every 10 s; two small counts per interval).
_JOBS_GAUGE_INTERVAL_S = 5.0


class Conductor:
    def __init__(
        self,
        config: AppConfig,
        lyrics: Any,
        tags: Any,
        router: Any,
        postprocessor: Any,
        stems: Any = None,
    ) -> None:
        """`lyrics`, `tags`, `router`, `postprocessor`, `stems` (the StemMaker) are
        DeploymentHandles."""
        self._config = config
        self._jobs_config = config.jobs
        self._store = patient_store(
            open_job_store(config.storage),
            patience_s=config.jobs.store_patience_s,
            backoff=Backoff(config.jobs.retry_backoff_s, config.jobs.retry_backoff_max_s),
        )
        # Metadata only (does a stored render still exist; retention deletes): the conductor
        # never reads audio.
        self._objects = open_object_store(config.storage)
        self._metrics = song_metrics()
        self._songs = SongStages(
            config.jobs,
            self._store,
            self._objects,
            lyrics=lyrics,
            tags=tags,
            router=router.options(stream=True),
            postprocessor=postprocessor,
            metrics=self._metrics,
        )
        self._stems_stages = (
            StemsStages(config.jobs, self._store, stems.options(stream=True))
            if stems is not None
            else None
        )
        # Who holds a lease (diagnostics); each claim's own token is what fences its writes.
        worker = f"conductor@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wake = asyncio.Event()

        def leased(work: LeasedWork[Claimed]) -> LeasedRunner[Claimed]:
            # A drive that ends frees a slot: the claim loop looks for more at once.
            return LeasedRunner(
                work,
                config.jobs,
                worker,
                on_slot_free=self._wake.set,
                describe_failure=describe_failure,
            )

        self._song_runner = leased(self._songs)
        self._runners: list[LeasedRunner[Any]] = [self._song_runner]
        if self._stems_stages is not None:
            self._runners.append(leased(self._stems_stages))
        # Serve runs constructors on the replica's event loop: start claiming right away so jobs
        # left unfinished by a previous run resume without waiting for a request.
        self._claim_loop = asyncio.get_running_loop().create_task(self._claim_forever())
        self._jobs_gauge = asyncio.get_running_loop().create_task(self._count_jobs_forever())
        # Finished songs past jobs.retention_days go, files and records (serve/workflow).
        sweeper = RetentionSweeper(
            config.jobs,
            self._store,
            self._objects,
            sweep_deliveries=bool(config.models.webhook_delivered_pools),
        )
        self._retention = asyncio.get_running_loop().create_task(sweeper.run_forever())
        # Songs with a callback_url get their signed POST (serve/workflow/webhooks.py).
        self._webhooks: asyncio.Task[None] | None = None
        if config.webhooks.enabled:
            from serve.services import song_describer
            from serve.workflow.webhooks import WebhookDispatcher

            dispatcher = WebhookDispatcher(
                config.webhooks,
                self._store,
                song_describer(config, self._store),
                metrics=self._metrics.webhook_deliveries,
            )
            self._webhooks = asyncio.get_running_loop().create_task(dispatcher.run_forever())
        # Backlog autoscaling (serve/autoscaling.py): what `record_autoscaling_stats` reports.
        self._backlog = BacklogReporter(config.models, self._store, lambda: router.pools.remote())

    # -- public methods ---------------------------------------------------------------------------

    async def wake(self) -> None:
        """A job was queued: look for work now instead of at the next poll."""
        self._wake.set()

    async def stop(self, job_id: str) -> None:
        """`job_id` was canceled in the store: stop driving it now, if this replica drives it.
        (Every write of its claim is refused anyway, and its next lease renewal ends the drive:
        this only saves those seconds of rendering.)"""
        if self._song_runner.driving(job_id):
            self._songs.canceling(job_id)
            self._song_runner.cancel(job_id)

    async def __del__(self) -> None:
        """Serve awaits this on graceful shutdown (scale-down, redeploy): stop claiming and hand
        unfinished jobs back so another replica resumes them now, not after their leases expire.
        Only renders in flight are redone."""
        self._claim_loop.cancel()
        self._jobs_gauge.cancel()
        self._retention.cancel()
        if self._webhooks is not None:
            self._webhooks.cancel()  # a delivery cut short is made again once its lease ends
        handed_back = await asyncio.gather(*(runner.hand_back() for runner in self._runners))
        logger.info("released %d unfinished job(s) on shutdown", sum(handed_back))

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's autoscaler polls this on every replica of an autoscaling conductor (one is
        made so when a pool autoscales on backlog): each such pool's render backlog."""
        return await self._backlog.stats()

    async def check_health(self) -> None:
        if self._claim_loop.done():
            error = self._claim_loop.exception()
            raise RuntimeError(f"the conductor's claim loop stopped: {error!r}")

    # -- claiming ---------------------------------------------------------------------------------

    async def _claim_forever(self) -> None:
        config = self._jobs_config
        while True:
            full = False
            try:
                for runner in self._runners:
                    full |= not await runner.claim_while_room()
            except Exception:
                logger.exception("claiming jobs failed; retrying")
                full = True  # look again after the poll interval, not at once
            # Woken by `wake()`, by a finished task freeing a slot, or by the store (a job queued
            # or handed back). Not by the store while this replica is full: it would report the
            # work this replica cannot take at once, again and again (SQLite answers "is there
            # runnable work?"), and the loop would spin. Expired leases notify nobody, so the
            # poll interval bounds every wait.
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
            if not full:
                waits.append(asyncio.ensure_future(self._wait_for_work(config.poll_interval_s)))
            try:
                await asyncio.wait(
                    waits, timeout=config.poll_interval_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
            self._wake.clear()

    async def _count_jobs_forever(self) -> None:
        """Keep `songserve_jobs` current: the backlog an operator sizes pools against."""
        while True:
            try:
                for status in ("queued", "running"):
                    count = await self._store.count_jobs(status)
                    self._metrics.jobs.set(count, tags={"status": status})
            except Exception:  # the store is down: the claim loop reports it
                logger.debug("counting jobs for metrics failed", exc_info=True)
            await asyncio.sleep(_JOBS_GAUGE_INTERVAL_S)

    async def _wait_for_work(self, timeout: float) -> None:
        try:
            await self._store.wait_for_work(timeout)
        except Exception:  # noqa: BLE001 - the store is down: the next claim reports it
            await asyncio.sleep(timeout)
