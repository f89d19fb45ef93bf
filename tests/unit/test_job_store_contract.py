"""The `JobStore` contract, run against every backend: SQLite (one file) and Postgres (a fresh
database on the session's local server).

Concurrency is real: "replicas" are separate store instances on one database (separate
connections, and for SQLite separate connections to one file), driven at once with asyncio.
The Postgres-only tests at the end cover what only a server has: LISTEN/NOTIFY costs, concurrent
migrations, an outage and recovery, and start-up checks of the URL.
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import sql

from serve.local_services import LocalPostgres, free_ports
from serve.store import JobStore, LeaseLost, StoreUnavailable
from serve.store.postgres import PostgresJobStore
from serve.store.postgres_connect import apply_migrations, check_database
from serve.store.postgres_migrations import MIGRATIONS
from serve.store.records import JobRecord
from tests.helpers import throwaway_postgres
from tests.store_backends import Backend


async def _create(store: JobStore, owner: str = "a", **kwargs: Any) -> JobRecord:
    job, created = await store.create_job(
        owner=owner, request=kwargs.pop("request", {"prompt": "x"}), seed=7, variations=2, **kwargs
    )
    assert created
    return job


async def _events(store: JobStore, job_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    return [(e.seq, e.type, e.data) for e in await store.events_after(job_id, 0, limit=1000)]


async def _expire() -> None:
    """Outlive the 0.05 s leases the tests take."""
    await asyncio.sleep(0.25)


# -- songs ----------------------------------------------------------------------------------------


def test_create_reads_back_with_its_first_event(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job, created = await store.create_job(
            owner="a", request={"prompt": "x", "n": [1, 2]}, seed=2**40, variations=3
        )
        assert created and job.status == "queued" and job.attempts == 0
        assert job.lease_token is None and job.lease_owner is None
        assert [(v.index, v.seed, v.status) for v in job.variations] == [
            (0, 2**40, "queued"),
            (1, 2**40 + 1, "queued"),
            (2, 2**40 + 2, "queued"),
        ]
        assert await store.get_job(job.id) == job
        assert await backend.new_store().get_job(job.id) == job  # another replica sees it
        assert await _events(store, job.id) == [(1, "stage", {"stage": "queued"})]
        assert await store.get_job("song_missing") is None
        with pytest.raises(KeyError):
            await store.append_event("song_missing", "progress", {})
        with pytest.raises(KeyError):
            await store.request_stems("song_missing", 0)
        assert await store.count_jobs("queued") == 1
        assert await store.count_jobs("running") == 0

    backend.run(scenario)


def test_idempotency_key_is_per_owner_and_holds_under_concurrent_creates(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
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
        assert second == first and other.id != first.id

        replicas = [backend.new_store() for _ in range(8)]
        results = await asyncio.gather(
            *(
                replica.create_job(
                    owner="c", request={"i": i}, seed=i, variations=1, idempotency_key="race"
                )
                for i, replica in enumerate(replicas)
            )
        )
        assert sum(created for _, created in results) == 1
        assert len({job.id for job, _ in results}) == 1
        jobs, _ = await store.list_jobs("c", limit=10)
        assert [job.id for job in jobs] == [results[0][0].id]
        assert len(await _events(store, jobs[0].id)) == 1  # one creation, one event

    backend.run(scenario)


def test_claims_oldest_first_and_never_twice_across_replicas(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        created = [(await _create(store)).id for _ in range(40)]

        first = await store.claim_next("w0", lease_s=60, max_attempts=3)
        assert first is not None and first.id == created[0]  # oldest first
        assert first.status == "running" and first.attempts == 1 and first.lease_owner == "w0"
        assert first.lease_token and first.lease_expires_at is not None
        assert len(first.variations) == 2

        claimed: list[tuple[str, str]] = [(first.id, first.lease_token)]

        async def worker(replica: JobStore, name: str) -> None:
            while (job := await replica.claim_next(name, lease_s=60, max_attempts=3)) is not None:
                assert job.lease_token is not None
                claimed.append((job.id, job.lease_token))

        replicas = [backend.new_store() for _ in range(8)]
        await asyncio.gather(*(worker(r, f"w{i}") for i, r in enumerate(replicas)))

        ids = [job_id for job_id, _ in claimed]
        assert sorted(ids) == sorted(created)  # every job exactly once
        assert len({token for _, token in claimed}) == 40
        assert await store.count_jobs("running") == 40
        jobs = [await store.get_job(job_id) for job_id in created]
        assert [(job.status, job.attempts) for job in jobs if job is not None] == [
            ("running", 1)
        ] * 40

    backend.run(scenario)


def test_exclude_skips_work_the_worker_already_drives(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        a = await _create(store)
        b = await _create(store)
        got = await store.claim_next("w", lease_s=60, max_attempts=3, exclude={a.id})
        assert got is not None and got.id == b.id
        assert await store.claim_next("w", lease_s=60, max_attempts=3, exclude=[a.id]) is None
        got = await store.claim_next("w", lease_s=60, max_attempts=3, exclude=())
        assert got is not None and got.id == a.id

        await store.request_stems(a.id, 0)
        await store.request_stems(a.id, 1)
        stems = await store.claim_next_stems("w", lease_s=60, max_attempts=3, exclude={(a.id, 0)})
        assert stems is not None and (stems.job_id, stems.index) == (a.id, 1)
        stems = await store.claim_next_stems("w", lease_s=60, max_attempts=3, exclude=[(b.id, 0)])
        assert stems is not None and (stems.job_id, stems.index) == (a.id, 0)

    backend.run(scenario)


@pytest.mark.parametrize("same_worker", [True, False], ids=["same-worker", "other-worker"])
def test_takeover_after_expiry_fences_the_old_claim(backend: Backend, same_worker: bool) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _create(store)
        old = await store.claim_next("w1", lease_s=0.05, max_attempts=3)
        assert old is not None and old.lease_token is not None
        await store.update_job(job.id, old.lease_token, stage="lyrics")  # holds while unexpired
        await store.request_stems(job.id, 0)
        old_stems = await store.claim_next_stems("w1", lease_s=0.05, max_attempts=3)
        assert old_stems is not None and old_stems.lease_token is not None
        await _expire()

        taker = backend.new_store()
        worker = "w1" if same_worker else "w2"
        new = await taker.claim_next(worker, lease_s=60, max_attempts=3)
        assert new is not None and new.id == job.id and new.attempts == 2
        assert new.lease_token is not None and new.lease_token != old.lease_token
        new_stems = await taker.claim_next_stems(worker, lease_s=60, max_attempts=3)
        assert new_stems is not None and new_stems.lease_token not in (None, old_stems.lease_token)

        stale = old.lease_token
        with pytest.raises(LeaseLost):
            await store.update_job(job.id, stale, stage="tags")
        with pytest.raises(LeaseLost):
            await store.update_variation(job.id, 0, stale, status="succeeded")
        with pytest.raises(LeaseLost):
            await store.append_event(job.id, "progress", {"p": 1}, token=stale)
        with pytest.raises(LeaseLost):
            await store.append_event(
                job.id, "stage", {"stage": "tags"}, token=stale, job_fields={"stage": "tags"}
            )
        with pytest.raises(LeaseLost):
            await store.renew_lease(job.id, stale, lease_s=60)
        await store.release(job.id, stale)  # a no-op for a superseded claim
        with pytest.raises(LeaseLost):
            await store.update_stems(job.id, 0, old_stems.lease_token, progress=0.5)
        with pytest.raises(LeaseLost):
            await store.update_stems(
                job.id, 0, old_stems.lease_token, event=("stems", {"variation": 0}), progress=1.0
            )
        with pytest.raises(LeaseLost):
            await store.renew_stems_lease(job.id, 0, old_stems.lease_token, lease_s=60)
        await store.release_stems(job.id, 0, old_stems.lease_token)

        after = await store.get_job(job.id)
        assert after is not None
        assert (after.stage, after.lease_token, after.attempts) == ("lyrics", new.lease_token, 2)
        assert after.variations[0].status == "queued"
        assert [e.type for e in await store.events_after(job.id, 0)] == ["stage", "stems"]
        stems_now = await store.get_stems(job.id, 0)
        assert stems_now is not None and stems_now.lease_token == new_stems.lease_token

        # The new claim writes.
        await taker.update_job(job.id, new.lease_token, stage="tags")
        await taker.update_variation(job.id, 0, new.lease_token, status="succeeded", seed=99)
        await taker.append_event(job.id, "progress", {"p": 1}, token=new.lease_token)
        await taker.update_stems(job.id, 0, new_stems.lease_token, progress=0.5)
        final = await store.get_job(job.id)
        assert final is not None and final.stage == "tags"
        assert (final.variations[0].status, final.variations[0].seed) == ("succeeded", 99)

    backend.run(scenario)


def test_renew_keeps_an_expired_lease_nobody_claimed(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _create(store)
        claim = await store.claim_next("w", lease_s=0.05, max_attempts=3)
        assert claim is not None and claim.lease_token is not None
        await _expire()
        await store.renew_lease(job.id, claim.lease_token, lease_s=60)
        assert await backend.new_store().claim_next("w2", lease_s=60, max_attempts=3) is None
        renewed = await store.get_job(job.id)
        assert renewed is not None and renewed.lease_expires_at is not None
        assert renewed.lease_expires_at > time.time() + 30
        assert renewed.lease_token == claim.lease_token and renewed.attempts == 1
        await store.update_job(job.id, claim.lease_token, progress=0.5)

        await store.request_stems(job.id, 0)
        stems = await store.claim_next_stems("w", lease_s=0.05, max_attempts=3)
        assert stems is not None and stems.lease_token is not None
        await _expire()
        await store.renew_stems_lease(job.id, 0, stems.lease_token, lease_s=60)
        assert await store.claim_next_stems("w2", lease_s=60, max_attempts=3) is None

    backend.run(scenario)


def test_release_hands_back_without_counting_the_attempt(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _create(store)
        first = await store.claim_next("w1", lease_s=60, max_attempts=1)
        assert first is not None and first.lease_token is not None and first.attempts == 1
        await store.release(job.id, first.lease_token)
        released = await store.get_job(job.id)
        assert released is not None
        assert (released.attempts, released.lease_token, released.lease_owner) == (0, None, None)

        # Claimable at once, even with max_attempts=1: the released attempt did not count.
        second = await backend.new_store().claim_next("w2", lease_s=60, max_attempts=1)
        assert second is not None and second.id == job.id and second.attempts == 1
        assert second.lease_token != first.lease_token
        with pytest.raises(LeaseLost):
            await store.update_job(job.id, first.lease_token, stage="x")
        await store.release(job.id, first.lease_token)  # no-op: the new claim keeps it
        held = await store.get_job(job.id)
        assert held is not None and held.lease_token == second.lease_token

        await store.request_stems(job.id, 0)
        stems = await store.claim_next_stems("w1", lease_s=60, max_attempts=1)
        assert stems is not None and stems.lease_token is not None
        await store.release_stems(job.id, 0, stems.lease_token)
        again = await store.claim_next_stems("w2", lease_s=60, max_attempts=1)
        assert again is not None and again.attempts == 1 and again.lease_token != stems.lease_token

    backend.run(scenario)


def test_terminal_status_ends_the_lease(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _create(store)
        claim = await store.claim_next("w", lease_s=0.05, max_attempts=3)
        assert claim is not None and claim.lease_token is not None
        with pytest.raises(ValueError, match="not job fields"):
            await store.update_job(job.id, claim.lease_token, owner="b")
        with pytest.raises(ValueError, match="not variation fields"):
            await store.update_variation(job.id, 0, claim.lease_token, idx=3)
        seq = await store.append_event(
            job.id,
            "done",
            {"ok": True},
            token=claim.lease_token,
            job_fields={"status": "succeeded", "progress": 1.0, "tags": {"genre": "pop"}},
        )
        assert seq == 2
        done = await store.get_job(job.id)
        assert done is not None and done.status == "succeeded" and done.is_terminal
        assert (done.lease_token, done.lease_owner, done.lease_expires_at) == (None, None, None)
        assert done.tags == {"genre": "pop"} and done.progress == 1.0
        with pytest.raises(LeaseLost):
            await store.update_job(job.id, claim.lease_token, progress=0.5)
        await _expire()
        assert await store.claim_next("w", lease_s=60, max_attempts=3) is None

    backend.run(scenario)


def test_cancel_ends_queued_and_running_jobs_once_and_fences_their_claim(
    backend: Backend,
) -> None:
    async def scenario(store: JobStore) -> None:
        queued = await _create(store)  # two variations each
        running = await _create(store)
        finished = await _create(store)
        # Claims go oldest first: take all three, then let two go back to how we want them.
        claims = {}
        for _ in range(3):
            claim = await store.claim_next("w", lease_s=60, max_attempts=3)
            assert claim is not None and claim.lease_token is not None
            claims[claim.id] = claim.lease_token
        await store.release(queued.id, claims[queued.id])
        await store.update_variation(running.id, 0, claims[running.id], status="succeeded")
        await store.update_variation(running.id, 1, claims[running.id], status="running")
        await store.update_job(finished.id, claims[finished.id], status="succeeded")

        canceled = await store.cancel_job(running.id)
        assert canceled is not None and canceled.status == "canceled"
        assert canceled.stage == "canceled" and canceled.is_terminal
        # A finished variation stays; the unfinished one is canceled with its song.
        assert [v.status for v in canceled.variations] == ["succeeded", "canceled"]
        assert canceled.lease_token is None
        # The claim that drove it may not write any more: its renewal and writes are refused.
        with pytest.raises(LeaseLost):
            await store.renew_lease(running.id, claims[running.id], lease_s=60)
        with pytest.raises(LeaseLost):
            await store.append_event(running.id, "progress", {}, token=claims[running.id])
        # Again is a no-op with no second event.
        again = await store.cancel_job(running.id)
        assert again is not None and again.status == "canceled"
        assert [t for _, t, _ in await _events(store, running.id)].count("canceled") == 1
        assert (await _events(store, running.id))[-1][1:] == ("canceled", {"status": "canceled"})

        # A queued job is never claimed once canceled.
        assert (await store.cancel_job(queued.id)).status == "canceled"  # type: ignore[union-attr]
        await _expire()
        assert await store.claim_next("w", lease_s=60, max_attempts=3) is None
        # A finished job comes back as it was, with no event.
        unchanged = await store.cancel_job(finished.id)
        assert unchanged is not None and unchanged.status == "succeeded"
        assert "canceled" not in [t for _, t, _ in await _events(store, finished.id)]
        assert await store.cancel_job("no-such-job") is None
        # Canceled songs no longer count as the owner's work in progress.
        usage = await store.owner_usage("a", day_start=0.0)
        assert usage.active == 0

    backend.run(scenario)


def test_exhausted_attempts_fail_the_work_with_a_reason(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _create(store)
        claim = await store.claim_next("w", lease_s=0.05, max_attempts=1)
        assert claim is not None and claim.lease_token is not None
        await _expire()
        assert await store.claim_next("w", lease_s=60, max_attempts=1) is None
        failed = await store.get_job(job.id)
        assert failed is not None and failed.status == "failed"
        assert failed.error is not None and failed.error["code"] == "attempts_exhausted"
        assert failed.lease_token is None
        assert (await _events(store, job.id))[-1] == (2, "error", failed.error)
        with pytest.raises(LeaseLost):
            await store.update_job(job.id, claim.lease_token, stage="x")

        other = await _create(store)
        await store.request_stems(other.id, 1)
        stems = await store.claim_next_stems("w", lease_s=0.05, max_attempts=1)
        assert stems is not None
        await _expire()
        assert await store.claim_next_stems("w", lease_s=60, max_attempts=1) is None
        failed_stems = await store.get_stems(other.id, 1)
        assert failed_stems is not None and failed_stems.status == "failed"
        assert failed_stems.error is not None
        assert failed_stems.error["code"] == "attempts_exhausted"
        assert (await _events(store, other.id))[-1] == (
            3,
            "stems",
            {"variation": 1, "status": "failed", "error": failed_stems.error},
        )

    backend.run(scenario)


# -- events ---------------------------------------------------------------------------------------


def test_events_are_dense_and_ordered_under_concurrent_appenders(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _create(store)
        replicas = [backend.new_store() for _ in range(8)]

        async def appender(replica: JobStore, writer: int) -> list[int]:
            return [
                await replica.append_event(job.id, "progress", {"writer": writer, "i": i})
                for i in range(25)
            ]

        returned = await asyncio.gather(*(appender(r, w) for w, r in enumerate(replicas)))
        assert sorted(seq for seqs in returned for seq in seqs) == list(range(2, 202))
        events = await store.events_after(job.id, 0, limit=1000)
        assert [e.seq for e in events] == list(range(1, 202))
        for writer, seqs in enumerate(returned):
            assert seqs == sorted(seqs)  # each writer's events in its own order
            mine = [e for e in events if e.data.get("writer") == writer]
            assert [e.data["i"] for e in mine] == list(range(25)) and [e.seq for e in mine] == seqs
        assert [e.seq for e in await store.events_after(job.id, 190, limit=5)] == [
            191,
            192,
            193,
            194,
            195,
        ]

    backend.run(scenario)


def test_wait_for_events_wakes_on_another_replicas_append(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _create(store)
        start = time.monotonic()
        ready = await store.wait_for_events(job.id, 0, timeout=5)  # already there: at once
        assert [e.seq for e in ready] == [1] and time.monotonic() - start < 1.0

        start = time.monotonic()
        assert await store.wait_for_events(job.id, 1, timeout=0.3) == []
        assert 0.3 <= time.monotonic() - start < 1.5

        writer = backend.new_store()
        await writer.get_job(job.id)  # connected before the clock starts

        async def append_later() -> None:
            await asyncio.sleep(0.2)
            await writer.append_event(job.id, "progress", {"p": 0.5})

        start = time.monotonic()
        events, _ = await asyncio.gather(
            store.wait_for_events(job.id, 1, timeout=10), append_later()
        )
        elapsed = time.monotonic() - start
        assert [(e.seq, e.type, e.data) for e in events] == [(2, "progress", {"p": 0.5})]
        assert 0.2 <= elapsed < 1.5, elapsed

    backend.run(scenario)


def test_wait_for_work_wakes_on_another_replicas_create(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        start = time.monotonic()
        await store.wait_for_work(timeout=0.3)
        assert 0.3 <= time.monotonic() - start < 1.5

        producer = backend.new_store()
        await producer.count_jobs("queued")

        async def create_later() -> JobRecord:
            await asyncio.sleep(0.2)
            return await _create(producer)

        start = time.monotonic()
        _, job = await asyncio.gather(store.wait_for_work(timeout=10), create_later())
        elapsed = time.monotonic() - start
        assert 0.2 <= elapsed < 1.5, elapsed
        claim = await store.claim_next("w", lease_s=60, max_attempts=3)
        assert claim is not None and claim.id == job.id

        async def request_stems_later() -> None:
            await asyncio.sleep(0.2)
            await producer.request_stems(job.id, 0)

        start = time.monotonic()
        await asyncio.gather(store.wait_for_work(timeout=10), request_stems_later())
        assert 0.2 <= time.monotonic() - start < 1.5

    backend.run(scenario)


# -- listing, stems, cache ------------------------------------------------------------------------


def test_list_jobs_pages_newest_first_and_rejects_foreign_cursors(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        mine = [(await _create(store, owner="a")).id for _ in range(5)]
        await _create(store, owner="b")
        pages: list[list[str]] = []
        cursor: str | None = None
        while True:
            page, cursor = await store.list_jobs("a", limit=2, cursor=cursor)
            pages.append([job.id for job in page])
            if cursor is None:
                break
        assert pages == [mine[4:2:-1], mine[2:0:-1], mine[:1]]
        everything, last = await store.list_jobs("a", limit=5)
        assert [job.id for job in everything] == mine[::-1] and last is None
        assert await store.list_jobs("nobody", limit=5) == ([], None)
        for bad in ("garbage!!", "Zm9v", "bm90LWEtbnVtYmVyfGlk"):  # "foo", "not-a-number|id"
            with pytest.raises(ValueError, match="cursor"):
                await store.list_jobs("a", limit=2, cursor=bad)

    backend.run(scenario)


def test_stems_request_claim_finish_and_requeue(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _create(store)
        stems, queued = await store.request_stems(job.id, 1)
        assert queued and (stems.job_id, stems.index, stems.status) == (job.id, 1, "queued")
        assert stems.is_active and stems.attempts == 0
        again, queued_again = await store.request_stems(job.id, 1)
        assert not queued_again and again == stems
        await store.request_stems(job.id, 0)
        assert [(s.index, s.status) for s in await store.list_stems(job.id)] == [
            (0, "queued"),
            (1, "queued"),
        ]
        assert (await _events(store, job.id))[1:] == [
            (2, "stems", {"variation": 1, "status": "queued"}),
            (3, "stems", {"variation": 0, "status": "queued"}),
        ]

        claim = await store.claim_next_stems("w", lease_s=60, max_attempts=3)
        assert claim is not None and claim.index == 1  # oldest first
        assert claim.status == "running" and claim.attempts == 1 and claim.lease_token
        await store.update_stems(job.id, 1, claim.lease_token, progress=0.5, info={"method": "x"})
        error = {"code": "separator_failed", "message": "boom"}
        await store.update_stems(
            job.id,
            1,
            claim.lease_token,
            event=("stems", {"variation": 1, "status": "failed", "error": error}),
            status="failed",
            error=error,
        )
        failed = await store.get_stems(job.id, 1)
        assert failed is not None and failed.status == "failed" and failed.error == error
        assert failed.lease_token is None and not failed.is_active
        assert (await _events(store, job.id))[-1] == (
            4,
            "stems",
            {"variation": 1, "status": "failed", "error": error},
        )
        with pytest.raises(LeaseLost):
            await store.update_stems(job.id, 1, claim.lease_token, progress=0.9)

        requeued, queued = await store.request_stems(job.id, 1)  # a failed one is queued again
        assert queued and requeued.status == "queued" and requeued.error is None
        assert requeued.attempts == 0 and requeued.info == {} and requeued.lease_token is None

        zero = await store.claim_next_stems("w", lease_s=60, max_attempts=3)
        assert zero is not None and zero.index == 0 and zero.lease_token is not None
        objects = {"vocals": {"wav": "songs/x/stems/vocals.wav"}}
        await store.update_stems(job.id, 0, zero.lease_token, status="succeeded", objects=objects)
        finished, queued = await store.request_stems(job.id, 0)  # finished: returned as it is
        assert not queued and finished.status == "succeeded" and finished.objects == objects
        assert await store.get_stems(job.id, 3) is None

    backend.run(scenario)


def test_cache_round_trip(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        assert await store.cache_get("lyrics", "k") is None
        await store.cache_put("lyrics", "k", {"text": "la la", "lines": [1, 2]})
        assert await store.cache_get("lyrics", "k") == {"text": "la la", "lines": [1, 2]}
        await store.cache_put("lyrics", "k", ["replaced"])
        assert await store.cache_get("lyrics", "k") == ["replaced"]
        assert await store.cache_get("tags", "k") is None
        await store.cache_put("tags", "k", "pop")
        assert await backend.new_store().cache_get("tags", "k") == "pop"

    backend.run(scenario)


# -- files made on request (lazy formats) ---------------------------------------------------------


async def _finished(store: JobStore) -> JobRecord:
    """A job whose variation 0 succeeded with an m4a, and whose lease has ended."""
    job = await _create(store)
    claimed = await store.claim_next("conductor", lease_s=30, max_attempts=3)
    assert claimed is not None and claimed.lease_token is not None
    await store.update_variation(
        job.id, 0, claimed.lease_token, status="succeeded", objects={"m4a": "k/audio.m4a"}
    )
    await store.update_job(job.id, claimed.lease_token, status="succeeded")
    return job


def test_add_variation_object_is_unfenced_and_only_for_finished_variations(
    backend: Backend,
) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _finished(store)
        await store.add_variation_object(job.id, 0, "mp3", "k/audio.mp3")
        other = backend.new_store()  # another replica adds another file at the same time
        await asyncio.gather(
            other.add_variation_object(job.id, 0, "flac", "k/audio.flac"),
            store.add_variation_object(job.id, 0, "wav", "k/audio.wav"),
        )
        after = await other.get_job(job.id)
        assert after is not None
        assert after.variations[0].objects == {
            "m4a": "k/audio.m4a",
            "mp3": "k/audio.mp3",
            "flac": "k/audio.flac",
            "wav": "k/audio.wav",
        }
        assert after.variations[1].objects == {}  # nothing else changed
        with pytest.raises(KeyError):  # variation 1 never succeeded
            await store.add_variation_object(job.id, 1, "mp3", "k/x.mp3")
        with pytest.raises(KeyError):
            await store.add_variation_object("song_missing", 0, "mp3", "k/x.mp3")

    backend.run(scenario)


def test_concurrent_delivery_claims_are_won_once_across_replicas(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _finished(store)
        replicas = [store] + [backend.new_store() for _ in range(4)]
        tokens = await asyncio.gather(
            *(
                replica.claim_delivery(job.id, 0, "mp3", f"api-{n}", lease_s=30)
                for n, replica in enumerate(replicas)
                for _ in range(2)
            )
        )
        won = [token for token in tokens if token is not None]
        assert len(won) == 1
        record = await store.get_delivery(job.id, 0, "mp3")
        assert record is not None and record.claims == 1 and record.status == "making"
        assert record.lease_owner is not None and record.lease_owner.startswith("api-")
        # Another file of the same variation is a separate claim.
        assert await store.claim_delivery(job.id, 0, "flac", "api-0", lease_s=30) is not None
        assert await store.get_delivery(job.id, 1, "mp3") is None
        with pytest.raises(KeyError):
            await store.claim_delivery("song_missing", 0, "mp3", "api-0", lease_s=30)

        await store.finish_delivery(job.id, 0, "mp3", won[0], delivered=True)
        assert await store.claim_delivery(job.id, 0, "mp3", "api-9", lease_s=30) is None
        delivered = await store.get_delivery(job.id, 0, "mp3")
        assert delivered is not None and delivered.status == "delivered"
        assert delivered.claims == 1 and delivered.lease_owner is None

    backend.run(scenario)


def test_delivery_claims_expire_are_handed_back_and_fence_stale_tokens(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        job = await _finished(store)
        first = await store.claim_delivery(job.id, 0, "wav", "api-a", lease_s=0.05)
        assert first is not None
        await _expire()  # its requester died: the next one takes over
        second = await backend.new_store().claim_delivery(job.id, 0, "wav", "api-b", lease_s=30)
        assert second is not None and second != first
        await store.finish_delivery(job.id, 0, "wav", first, delivered=True)  # stale: no-op
        record = await store.get_delivery(job.id, 0, "wav")
        assert record is not None
        assert (record.status, record.claims, record.lease_owner) == ("making", 2, "api-b")

        await store.finish_delivery(job.id, 0, "wav", second, delivered=False)  # handed back
        handed = await store.get_delivery(job.id, 0, "wav")
        assert handed is not None and handed.status == "open" and handed.lease_owner is None
        third = await store.claim_delivery(job.id, 0, "wav", "api-c", lease_s=30)
        assert third is not None  # at once, without waiting for a lease
        record = await store.get_delivery(job.id, 0, "wav")
        assert record is not None and record.claims == 3

    backend.run(scenario)


# -- Postgres only --------------------------------------------------------------------------------

ROLE = "songs_app"
PASSWORD = "pw-Secret-4c1d"  # must never appear in an error message


@pytest.fixture(scope="module")
def private_postgres(postgres_server: LocalPostgres) -> Iterator[LocalPostgres]:
    """A server of this module's own, which the outage test stops and starts (the session's
    server, required only so both fail alike where PostgreSQL is missing, serves other tests
    meanwhile). Besides `postgres` (trusted), it has a role that must log in with a password."""
    with throwaway_postgres() as server:
        hba = server.data_dir / "pg_hba.conf"
        hba.write_text(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n{hba.read_text()}")
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(PASSWORD)
                )
            )
            for name in ("songs", "outage"):
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(ROLE)
                    )
                )
            conn.execute("SELECT pg_reload_conf()")
        yield server


def _role_url(server: LocalPostgres, dbname: str, password: str = PASSWORD) -> str:
    return f"postgresql://{ROLE}:{password}@127.0.0.1:{server.port}/{dbname}"


def test_idle_waiters_run_no_queries(postgres_url: str) -> None:
    async def scenario() -> None:
        store = PostgresJobStore(postgres_url)
        writer = PostgresJobStore(postgres_url)
        try:
            await store.open()
            jobs = [await _create(writer) for _ in range(20)]
            before = store.queries
            waiters = [
                asyncio.create_task(store.wait_for_events(jobs[i % 20].id, 1, timeout=3.0))
                for i in range(200)
            ]
            workers = [asyncio.create_task(store.wait_for_work(timeout=3.0)) for _ in range(10)]
            deadline = time.monotonic() + 2.5
            while store.queries - before < 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            idle = store.queries
            assert idle - before == 200  # each waiter read once on arrival…
            await asyncio.sleep(0.3)
            assert store.queries == idle  # …and then slept
            await writer.append_event(jobs[0].id, "progress", {"p": 1})
            results = await asyncio.gather(*waiters)
            await asyncio.gather(*workers)
            # Only the ten waiters of the job that changed woke, and each read once; timeouts
            # cost nothing.
            assert store.queries - idle == 10
            assert [[e.seq for e in events] for events in results] == [
                [2] if i % 20 == 0 else [] for i in range(200)
            ]
        finally:
            await store.close()
            await writer.close()

    asyncio.run(scenario())


def test_replicas_starting_together_apply_each_migration_once(
    postgres_url: str, postgres_server: LocalPostgres
) -> None:
    versions = [version for version, _ in MIGRATIONS]

    async def scenario() -> None:
        stores = [PostgresJobStore(postgres_url) for _ in range(6)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
            job = await _create(stores[0])
            assert await stores[5].get_job(job.id) == job
        finally:
            for store in stores:
                await store.close()

    asyncio.run(scenario())
    with psycopg.connect(postgres_url) as conn:
        applied = conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [version for (version,) in applied] == versions
    assert apply_migrations(postgres_url) == []

    fresh = postgres_server.create_database(f"migrate_{uuid.uuid4().hex[:12]}")
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: apply_migrations(fresh), range(6)))
    assert sorted(version for done in results for version in done) == versions


def test_outage_raises_store_unavailable_then_recovers(private_postgres: LocalPostgres) -> None:
    url = _role_url(private_postgres, "outage")

    async def scenario() -> None:
        store = PostgresJobStore(url, connect_timeout_s=2, timeout_s=1.0)
        try:
            await store.open()
            job = await _create(store)
            await asyncio.to_thread(private_postgres.stop)

            calls: list[Callable[[], Awaitable[Any]]] = [
                lambda: store.get_job(job.id),
                lambda: store.create_job(owner="a", request={}, seed=1, variations=1),
                lambda: store.wait_for_events(job.id, 1, timeout=5),
            ]
            for call in calls:
                start = time.monotonic()
                with pytest.raises(StoreUnavailable) as caught:
                    await call()
                assert time.monotonic() - start < 4.0
                assert "outage" in str(caught.value) and PASSWORD not in str(caught.value)

            await asyncio.to_thread(private_postgres.start)  # same data, same port
            deadline = time.monotonic() + 20
            while True:
                try:
                    again = await store.get_job(job.id)
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "the store did not recover"
                    await asyncio.sleep(0.2)
            assert again == job
            assert (await _create(store)).status == "queued"

            # The LISTEN connection is back too: a waiter hears another replica's append.
            writer = PostgresJobStore(url)
            try:

                async def append_later() -> None:
                    await asyncio.sleep(0.2)
                    await writer.append_event(job.id, "progress", {"p": 1})

                start = time.monotonic()
                events, _ = await asyncio.gather(
                    store.wait_for_events(job.id, 1, timeout=10), append_later()
                )
                assert [e.seq for e in events] == [2] and time.monotonic() - start < 5
            finally:
                await writer.close()
        finally:
            await store.close()

    asyncio.run(scenario())


def test_check_database_says_what_is_wrong_without_the_password(
    private_postgres: LocalPostgres,
) -> None:
    good = _role_url(private_postgres, "songs")
    check_database(good)
    check_database(good)  # again: nothing left to apply
    with psycopg.connect(good) as conn:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
    assert {"jobs", "variations", "stems", "events", "cache", "schema_migrations"} <= tables

    closed_port = free_ports(1)[0]
    cases = {
        "authentication failed": _role_url(private_postgres, "songs", password="wrong-" + PASSWORD),
        "database 'missing_db' does not exist": _role_url(private_postgres, "missing_db"),
        "connection refused": good.replace(f":{private_postgres.port}/", f":{closed_port}/"),
        "unknown host": good.replace("127.0.0.1", "no-such-host.invalid"),
    }
    for expected, url in cases.items():
        with pytest.raises(ValueError) as caught:
            check_database(url, connect_timeout_s=2)
        message = str(caught.value)
        assert expected in message, message
        assert "storage.database_url" in message and "SONGSERVE_DATABASE_URL" in message
        assert PASSWORD not in "".join(traceback.format_exception(caught.value)), message


def test_list_jobs_searches_the_songs_own_words(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        requests = [
            {"prompt": "A sunny song about Sailing home", "style": "indie pop"},
            {"lyrics": "[verse]\nsailing on and on", "style": "sea shanty"},
            {"prompt": "rainy night drive", "style": "synthwave", "title": "Neon Sailing"},
            {"prompt": "nothing to see here", "style": "ambient"},
        ]
        ids = [(await _create(store, request=r)).id for r in requests]
        await _create(store, owner="b", request={"prompt": "sailing too"})

        async def found(search: str, limit: int = 10) -> list[str]:
            listed: list[str] = []
            cursor: str | None = None
            while True:  # every page, with the search kept
                page, cursor = await store.list_jobs("a", limit=limit, cursor=cursor, search=search)
                listed += [job.id for job in page]
                if cursor is None:
                    return listed

        # Prompt, lyrics and title, any case; newest first; only the owner's.
        assert await found("SAILING") == [ids[2], ids[1], ids[0]]
        assert await found("sailing", limit=1) == [ids[2], ids[1], ids[0]]
        assert await found("sailing pop") == [ids[0]]  # every word, anywhere in the song
        assert await found("synthwave neon") == [ids[2]]
        assert await found("jazz") == []
        assert await found("   ") == ids[::-1]  # no words: everything

    backend.run(scenario)
