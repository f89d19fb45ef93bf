"""SQLiteJobStore: creation, idempotency, leases, takeover, attempts, events, paging."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from serve.store import LeaseLost
from serve.store.sqlite import SQLiteJobStore


@pytest.fixture
def store(tmp_path: Path) -> SQLiteJobStore:
    return SQLiteJobStore(tmp_path / "jobs.db")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_create_and_read_back(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        job, created = await store.create_job(
            owner="a", request={"prompt": "x"}, seed=10, variations=3
        )
        assert created and job.status == "queued"
        assert [(v.index, v.seed, v.status) for v in job.variations] == [
            (0, 10, "queued"),
            (1, 11, "queued"),
            (2, 12, "queued"),
        ]
        again = await store.get_job(job.id)
        assert again == job
        events = await store.events_after(job.id, 0)
        assert [(e.seq, e.type, e.data) for e in events] == [(1, "stage", {"stage": "queued"})]
        assert await store.get_job("song_missing") is None

    run(scenario())


def test_idempotency_key_is_per_owner(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        first, created = await store.create_job(
            owner="a", request={}, seed=1, variations=1, idempotency_key="k"
        )
        second, created_again = await store.create_job(
            owner="a", request={}, seed=2, variations=1, idempotency_key="k"
        )
        other, created_other = await store.create_job(
            owner="b", request={}, seed=3, variations=1, idempotency_key="k"
        )
        assert created and not created_again and created_other
        assert second.id == first.id and other.id != first.id

    run(scenario())


def test_claim_is_exclusive_and_oldest_first(tmp_path: Path) -> None:
    async def scenario() -> None:
        store_a = SQLiteJobStore(tmp_path / "jobs.db")
        store_b = SQLiteJobStore(tmp_path / "jobs.db")  # another process's connection
        first, _ = await store_a.create_job(owner="o", request={}, seed=0, variations=1)
        second, _ = await store_a.create_job(owner="o", request={}, seed=0, variations=1)
        claim_a = await store_a.claim_next("A", lease_s=30, max_attempts=3)
        claim_b = await store_b.claim_next("B", lease_s=30, max_attempts=3)
        claim_c = await store_b.claim_next("C", lease_s=30, max_attempts=3)
        assert claim_a is not None and claim_a.id == first.id and claim_a.lease_owner == "A"
        assert claim_b is not None and claim_b.id == second.id
        assert claim_c is None
        assert claim_a.status == "running" and claim_a.attempts == 1

    run(scenario())


def test_expired_lease_is_taken_over_and_fences_the_old_owner(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        job, _ = await store.create_job(owner="o", request={}, seed=0, variations=1)
        await store.claim_next("A", lease_s=0.2, max_attempts=3)
        await store.update_job(job.id, "A", tags={"genre": "pop"})
        assert await store.claim_next("B", lease_s=30, max_attempts=3) is None  # lease still live
        await asyncio.sleep(0.3)
        taken = await store.claim_next("B", lease_s=30, max_attempts=3)
        assert taken is not None and taken.id == job.id and taken.attempts == 2
        assert taken.tags == {"genre": "pop"}  # stage results survive the takeover
        with pytest.raises(LeaseLost):
            await store.update_job(job.id, "A", stage="generating")
        with pytest.raises(LeaseLost):
            await store.renew_lease(job.id, "A", lease_s=30)
        with pytest.raises(LeaseLost):
            await store.update_variation(job.id, 0, "A", status="succeeded")
        with pytest.raises(LeaseLost):
            await store.append_event(job.id, "progress", {}, lease_owner="A")
        await store.renew_lease(job.id, "B", lease_s=30)

    run(scenario())


def test_attempts_are_bounded(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        job, _ = await store.create_job(owner="o", request={}, seed=0, variations=1)
        for owner in ("A", "B"):
            assert await store.claim_next(owner, lease_s=0.05, max_attempts=2) is not None
            await asyncio.sleep(0.1)
        assert await store.claim_next("C", lease_s=0.05, max_attempts=2) is None
        failed = await store.get_job(job.id)
        assert failed is not None and failed.status == "failed"
        assert failed.error is not None and failed.error["code"] == "attempts_exhausted"
        assert failed.lease_owner is None
        events = await store.events_after(job.id, 0)
        assert events[-1].type == "error"

    run(scenario())


def test_terminal_status_releases_the_lease(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        job, _ = await store.create_job(owner="o", request={}, seed=0, variations=1)
        await store.claim_next("A", lease_s=30, max_attempts=3)
        seq = await store.append_event(
            job.id,
            "done",
            {"status": "succeeded"},
            lease_owner="A",
            job_fields={"status": "succeeded", "progress": 1.0},
        )
        done = await store.get_job(job.id)
        assert done is not None and done.status == "succeeded" and done.lease_owner is None
        assert done.is_terminal and seq == 2
        assert await store.claim_next("B", lease_s=30, max_attempts=3) is None

    run(scenario())


def test_events_are_dense_and_resumable(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        job, _ = await store.create_job(owner="o", request={}, seed=0, variations=1)
        for step in range(1, 6):
            await store.append_event(job.id, "progress", {"step": step})
        events = await store.events_after(job.id, 0)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
        later = await store.events_after(job.id, 4)
        assert [e.data["step"] for e in later] == [4, 5]

    run(scenario())


def test_list_is_newest_first_paged_and_per_owner(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        ids = []
        for _ in range(5):
            job, _ = await store.create_job(owner="me", request={}, seed=0, variations=1)
            ids.append(job.id)
            time.sleep(0.002)
        await store.create_job(owner="someone-else", request={}, seed=0, variations=1)
        page1, cursor = await store.list_jobs("me", limit=2)
        page2, cursor2 = await store.list_jobs("me", limit=2, cursor=cursor)
        page3, cursor3 = await store.list_jobs("me", limit=2, cursor=cursor2)
        listed = [j.id for j in page1 + page2 + page3]
        assert listed == list(reversed(ids))
        assert cursor3 is None
        with pytest.raises(ValueError, match="cursor"):
            await store.list_jobs("me", limit=2, cursor="garbage!")

    run(scenario())


def test_unknown_fields_are_refused(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        job, _ = await store.create_job(owner="o", request={}, seed=0, variations=1)
        await store.claim_next("A", lease_s=30, max_attempts=3)
        with pytest.raises(ValueError, match="not job fields"):
            await store.update_job(job.id, "A", owner="mallory")

    run(scenario())


def test_count_jobs_by_status(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        for _ in range(3):
            await store.create_job(owner="o", request={}, seed=0, variations=1)
        await store.claim_next("A", lease_s=30, max_attempts=3)
        assert await store.count_jobs("queued") == 2
        assert await store.count_jobs("running") == 1
        assert await store.count_jobs("failed") == 0

    run(scenario())


def test_release_hands_a_job_back_without_counting_an_attempt(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        job, _ = await store.create_job(owner="o", request={}, seed=0, variations=1)
        await store.claim_next("A", lease_s=300, max_attempts=3)
        await store.release(job.id, "B")  # not B's to release: nothing happens
        assert await store.claim_next("B", lease_s=300, max_attempts=3) is None
        await store.release(job.id, "A")
        taken = await store.claim_next("B", lease_s=300, max_attempts=3)  # at once, no expiry wait
        assert taken is not None and taken.lease_owner == "B" and taken.attempts == 1

    run(scenario())


def test_cache_round_trips_replaces_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"

    async def scenario() -> None:
        store = SQLiteJobStore(path)
        assert await store.cache_get("lyrics", "k") is None
        await store.cache_put("lyrics", "k", {"text": "[verse]\na", "repairs": []})
        await store.cache_put("lyrics", "k", {"text": "[verse]\nb", "repairs": ["x"]})
        await store.cache_put("other", "k", 1)
        assert await store.cache_get("lyrics", "k") == {"text": "[verse]\nb", "repairs": ["x"]}
        await store.close()
        reopened = SQLiteJobStore(path)
        assert await reopened.cache_get("lyrics", "k") == {"text": "[verse]\nb", "repairs": ["x"]}
        assert await reopened.cache_get("other", "k") == 1
        await reopened.close()

    run(scenario())


# --- stems jobs ------------------------------------------------------------------------------


def _stem_events(store: SQLiteJobStore, job_id: str) -> list[dict]:
    events = run(store.events_after(job_id, 0))
    return [e.data for e in events if e.type == "stems"]


def test_stems_requests_are_idempotent_and_a_failure_can_be_retried(
    store: SQLiteJobStore,
) -> None:
    async def scenario() -> str:
        job, _ = await store.create_job(owner="a", request={}, seed=1, variations=2)
        first, queued = await store.request_stems(job.id, 1)
        again, queued_again = await store.request_stems(job.id, 1)
        assert queued and not queued_again and again == first
        assert first.status == "queued" and first.is_active and first.index == 1
        claimed = await store.claim_next_stems("w", lease_s=30, max_attempts=3)
        assert claimed is not None and claimed.status == "running" and claimed.attempts == 1
        error = {"code": "stems_failed", "message": "boom"}
        await store.update_stems(
            job.id, 1, "w", status="failed", error=error,
            event=("stems", {"variation": 1, "status": "failed"}),
        )  # fmt: skip
        failed = await store.get_stems(job.id, 1)
        assert failed is not None and failed.error == error and failed.lease_owner is None
        retried, queued_retry = await store.request_stems(job.id, 1)
        assert queued_retry and retried.status == "queued" and retried.error is None
        assert retried.attempts == 0
        assert [s.index for s in await store.list_stems(job.id)] == [1]
        assert await store.get_stems(job.id, 0) is None
        return job.id

    job_id = run(scenario())
    statuses = [event["status"] for event in _stem_events(store, job_id)]
    assert statuses == ["queued", "failed", "queued"]


def test_stems_leases_fence_and_expire(store: SQLiteJobStore) -> None:
    async def scenario() -> None:
        job, _ = await store.create_job(owner="a", request={}, seed=1, variations=1)
        await store.request_stems(job.id, 0)
        first = await store.claim_next_stems("w1", lease_s=0.05, max_attempts=3)
        assert first is not None
        assert await store.claim_next_stems("w2", lease_s=30, max_attempts=3) is None
        await asyncio.sleep(0.1)
        second = await store.claim_next_stems("w2", lease_s=30, max_attempts=3)
        assert second is not None and second.lease_owner == "w2" and second.attempts == 2
        with pytest.raises(LeaseLost):
            await store.update_stems(job.id, 0, "w1", progress=0.5)
        with pytest.raises(LeaseLost):
            await store.renew_stems_lease(job.id, 0, "w1", lease_s=30)
        await store.renew_stems_lease(job.id, 0, "w2", lease_s=30)
        await store.update_stems(
            job.id, 0, "w2", progress=0.5,
            event=("stems_progress", {"variation": 0, "progress": 0.5}),
        )  # fmt: skip
        with pytest.raises(ValueError, match="not stems fields"):
            await store.update_stems(job.id, 0, "w2", attempts=0)
        # A clean stop hands it back at once, without counting the attempt.
        await store.release_stems(job.id, 0, "w2")
        third = await store.claim_next_stems("w3", lease_s=30, max_attempts=3)
        assert third is not None and third.attempts == 2 and third.progress == 0.5
        objects = {"drums": {"wav": "songs/x/v0/stems/drums.wav"}}
        await store.update_stems(job.id, 0, "w3", status="succeeded", objects=objects)
        done = await store.get_stems(job.id, 0)
        assert done is not None and not done.is_active and done.objects == objects
        assert await store.claim_next_stems("w4", lease_s=30, max_attempts=3) is None

    run(scenario())


def test_stems_attempts_are_bounded(store: SQLiteJobStore) -> None:
    async def scenario() -> str:
        job, _ = await store.create_job(owner="a", request={}, seed=1, variations=1)
        await store.request_stems(job.id, 0)
        for owner in ("w1", "w2"):
            assert await store.claim_next_stems(owner, lease_s=0.01, max_attempts=2) is not None
            await asyncio.sleep(0.03)
        assert await store.claim_next_stems("w3", lease_s=30, max_attempts=2) is None
        record = await store.get_stems(job.id, 0)
        assert record is not None and record.status == "failed"
        assert record.error is not None and record.error["code"] == "attempts_exhausted"
        return job.id

    job_id = run(scenario())
    assert _stem_events(store, job_id)[-1]["status"] == "failed"
