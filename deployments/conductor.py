"""`Conductor` — takes each song job through its stages, durably.

Stages: lyrics (description mode only) → tags → generate N variations in parallel (each: render on a
decoder pool through the router, then master/encode/store on the post-processor) → done.

Stems jobs (one per variation, asked for after the song) are claimed and driven the same way, on
the StemMaker; their events (`stems`, `stems_progress`) go to the song's event log.

Durability: jobs are *claimed* from the job store with a lease that a heartbeat renews; every stage
result is written back before the next stage starts, and a variation that succeeded is never
rendered again. If this replica dies, its leases expire and any conductor replica (this one after a
restart included) claims the job and resumes from the last finished stage. Claims are counted; a job
that keeps killing its workers fails with a reason. The API nudges a replica with `wake()` so new
jobs start at once; polling covers everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.lyrics import LyricSection, parse_lyrics
from pipeline.song_models import RenderRequest, SongEdit
from pipeline.tags import StyleTags
from serve.autoscaling import BacklogReporter
from serve.metrics import observe_stage, song_metrics, stage_tags
from serve.store import (
    JobRecord,
    LeaseLost,
    StemsRecord,
    VariationRecord,
    open_job_store,
    open_object_store,
)
from serve.workflow import Backoff, StageFailed, patient_store, retry_stage
from serve.workflow.retention import RetentionSweeper

from .failures import describe_failure
from .handles import cancelled_unless_finished
from .post_processor import Provenance
from .renders import RenderedSong, RenderProgress
from .song_router import RenderingOn
from .stem_maker import MadeStems, StemsProgress, StemsTask

if TYPE_CHECKING:
    from serve.config import AppConfig

logger = logging.getLogger("ray.serve")

T = TypeVar("T")

# Share of a job's progress bar each part takes. Rendering dominates the wait.
_TEXT_STAGES_SHARE = 0.05  # lyrics + tags
_RENDER_SHARE_OF_VARIATION = 0.85  # the rest of a variation is post-processing
# Share of a stems job's progress bar taken by rendering or separating; the rest is delivery.
_STEMS_SOURCE_SHARE = 0.7
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
        # Only to check that a stored render still exists (metadata): the conductor never reads
        # audio.
        self._objects = open_object_store(config.storage)
        self._lyrics = lyrics
        self._tags = tags
        self._router = router.options(stream=True)
        self._postprocessor = postprocessor
        self._stems = stems.options(stream=True) if stems is not None else None
        # Who holds a lease (diagnostics); each claim's own token is what fences its writes.
        self._worker = f"conductor@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._active: dict[str, asyncio.Task[None]] = {}
        self._active_stems: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._tokens: dict[Any, str] = {}  # claim token by job id / (job id, variation)
        self._stopping: set[str] = set()  # jobs `stop` cancelled (canceled in the store)
        self._wake = asyncio.Event()
        # Serve runs constructors on the replica's event loop: start claiming right away so jobs
        # left unfinished by a previous run resume without waiting for a request.
        self._claim_loop = asyncio.get_running_loop().create_task(self._claim_forever())
        self._metrics = song_metrics()
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
        task = self._active.get(job_id)
        if task is not None:
            self._stopping.add(job_id)
            task.cancel()

    async def __del__(self) -> None:
        """Serve awaits this on graceful shutdown (scale-down, redeploy): stop claiming and hand
        unfinished jobs back so another replica resumes them now, not after their leases expire.
        Only renders in flight are redone."""
        self._claim_loop.cancel()
        self._jobs_gauge.cancel()
        self._retention.cancel()
        if self._webhooks is not None:
            self._webhooks.cancel()  # a delivery cut short is made again once its lease ends
        jobs, stems = dict(self._active), dict(self._active_stems)
        tokens = dict(self._tokens)
        for task in [*jobs.values(), *stems.values()]:
            task.cancel()
        await asyncio.gather(*jobs.values(), *stems.values(), return_exceptions=True)
        for job_id in jobs:
            try:
                await self._store.release(job_id, tokens[job_id])
            except Exception:  # the lease then simply expires
                logger.exception("could not release %s", job_id)
        for job_id, index in stems:
            try:
                await self._store.release_stems(job_id, index, tokens[job_id, index])
            except Exception:
                logger.exception("could not release the stems of %s/%d", job_id, index)
        logger.info("released %d unfinished job(s) on shutdown", len(jobs) + len(stems))

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
                full = not await self._claim_songs()
                if self._stems is not None:
                    full |= not await self._claim_stems()
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

    async def _claim_songs(self) -> bool:
        """Claim songs while this replica has room; False when it stopped full (the store may
        still hold runnable songs), True when the store had none left for it."""
        config = self._jobs_config
        while len(self._active) < config.max_concurrent_jobs:
            job = await self._store.claim_next(
                self._worker,
                lease_s=config.lease_s,
                max_attempts=config.max_attempts,
                exclude=tuple(self._active),  # an expired lease of ours: never drive a job twice
            )
            if job is None:
                return True
            logger.info("claimed %s (attempt %d)", job.id, job.attempts)
            if job.attempts == 1:  # a re-claim waited for a lost conductor, not in the queue
                self._metrics.queue_wait.observe(max(time.time() - job.created_at, 0.0))
            self._tokens[job.id] = _token(job)
            task = asyncio.create_task(self._drive(job), name=f"job-{job.id}")
            self._active[job.id] = task
            task.add_done_callback(functools.partial(self._finished, self._active, job.id))
        return False

    async def _claim_stems(self) -> bool:
        """As `_claim_songs`, for stems jobs."""
        config = self._jobs_config
        while len(self._active_stems) < config.max_concurrent_stems:
            record = await self._store.claim_next_stems(
                self._worker,
                lease_s=config.lease_s,
                max_attempts=config.max_attempts,
                exclude=tuple(self._active_stems),
            )
            if record is None:
                return True
            key = (record.job_id, record.index)
            self._tokens[key] = _token(record)
            logger.info("claimed the stems of %s/%d (attempt %d)", *key, record.attempts)
            task = asyncio.create_task(self._drive_stems(record), name=f"stems-{key}")
            self._active_stems[key] = task
            task.add_done_callback(functools.partial(self._finished, self._active_stems, key))
        return False

    def _finished(self, active: dict[Any, asyncio.Task[None]], key: Any, _: Any) -> None:
        active.pop(key, None)
        self._tokens.pop(key, None)
        self._wake.set()  # a slot is free

    async def _drive(self, job: JobRecord) -> None:
        token = _token(job)
        heartbeat = asyncio.create_task(self._heartbeat(job.id, token, asyncio.current_task()))
        try:
            await asyncio.wait_for(self._run_job(job), timeout=self._jobs_config.job_timeout_s)
        except (LeaseLost, asyncio.CancelledError) as stopped:
            # The lease ends when another claim took the job over, and when the job was
            # canceled (the store ended it): the job's own record says which.
            if await self._was_canceled(job):  # counted by the API, where it was canceled
                logger.info("stopped driving %s: it was canceled", job.id)
            elif isinstance(stopped, LeaseLost):
                logger.warning("lost the lease on %s; another conductor owns it now", job.id)
            else:
                logger.warning("stopped driving %s", job.id)
        except TimeoutError:
            await self._fail(
                job,
                "timeout",
                f"the job did not finish within jobs.job_timeout_s "
                f"({self._jobs_config.job_timeout_s:g} s)",
            )
        except Exception as error:
            logger.exception("job %s failed", job.id)
            await self._fail(job, "internal_error", describe_failure(error))
        finally:
            heartbeat.cancel()
            self._stopping.discard(job.id)

    async def _was_canceled(self, job: JobRecord) -> bool:
        """Whether a drive that ended early ended because the job was canceled."""
        if job.id in self._stopping:
            return True
        try:
            current = await self._store.get_job(job.id)
        except Exception:  # noqa: BLE001 - the store is down: say nothing about the outcome
            return False
        return current is not None and current.status == "canceled"

    async def _heartbeat(self, job_id: str, token: str, driver: asyncio.Task[Any] | None) -> None:
        config = self._jobs_config
        while True:
            await asyncio.sleep(config.heartbeat_s)
            try:
                await self._store.renew_lease(job_id, token, lease_s=config.lease_s)
            except LeaseLost:
                if driver is not None:
                    driver.cancel()
                return
            except Exception:
                logger.exception("renewing the lease on %s failed", job_id)

    async def _fail(self, job: JobRecord, code: str, message: str) -> None:
        error = {"code": code, "message": message}
        with contextlib.suppress(LeaseLost):
            await self._store.append_event(
                job.id,
                "error",
                error,
                token=_token(job),
                job_fields={"status": "failed", "stage": "failed", "error": error},
            )
            self._count_outcome(job, "failed", code)

    def _count_outcome(self, job: JobRecord, outcome: str, code: str) -> None:
        metrics = self._metrics
        metrics.finished.inc(tags={"outcome": outcome, "code": code})
        metrics.attempts.observe(job.attempts, tags={"outcome": outcome})
        song_seconds = max(time.time() - job.created_at, 0.0)
        metrics.song_seconds.observe(song_seconds, tags={"outcome": outcome})

    # -- stems ------------------------------------------------------------------------------------

    async def _drive_stems(self, record: StemsRecord) -> None:
        config = self._jobs_config
        job_id, index = record.job_id, record.index
        heartbeat = asyncio.create_task(self._stems_heartbeat(record, asyncio.current_task()))
        try:
            await asyncio.wait_for(self._run_stems(record), timeout=config.job_timeout_s)
        except LeaseLost:
            logger.warning("lost the lease on the stems of %s/%d", job_id, index)
        except asyncio.CancelledError:
            logger.warning("stopped making the stems of %s/%d", job_id, index)
        except TimeoutError:
            await self._fail_stems(
                record,
                "timeout",
                f"the stems did not finish within jobs.job_timeout_s ({config.job_timeout_s:g} s)",
            )
        except Exception as error:
            # Deterministic or not, one failure ends the attempt: the client may ask again.
            logger.exception("the stems of %s/%d failed", job_id, index)
            await self._fail_stems(record, "stems_failed", describe_failure(error))
        finally:
            heartbeat.cancel()

    async def _stems_heartbeat(self, record: StemsRecord, driver: asyncio.Task[Any] | None) -> None:
        config = self._jobs_config
        while True:
            await asyncio.sleep(config.heartbeat_s)
            try:
                await self._store.renew_stems_lease(
                    record.job_id, record.index, _token(record), lease_s=config.lease_s
                )
            except LeaseLost:
                if driver is not None:
                    driver.cancel()
                return
            except Exception:
                logger.exception("renewing the stems lease of %s/%d failed", *_key(record))

    async def _fail_stems(self, record: StemsRecord, code: str, message: str) -> None:
        error = {"code": code, "message": message}
        event = {"variation": record.index, "status": "failed", "error": error}
        with contextlib.suppress(LeaseLost):
            await self._store.update_stems(
                *_key(record),
                _token(record),
                status="failed",
                error=error,
                event=("stems", event),
            )

    async def _run_stems(self, record: StemsRecord) -> None:
        job = await self._store.get_job(record.job_id)
        assert job is not None, "a stems job outlived its song"
        task = _stems_task(job, record.index)
        await self._store.update_stems(
            *_key(record),
            _token(record),
            progress=0.0,
            event=("stems", {"variation": record.index, "status": "running"}),
        )
        assert self._stems is not None
        made: MadeStems | None = None
        last_progress_at = 0.0
        async for item in self._stems.make.remote(task):
            if isinstance(item, MadeStems):
                made = item
                continue
            now = time.monotonic()
            if now - last_progress_at < self._jobs_config.progress_interval_s and (
                item.step < item.steps
            ):
                continue
            last_progress_at = now
            progress = _stems_progress(item)
            await self._store.update_stems(
                *_key(record),
                _token(record),
                progress=progress,
                event=(
                    "stems_progress",
                    {
                        "variation": record.index,
                        "stage": item.stage,
                        "step": item.step,
                        "steps": item.steps,
                        "progress": progress,
                    },
                ),
            )
        if made is None:
            raise RuntimeError("the stem maker finished without stems")
        info = {
            "method": made.method,
            "loudness_lufs": made.loudness_lufs,
            "provenance": made.provenance,
            "timings_s": made.timings_s,
        }
        event = {
            "variation": record.index,
            "status": "succeeded",
            "method": made.method,
            "stems": {name: sorted(files) for name, files in made.objects.items()},
        }
        await self._store.update_stems(
            *_key(record),
            _token(record),
            status="succeeded",
            progress=1.0,
            objects=made.objects,
            info=info,
            error=None,
            event=("stems", event),
        )

    # -- stages -----------------------------------------------------------------------------------

    async def _stage(self, job: JobRecord, stage: str, progress: float) -> None:
        await self._store.append_event(
            job.id,
            "stage",
            {"stage": stage},
            token=_token(job),
            job_fields={"stage": stage, "progress": progress},
        )

    async def _retry(self, stage: str, operation: Callable[[], Awaitable[T]], attempts: int) -> T:
        """A stage's call, retried with backoff; LeaseLost ends the drive at once."""
        config = self._jobs_config
        return await retry_stage(
            stage,
            operation,
            attempts,
            Backoff(config.retry_backoff_s, config.retry_backoff_max_s),
            describe=describe_failure,
            fatal=(LeaseLost,),
            # "variation 3" counts as "variation": one series per kind of stage.
            on_retry=lambda: self._metrics.retries.inc(tags={"stage": stage.split()[0]}),
        )

    async def _run_job(self, job: JobRecord) -> None:
        request = job.request
        try:
            sections = await self._lyrics_stage(job, request)
            tags = await self._tags_stage(job, request)
            await self._stage(job, "generating", _TEXT_STAGES_SHARE)
            await self._variations(job, sections, tags)
        except StageFailed as failure:
            await self._fail(job, f"{failure.stage}_failed", str(failure))
            return
        await self._store.append_event(
            job.id,
            "done",
            {"status": "succeeded", "succeeded": len(job.variations), "failed": 0},
            token=_token(job),
            job_fields={"status": "succeeded", "stage": "done", "progress": 1.0},
        )
        self._count_outcome(job, "succeeded", "ok")

    async def _variations(
        self, job: JobRecord, sections: list[LyricSection], tags: StyleTags
    ) -> None:
        """Every variation not yet made, in parallel. When one fails for good the others stop
        (the song fails), and its exception is raised as it is."""
        fractions = {v.index: (1.0 if v.status == "succeeded" else 0.0) for v in job.variations}
        await self._announce_finished_variations(job)
        try:
            async with asyncio.TaskGroup() as group:
                for variation in job.variations:
                    if variation.status != "succeeded":
                        group.create_task(
                            self._variation(job, variation, sections, tags, fractions)
                        )
        except BaseExceptionGroup as failures:
            lost = failures.subgroup(LeaseLost)  # losing the lease outranks any other failure
            raise (lost or failures).exceptions[0] from None

    async def _announce_finished_variations(self, job: JobRecord) -> None:
        """Log the `variation` event of every variation an earlier claim finished but did not
        announce. Recording a variation and logging its event are two writes, and a conductor
        may die (or lose its lease) between them; the variation is not made again, so without
        this its event would never be sent. Exactly once: this claim reads the log after it
        claimed, and no earlier claim can append any more (its token no longer fences)."""
        finished = {v.index for v in job.variations if v.status == "succeeded"}
        after = 0
        while finished and (events := await self._store.events_after(job.id, after)):
            finished -= {e.data.get("index") for e in events if e.type == "variation"}
            after = events[-1].seq
        for index in sorted(finished):
            logger.info(
                "announcing variation %d of %s, finished by an earlier claim", index, job.id
            )
            await self._variation_event(job, index)

    async def _lyrics_stage(self, job: JobRecord, request: dict[str, Any]) -> list[LyricSection]:
        if job.lyrics is not None:
            return parse_lyrics(job.lyrics)
        if request.get("lyrics"):
            text, source = request["lyrics"], {"engine": "user", "model": None}
        elif request.get("instrumental") or not request.get("prompt"):
            text, source = "", None
        else:
            await self._stage(job, "lyrics", 0.0)
            started = time.perf_counter()
            written = await self._retry(
                "lyrics",
                lambda: self._lyrics.write.remote(
                    request["prompt"],
                    request["duration_s"],
                    style=request.get("style"),
                    language=request["language"],
                    seed=job.seed,
                ),
                self._jobs_config.stage_attempts,
            )
            observe_stage("lyrics", time.perf_counter() - started)
            text = written.text
            source = {
                "engine": written.engine,
                "model": written.model,
                "fallback_reason": written.fallback_reason,
                "repairs": written.repairs,
            }
        await self._store.update_job(job.id, _token(job), lyrics=text, lyrics_source=source)
        return parse_lyrics(text)

    async def _tags_stage(self, job: JobRecord, request: dict[str, Any]) -> StyleTags:
        if job.tags is not None:
            return StyleTags.from_dict(job.tags)
        await self._stage(job, "tags", _TEXT_STAGES_SHARE / 2)
        # Without an explicit style, the description itself names the style ("a sunny indie-pop
        # song about …").
        style_text = request.get("style") or request.get("prompt")
        started = time.perf_counter()
        tags: StyleTags = await self._retry(
            "tags",
            lambda: self._tags.normalize.remote(
                style_text, language=request["language"], instrumental=request["instrumental"]
            ),
            self._jobs_config.stage_attempts,
        )
        observe_stage("tags", time.perf_counter() - started)
        await self._store.update_job(job.id, _token(job), tags=tags.to_dict())
        return tags

    async def _variation(
        self,
        job: JobRecord,
        variation: VariationRecord,
        sections: list[LyricSection],
        tags: StyleTags,
        fractions: dict[int, float],
    ) -> None:
        """Render (unless a stored render survives from an earlier try) and master one
        variation; both steps are retried with backoff. A variation that still fails is
        recorded, and StageFailed fails the song: it never ends `succeeded` with a hole. The
        only terminal event a variation sends is its `variation` event on success; a failure
        is told by the song's `error` event."""
        render_request = _render_request(job, variation, sections, tags)
        index = variation.index
        rendered = await self._surviving_render(variation)
        attempts = self._jobs_config.variation_attempts

        async def make() -> None:
            nonlocal rendered
            if rendered is None:
                rendered = await self._render(job, render_request, fractions)
            try:
                await self._master(job, render_request, rendered, fractions)
            except KeyError:  # the stored render is gone: render again on the next try
                rendered = None
                raise

        try:
            await self._retry(f"variation {index}", make, attempts)
        except StageFailed as failure:
            error = {"code": "generation_failed", "message": str(failure)}
            await self._store.update_variation(
                job.id, index, _token(job), status="failed", error=error
            )
            reason = f"variation {index}: {failure.reason}"
            raise StageFailed("generation", failure.attempts, reason) from failure

    async def _surviving_render(self, variation: VariationRecord) -> RenderedSong | None:
        """The render an earlier claim stored but could not master, when its bytes still exist."""
        raw = variation.render.get("raw")
        if not raw:
            return None
        try:
            rendered = RenderedSong(**raw)
        except TypeError:  # recorded by a version whose reference had other fields
            return None
        if await self._objects.stat(rendered.render_key) is None:
            return None
        logger.info("mastering the stored render %s again (no new render)", rendered.render_key)
        return rendered

    async def _render(
        self, job: JobRecord, render_request: RenderRequest, fractions: dict[int, float]
    ) -> RenderedSong:
        """Render on a decoder pool (through the router); the render is stored by the decoder and
        its reference recorded on the variation before anything else can fail."""
        index = render_request.variation
        # `render` cleared: a pool named by a failed earlier try renders nothing now.
        await self._store.update_variation(
            job.id, index, _token(job), status="running", error=None, render={}
        )
        fractions[index] = 0.0
        rendered: RenderedSong | None = None
        last_progress_at = 0.0
        started = time.perf_counter()
        stream = self._router.generate.remote(render_request, job.request["model"])
        async with cancelled_unless_finished(stream):
            async for item in stream:
                if isinstance(item, RenderProgress):
                    fractions[index] = _RENDER_SHARE_OF_VARIATION * item.step / max(item.steps, 1)
                    now = time.monotonic()
                    if (
                        now - last_progress_at >= self._jobs_config.progress_interval_s
                        or item.step == item.steps
                    ):
                        last_progress_at = now
                        await self._progress(
                            job, "generating", index, item.step, item.steps, fractions
                        )
                elif isinstance(item, RenderedSong):
                    rendered = item
                elif isinstance(item, RenderingOn):
                    # What the store counts renders in flight per pool by, cluster-wide.
                    await self._store.update_variation(
                        job.id, index, _token(job), render={"pool": item.pool}
                    )
        if rendered is None:
            raise RuntimeError("the decoder finished without a song")
        observe_stage("render", time.perf_counter() - started)
        self._observe_render_speed(rendered)
        await self._store.update_variation(
            job.id, index, _token(job), render={"raw": asdict(rendered)}
        )
        return rendered

    async def _master(
        self,
        job: JobRecord,
        render_request: RenderRequest,
        rendered: RenderedSong,
        fractions: dict[int, float],
    ) -> None:
        """Post-process a stored render into the delivered files, and record the variation."""
        index, request = render_request.variation, job.request
        fractions[index] = _RENDER_SHARE_OF_VARIATION
        await self._progress(job, "postprocessing", index, 0, 1, fractions)
        started = time.perf_counter()
        processed = await self._postprocessor.process.remote(
            rendered,
            job_id=job.id,
            index=index,
            target_lufs=float(request["loudness_lufs"]),
            provenance=_provenance(job.id, index, render_request.seed, request),
        )
        observe_stage("postprocess", time.perf_counter() - started)
        for name, seconds in processed.timings_s.items():
            self._metrics.stage_seconds.observe(seconds, tags=stage_tags(name))
        await self._store.update_variation(
            job.id,
            index,
            _token(job),
            status="succeeded",
            model=rendered.model,
            model_version=rendered.model_version,
            duration_s=round(processed.duration_s, 3),
            sample_rate=processed.sample_rate,
            loudness_lufs=processed.loudness_lufs,
            true_peak_dbtp=processed.true_peak_dbtp,
            objects=processed.objects,
            render={
                "raw": asdict(rendered),
                "replica": rendered.replica,
                "batch_size": rendered.batch_size,
                "render_started_at": rendered.render_started_at,
                "render_finished_at": rendered.render_finished_at,
                "model_details": rendered.details,
                "postprocess_s": processed.timings_s,
                "provenance": processed.provenance,
                "fingerprint": processed.fingerprint,
            },
            error=None,
        )
        fractions[index] = 1.0
        await self._progress(job, "postprocessing", index, 1, 1, fractions)
        await self._variation_event(job, index)

    def _observe_render_speed(self, rendered: RenderedSong) -> None:
        speed = rendered.seconds_per_audio_second
        if speed is not None:
            self._metrics.render_speed.observe(
                speed, tags={"pool": rendered.pool or "unknown", "model": rendered.model}
            )

    async def _progress(
        self,
        job: JobRecord,
        stage: str,
        variation: int,
        step: int,
        steps: int,
        fractions: dict[int, float],
    ) -> None:
        overall = _TEXT_STAGES_SHARE + (1 - _TEXT_STAGES_SHARE) * (
            sum(fractions.values()) / max(len(fractions), 1)
        )
        overall = round(min(overall, 0.999), 4)  # 1.0 is reserved for `done`
        await self._store.append_event(
            job.id,
            "progress",
            {
                "stage": stage,
                "variation": variation,
                "step": step,
                "steps": steps,
                "progress": overall,
            },
            token=_token(job),
            job_fields={"progress": overall},
        )

    async def _variation_event(self, job: JobRecord, index: int) -> None:
        current = await self._store.get_job(job.id)
        assert current is not None
        record = next(v for v in current.variations if v.index == index)
        await self._store.append_event(job.id, "variation", asdict(record), token=_token(job))


