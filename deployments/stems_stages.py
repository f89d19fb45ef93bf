"""The stems workflow a Conductor drives for each claimed stems job (one variation of a finished
song): the StemMaker renders or separates the stems and delivers them; progress and the outcome go
to the song's event log as `stems_progress` and `stems` events. One failure ends the attempt (the
client may ask again). `StemsStages` is the stems kind of `serve.workflow.leasing.LeasedWork`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from pipeline.lyrics import parse_lyrics
from pipeline.tags import StyleTags
from serve.store import JobRecord, LeaseLost, StemsRecord

from .song_stages import claim_token, render_request_of, song_provenance
from .stem_maker import MadeStems, StemsProgress, StemsTask

if TYPE_CHECKING:
    from serve.config import JobsConfig
    from serve.store import JobStore

logger = logging.getLogger("ray.serve")

# Share of a stems job's progress bar taken by rendering or separating; the rest is delivery.
_STEMS_SOURCE_SHARE = 0.7


class StemsStages:
    """The stems kind of leased work: claims stems jobs and has the StemMaker make each."""

    def __init__(self, jobs_config: JobsConfig, store: JobStore, stems: Any) -> None:
        """`stems`: the StemMaker's streaming handle."""
        self._jobs_config = jobs_config
        self._store = store
        self._stems = stems

    # -- leased work (serve.workflow.leasing.LeasedWork) ------------------------------------------

    @property
    def max_concurrent(self) -> int:
        return self._jobs_config.max_concurrent_stems

    # Deterministic or not, one failure ends the attempt: the client may ask again.
    error_code = "stems_failed"

    def key(self, record: StemsRecord) -> tuple[str, int]:
        return stems_key(record)

    def describe(self, record: StemsRecord) -> str:
        return f"the stems of {record.job_id}/{record.index}"

    async def claim(
        self, worker: str, *, lease_s: float, max_attempts: int, exclude: tuple[Any, ...]
    ) -> StemsRecord | None:
        return await self._store.claim_next_stems(
            worker, lease_s=lease_s, max_attempts=max_attempts, exclude=exclude
        )

    async def renew(self, record: StemsRecord, *, lease_s: float) -> None:
        await self._store.renew_stems_lease(
            record.job_id, record.index, claim_token(record), lease_s=lease_s
        )

    async def release(self, record: StemsRecord) -> None:
        await self._store.release_stems(record.job_id, record.index, claim_token(record))

    async def stopped(self, record: StemsRecord, why: BaseException) -> None:
        if isinstance(why, LeaseLost):
            logger.warning("lost the lease on %s", self.describe(record))
        else:
            logger.warning("stopped making %s", self.describe(record))

    def ended(self, record: StemsRecord) -> None:
        return None  # nothing is kept per drive

    # -- the stems' stages ------------------------------------------------------------------------

    async def fail(self, record: StemsRecord, code: str, message: str) -> None:
        """End the stems job as failed with `code` (unless its claim was lost meanwhile)."""
        error = {"code": code, "message": message}
        event = {"variation": record.index, "status": "failed", "error": error}
        with contextlib.suppress(LeaseLost):
            await self._store.update_stems(
                *stems_key(record),
                claim_token(record),
                status="failed",
                error=error,
                event=("stems", event),
            )

    async def run(self, record: StemsRecord) -> None:
        """Make and deliver the stems of a claimed stems job, logging its progress on the
        song's event log."""
        job = await self._store.get_job(record.job_id)
        assert job is not None, "a stems job outlived its song"
        task = _stems_task(job, record.index)
        await self._store.update_stems(
            *stems_key(record),
            claim_token(record),
            progress=0.0,
            event=("stems", {"variation": record.index, "status": "running"}),
        )
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
                *stems_key(record),
                claim_token(record),
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
            *stems_key(record),
            claim_token(record),
            status="succeeded",
            progress=1.0,
            objects=made.objects,
            info=info,
            error=None,
            event=("stems", event),
        )


def stems_key(record: StemsRecord) -> tuple[str, int]:
    return record.job_id, record.index


def _stems_progress(item: StemsProgress) -> float:
    """A stems job's progress bar (0–1; 1.0 is reserved for its `stems` event)."""
    fraction = item.step / max(item.steps, 1)
    if item.stage == "delivering":
        overall = _STEMS_SOURCE_SHARE + (1 - _STEMS_SOURCE_SHARE) * fraction
    else:
        overall = _STEMS_SOURCE_SHARE * fraction
    return round(min(overall, 0.999), 4)


def _stems_task(job: JobRecord, index: int) -> StemsTask:
    """What the StemMaker needs to know of a finished variation."""
    variation = next(v for v in job.variations if v.index == index)
    if variation.status != "succeeded" or variation.model is None:
        raise RuntimeError(f"variation {index} of {job.id} is {variation.status}, not succeeded")
    render = render_request_of(
        job, variation, parse_lyrics(job.lyrics or ""), StyleTags.from_dict(job.tags or {})
    )
    return StemsTask(
        render=render,
        model=variation.model,
        model_version=variation.model_version or "",
        sample_rate=int(variation.sample_rate or 0),
        loudness_lufs=float(job.request["loudness_lufs"]),
        objects=variation.objects,
        provenance=song_provenance(job.id, index, render.seed, job.request),
        fingerprint=variation.render.get("fingerprint"),
    )
