"""The job store's load queries, on every backend (SQLite and Postgres): renders in flight per
decoder pool across the cluster (what SongRouter routes on) and a queued job's place in the claim
order (what GET /v1/songs/{id} and the `queue` SSE event report)."""

from __future__ import annotations

import asyncio

from serve.store import JobStore
from serve.store.records import JobRecord, PoolRenders, QueuePlace
from tests.store_backends import Backend


async def _song(store: JobStore, duration_s: float, variations: int = 2) -> JobRecord:
    job, created = await store.create_job(
        owner="a", request={"prompt": "x", "duration_s": duration_s}, seed=1, variations=variations
    )
    assert created
    return job


async def _claim(store: JobStore, expected: JobRecord, lease_s: float = 60) -> str:
    claimed = await store.claim_next("w", lease_s=lease_s, max_attempts=5)
    assert claimed is not None and claimed.id == expected.id and claimed.lease_token
    return claimed.lease_token


def test_renders_by_pool_counts_running_renders_of_live_leases(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        assert await store.renders_by_pool() == {}
        a = await _song(store, 10)
        b = await _song(store, 25)
        a_token = await _claim(store, a)
        b_token = await _claim(store, b)
        for index, pool in ((0, "Fast"), (1, "Slow")):
            await store.update_variation(
                a.id, index, a_token, status="running", render={"pool": pool}
            )
        await store.update_variation(b.id, 0, b_token, status="running", render={"pool": "Fast"})
        # Claimed but not yet routed: no pool, not counted.
        await store.update_variation(b.id, 1, b_token, status="running")
        expected = {"Fast": PoolRenders(2, 35.0), "Slow": PoolRenders(1, 10.0)}
        assert await store.renders_by_pool() == expected
        assert await backend.new_store().renders_by_pool() == expected  # any replica sees it

        # A finished render (the reference recorded, mastering under way) is no longer one.
        raw = {"render_key": "k", "pool": "Slow"}
        await store.update_variation(a.id, 1, a_token, render={"raw": raw})
        # A variation that succeeded or failed is no longer in flight.
        await store.update_variation(b.id, 0, b_token, status="failed", render={"pool": "Fast"})
        assert await store.renders_by_pool() == {"Fast": PoolRenders(1, 10.0)}

        # A job whose conductor died (its lease ran out) renders nothing any more.
        c = await _song(store, 40, variations=1)
        c_token = await _claim(store, c, lease_s=0.2)
        await store.update_variation(c.id, 0, c_token, status="running", render={"pool": "Slow"})
        assert (await store.renders_by_pool())["Slow"] == PoolRenders(1, 40.0)
        await asyncio.sleep(0.4)
        assert await store.renders_by_pool() == {"Fast": PoolRenders(1, 10.0)}

        # Nor does one that ended.
        await store.update_job(a.id, a_token, status="failed")
        assert await store.renders_by_pool() == {}

    backend.run(scenario)


async def _places_agree(store: JobStore, *jobs: JobRecord) -> None:
    """`queue_places()` (every queued job at once) says what `queue_place` says of each."""
    one_by_one = {job.id: await store.queue_place(job.id) for job in jobs}
    assert await store.queue_places() == {
        job_id: place for job_id, place in one_by_one.items() if place is not None
    }


def test_queue_place_counts_runnable_jobs_ahead_in_claim_order(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        first = await _song(store, 10)  # 2 variations: 20 s of audio
        second = await _song(store, 20)  # 40 s
        third = await _song(store, 30)  # 60 s
        assert await store.queue_place(first.id) == QueuePlace(0, 0.0)
        assert await store.queue_place(second.id) == QueuePlace(1, 20.0)
        assert await store.queue_place(third.id) == QueuePlace(2, 60.0)
        assert await store.queue_place("song_missing") is None
        await _places_agree(store, first, second, third)

        # The first is claimed: no longer queued, but its audio is still ahead of the others.
        token = await _claim(store, first)
        assert await store.queue_place(first.id) is None
        assert await store.queue_place(second.id) == QueuePlace(0, 20.0)
        assert await backend.new_store().queue_place(third.id) == QueuePlace(1, 60.0)
        await _places_agree(backend.new_store(), first, second, third)

        # Rendered (mastering) and succeeded variations are no work ahead.
        await store.update_variation(first.id, 0, token, render={"raw": {"render_key": "k"}})
        await store.update_variation(first.id, 1, token, status="succeeded")
        assert await store.queue_place(second.id) == QueuePlace(0, 0.0)
        await _places_agree(store, first, second, third)
        await store.update_job(first.id, token, status="succeeded")

        # A claim whose lease ran out puts the job back in line, ahead of younger jobs.
        await _claim(store, second, lease_s=0.2)
        assert await store.queue_place(third.id) == QueuePlace(0, 40.0)  # driven, not in line
        await _places_agree(store, first, second, third)
        await asyncio.sleep(0.4)
        assert await store.queue_place(third.id) == QueuePlace(1, 40.0)  # in line again
        assert await store.queue_place(second.id) is None  # running, not queued
        await _places_agree(store, first, second, third)

    backend.run(scenario)