def _provenance(job_id: str, index: int, seed: int, request: dict[str, Any]) -> Provenance:
    """What a variation's (or its stems') content credentials say about its making. The user's
    text is only hashed: the prompt in description mode, else the lyrics, else the style. The
    LoRA is named by the id the user gave, not its ref (which names the owner)."""
    from pipeline.provenance import prompt_sha256

    text = request.get("prompt") or request.get("lyrics") or request.get("style") or ""
    lora_id = (request.get("lora") or {}).get("id")
    edit = request.get("edit") or {}
    source = edit.get("source") or {}
    return Provenance(
        title=f"songserve {job_id} variation {index}",
        seed=seed,
        prompt_sha256=prompt_sha256(text),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        lora_id=lora_id,
        edit=edit.get("task"),
        source=(
            f"songserve:upload/{source['upload']}"
            if "upload" in source
            else f"songserve:song/{source['song']}/variation/{source['variation']}"
            if "song" in source
            else None
        ),
        source_title=edit.get("source_title"),
        source_key=edit.get("ingredient_key"),
    )


def _key(record: StemsRecord) -> tuple[str, int]:
    return record.job_id, record.index


def _token(claimed: JobRecord | StemsRecord) -> str:
    """The claim token of work this conductor claimed (what fences its writes)."""
    assert claimed.lease_token is not None, "not a claimed record"
    return claimed.lease_token


