"""`JobStore.backlog_by_request`, run against every backend (SQLite and Postgres): the unrendered
work backlog autoscaling counts, by requested model, task, language and whether the song brings
a LoRA or a timbre reference, split into variations rendering under a live claim and all the
others."""

from __future__ import annotations

import asyncio
from typing import Any

from serve.store import BacklogKey, JobStore, ModelBacklog
from serve.store.records import JobRecord
from tests.store_backends import Backend


async def _song(
    store: JobStore, model: str, duration_s: float, variations: int = 2, **request: Any
) -> JobRecord:
    job, created = await store.create_job(
        owner="a",
        request={"model": model, "duration_s": duration_s, "prompt": "x", **request},
        seed=1,
        variations=variations,
    )
    assert created
    return job


async def _claim(
    store: JobStore, job: JobRecord, others: list[JobRecord], lease_s: float = 60
) -> str:
    """Claim `job` (skipping every other job created) and return the claim's token."""
    skip = [other.id for other in others if other.id != job.id]
    claimed = await store.claim_next("w", lease_s=lease_s, max_attempts=5, exclude=skip)
    assert claimed is not None and claimed.id == job.id and claimed.lease_token is not None
    return claimed.lease_token


def test_backlog_counts_unrendered_variations_by_what_decides_their_pools(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        assert await store.backlog_by_request() == {}
        jobs: list[JobRecord] = []

        async def song(
            model: str, duration_s: float, variations: int = 2, **request: Any
        ) -> JobRecord:
            jobs.append(await _song(store, model, duration_s, variations, **request))
            return jobs[-1]

        # Driven: variation 0 rendering, variation 1 not started yet.
        driven = await song("sketch", 30)
        token = await _claim(store, driven, jobs)
        await store.update_variation(driven.id, 0, token, status="running")

        # Driven: variation 0 rendered (being mastered), variation 1 done: nothing left.
        mastered = await song("sketch", 50)
        token = await _claim(store, mastered, jobs)
        await store.update_variation(mastered.id, 0, token, status="running")
        await store.update_variation(mastered.id, 0, token, render={"raw": {"render_key": "k"}})
        await store.update_variation(mastered.id, 1, token, status="succeeded")

        # Finished songs count for nothing.
        done = await song("sketch", 100, variations=1)
        token = await _claim(store, done, jobs)
        await store.update_job(done.id, token, status="succeeded")

        # Handed back cleanly while rendering: nobody renders it now, so it waits.
        released = await song("sketch", 10, variations=1)
        token = await _claim(store, released, jobs)
        await store.update_variation(released.id, 0, token, status="running")
        await store.release(released.id, token)

        # A claim that expired mid-render: waits too.
        orphaned = await song("sketch", 20, variations=1)
        token = await _claim(store, orphaned, jobs, lease_s=0.05)
        await store.update_variation(orphaned.id, 0, token, status="running")
        await asyncio.sleep(0.25)

        # Queued songs of another model and of `auto`; an edit and a language of their own.
        await song("ace-step", 40, variations=3)
        await song("auto", 15)
        await song("auto", 15, language="en", edit=None)  # the same key, said out loud
        await song("auto", 20, variations=1, language="ja", edit={"task": "cover"})
        # A LoRA (by ref, or by id only for songs accepted before refs) and a timbre reference;
        # null for either is the same as none.
        await song("auto", 25, variations=1, lora={"id": "lofi", "ref": "shared/lofi"})
        await song("auto", 35, variations=1, lora={"id": "old"})
        await song("auto", 45, variations=1, reference={"key": "uploads/u/audio"})
        await song("auto", 15, variations=1, lora=None, reference=None)

        backlog = await backend.new_store().backlog_by_request()  # any replica sees the same
        assert backlog == {
            # rendering: driven/0; waiting: driven/1, released/0, orphaned/0
            BacklogKey("sketch"): ModelBacklog(
                waiting=3, waiting_audio_s=60.0, rendering=1, rendering_audio_s=30.0
            ),
            BacklogKey("ace-step"): ModelBacklog(
                waiting=3, waiting_audio_s=120.0, rendering=0, rendering_audio_s=0.0
            ),
            BacklogKey("auto", "text2music", "en"): ModelBacklog(
                waiting=5, waiting_audio_s=75.0, rendering=0, rendering_audio_s=0.0
            ),
            BacklogKey("auto", lora=True): ModelBacklog(
                waiting=2, waiting_audio_s=60.0, rendering=0, rendering_audio_s=0.0
            ),
            BacklogKey("auto", reference=True): ModelBacklog(
                waiting=1, waiting_audio_s=45.0, rendering=0, rendering_audio_s=0.0
            ),
            BacklogKey("auto", "cover", "ja"): ModelBacklog(
                waiting=1, waiting_audio_s=20.0, rendering=0, rendering_audio_s=0.0
            ),
        }

    backend.run(scenario)
