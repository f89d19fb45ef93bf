"""The song workflow a Conductor drives for each claimed song: lyrics (description mode only) →
tags → N variations in parallel (each: render on a decoder pool through the router, then master,
encode and store on the post-processor) → done.

Every stage result is written back, fenced by the claim's token, before the next stage starts,
so a later claim of the same song resumes from the last finished stage: lyrics and tags are read
back, a variation that succeeded is never made again, and a render whose bytes survive is
mastered again instead of rendered. Text stages and variations are retried with backoff within
a claim; what still fails fails the song with a code (`lyrics_failed`, `tags_failed`,
`generation_failed`).

`SongStages` is the song kind of `serve.workflow.leasing.LeasedWork`: how a song is claimed,
renewed, released and failed. The lease around each drive (heartbeats, concurrency, the job
timeout, hand-back on shutdown) is the `LeasedRunner`'s, which the Conductor holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.lyrics import LyricSection, parse_lyrics
from pipeline.song_models import RenderRequest, SongEdit
from pipeline.tags import StyleTags
from serve.metrics import SongMetrics, observe_stage, stage_tags
from serve.store import JobRecord, LeaseLost, StemsRecord, VariationRecord
from serve.store.records import requested_lora_ref, requested_reference_key
from serve.workflow import Backoff, StageFailed, retry_stage

from .failures import describe_failure
from .handles import cancelled_unless_finished
from .post_processor import Provenance
from .renders import RenderedSong, RenderProgress
from .song_router import RenderingOn

if TYPE_CHECKING:
    from serve.config import JobsConfig
    from serve.store import JobStore, ObjectStore

logger = logging.getLogger("ray.serve")

T = TypeVar("T")

# Share of a job's progress bar each part takes. Rendering dominates the wait.
_TEXT_STAGES_SHARE = 0.05  # lyrics + tags
_RENDER_SHARE_OF_VARIATION = 0.85  # the rest of a variation is post-processing


class SongStages:
    """The song kind of leased work: claims songs and takes each claim to `done` (or a failure
    with its code), writing every result under the claim's token."""

    def __init__(
        self,
        jobs_config: JobsConfig,
        store: JobStore,
        objects: ObjectStore,
        *,
        lyrics: Any,
        tags: Any,
        router: Any,
        postprocessor: Any,
        metrics: SongMetrics,
    ) -> None:
        """`lyrics`, `tags`, `router` (a streaming handle) and `postprocessor` are the
        deployments' handles; `objects` is only asked whether a stored render still exists."""
        self._jobs_config = jobs_config
        self._store = store
        self._objects = objects
        self._lyrics = lyrics
        self._tags = tags
        self._router = router
        self._postprocessor = postprocessor
        self._metrics = metrics
        self._canceling: set[str] = set()  # songs `canceling` was told of, still being driven

    # -- leased work (serve.workflow.leasing.LeasedWork) ------------------------------------------

    @property
    def max_concurrent(self) -> int:
        return self._jobs_config.max_concurrent_jobs

    error_code = "internal_error"

    def key(self, job: JobRecord) -> str:
        return job.id

    def describe(self, job: JobRecord) -> str:
        return job.id

    async def claim(
        self, worker: str, *, lease_s: float, max_attempts: int, exclude: tuple[Any, ...]
    ) -> JobRecord | None:
        job = await self._store.claim_next(
            worker, lease_s=lease_s, max_attempts=max_attempts, exclude=exclude
        )
        if job is not None and job.attempts == 1:  # a re-claim waited for a lost conductor
            self._metrics.queue_wait.observe(max(time.time() - job.created_at, 0.0))
        return job

    async def renew(self, job: JobRecord, *, lease_s: float) -> None:
        await self._store.renew_lease(job.id, claim_token(job), lease_s=lease_s)

    async def release(self, job: JobRecord) -> None:
        await self._store.release(job.id, claim_token(job))

    def canceling(self, job_id: str) -> None:
        """`job_id` was canceled in the store and its drive is being cancelled."""
        self._canceling.add(job_id)

    async def stopped(self, job: JobRecord, why: BaseException) -> None:
        # The lease ends when another claim took the job over, and when the job was canceled
        # (the store ended it): the job's own record says which.
        if await self._was_canceled(job):  # counted by the API, where it was canceled
            logger.info("stopped driving %s: it was canceled", job.id)
        elif isinstance(why, LeaseLost):
            logger.warning("lost the lease on %s; another conductor owns it now", job.id)
        else:
            logger.warning("stopped driving %s", job.id)

    def ended(self, job: JobRecord) -> None:
        self._canceling.discard(job.id)

    async def _was_canceled(self, job: JobRecord) -> bool:
        """Whether a drive that ended early ended because the job was canceled."""
        if job.id in self._canceling:
            return True
        try:
            current = await self._store.get_job(job.id)
        except Exception:  # noqa: BLE001 - the store is down: say nothing about the outcome
            return False
        return current is not None and current.status == "canceled"

    # -- the song's stages ------------------------------------------------------------------------

    async def fail(self, job: JobRecord, code: str, message: str) -> None:
        """End the song as failed with `code` (unless its claim was lost meanwhile)."""
        error = {"code": code, "message": message}
        with contextlib.suppress(LeaseLost):
            await self._store.append_event(
                job.id,
                "error",
                error,
                token=claim_token(job),
                job_fields={"status": "failed", "stage": "failed", "error": error},
            )
            self.count_outcome(job, "failed", code)

    def count_outcome(self, job: JobRecord, outcome: str, code: str) -> None:
        metrics = self._metrics
        metrics.finished.inc(tags={"outcome": outcome, "code": code})
        metrics.attempts.observe(job.attempts, tags={"outcome": outcome})
        song_seconds = max(time.time() - job.created_at, 0.0)
        metrics.song_seconds.observe(song_seconds, tags={"outcome": outcome})

    async def _stage(self, job: JobRecord, stage: str, progress: float) -> None:
        await self._store.append_event(
            job.id,
            "stage",
            {"stage": stage},
            token=claim_token(job),
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

    async def run(self, job: JobRecord) -> None:
        """Take a claimed song from its last finished stage to `done`; a stage that fails for
        good fails the song with its code. LeaseLost and cancellation propagate."""
        request = job.request
        try:
            sections = await self._lyrics_stage(job, request)
            tags = await self._tags_stage(job, request)
            await self._stage(job, "generating", _TEXT_STAGES_SHARE)
            await self._variations(job, sections, tags)
        except StageFailed as failure:
            await self.fail(job, f"{failure.stage}_failed", str(failure))
            return
        await self._store.append_event(
            job.id,
            "done",
            {"status": "succeeded", "succeeded": len(job.variations), "failed": 0},
            token=claim_token(job),
            job_fields={"status": "succeeded", "stage": "done", "progress": 1.0},
        )
        self.count_outcome(job, "succeeded", "ok")

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
        await self._store.update_job(job.id, claim_token(job), lyrics=text, lyrics_source=source)
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
        await self._store.update_job(job.id, claim_token(job), tags=tags.to_dict())
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
        render_request = render_request_of(job, variation, sections, tags)
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
                job.id, index, claim_token(job), status="failed", error=error
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
            job.id, index, claim_token(job), status="running", error=None, render={}
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
                        job.id, index, claim_token(job), render={"pool": item.pool}
                    )
        if rendered is None:
            raise RuntimeError("the decoder finished without a song")
        observe_stage("render", time.perf_counter() - started)
        self._observe_render_speed(rendered)
        await self._store.update_variation(
            job.id, index, claim_token(job), render={"raw": asdict(rendered)}
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
            provenance=song_provenance(job.id, index, render_request.seed, request),
        )
        observe_stage("postprocess", time.perf_counter() - started)
        for name, seconds in processed.timings_s.items():
            self._metrics.stage_seconds.observe(seconds, tags=stage_tags(name))
        await self._store.update_variation(
            job.id,
            index,
            claim_token(job),
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
            token=claim_token(job),
            job_fields={"progress": overall},
        )

    async def _variation_event(self, job: JobRecord, index: int) -> None:
        current = await self._store.get_job(job.id)
        assert current is not None
        record = next(v for v in current.variations if v.index == index)
        await self._store.append_event(job.id, "variation", asdict(record), token=claim_token(job))


def song_provenance(job_id: str, index: int, seed: int, request: dict[str, Any]) -> Provenance:
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


def claim_token(claimed: JobRecord | StemsRecord) -> str:
    """The claim token of work this conductor claimed (what fences its writes)."""
    assert claimed.lease_token is not None, "not a claimed record"
    return claimed.lease_token


def render_request_of(
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
        lora_id=requested_lora_ref(request),
        lora_scale=float(lora.get("scale", 1.0)),
        edit=_song_edit(request.get("edit")),
        reference_key=requested_reference_key(request),
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