def _stems_progress(item: StemsProgress) -> float:
    """A stems job's progress bar (0–1; 1.0 is reserved for its `stems` event)."""
    fraction = item.step / max(item.steps, 1)
    if item.stage == "delivering":
        overall = _STEMS_SOURCE_SHARE + (1 - _STEMS_SOURCE_SHARE) * fraction
    else:
        overall = _STEMS_SOURCE_SHARE * fraction
    return round(min(overall, 0.999), 4)


def _render_request(
    job: JobRecord, variation: VariationRecord, sections: list[LyricSection], tags: StyleTags
) -> RenderRequest:
    """How a variation of `job` is rendered (and rendered again for its exact stems)."""
    request = job.request
    lora = request.get("lora") or {}
    return RenderRequest(
        job_id=job.id,
        variation=variation.index,
        seed=variation.seed if variation.seed is not None else job.seed + variation.index,
        duration_s=float(request["duration_s"]),
        tags=tags,
        sections=sections,
        instrumental=bool(request["instrumental"]),
        language=request["language"],
        # The ref the song was accepted with (serve.loras); songs accepted before LoRAs had
        # scopes stored only the id, which names an old-layout (shared) LoRA.
        lora_id=lora.get("ref") or lora.get("id"),
        lora_scale=float(lora.get("scale", 1.0)),
        edit=_song_edit(request.get("edit")),
        reference_key=(request.get("reference") or {}).get("key"),
    )


def _song_edit(edit: dict[str, Any] | None) -> SongEdit | None:
    """The edit the API resolved and stored with the request (serve.services.editing)."""
    if not edit:
        return None
    return SongEdit(
        task=edit["task"],
        source_key=edit["source_key"],
        source_duration_s=float(edit["source_duration_s"]),
        start_s=float(edit.get("start_s", 0.0)),
        end_s=float(edit.get("end_s", 0.0)),
        strength=float(edit.get("strength", 1.0)),
    )


def _stems_task(job: JobRecord, index: int) -> StemsTask:
    """What the StemMaker needs to know of a finished variation."""
    variation = next(v for v in job.variations if v.index == index)
    if variation.status != "succeeded" or variation.model is None:
        raise RuntimeError(f"variation {index} of {job.id} is {variation.status}, not succeeded")
    render = _render_request(
        job, variation, parse_lyrics(job.lyrics or ""), StyleTags.from_dict(job.tags or {})
    )
    return StemsTask(
        render=render,
        model=variation.model,
        model_version=variation.model_version or "",
        sample_rate=int(variation.sample_rate or 0),
        loudness_lufs=float(job.request["loudness_lufs"]),
        objects=variation.objects,
        provenance=_provenance(job.id, index, render.seed, job.request),
        fingerprint=variation.render.get("fingerprint"),
    )
