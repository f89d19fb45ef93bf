"""`LeasedRunner` (serve/workflow/leasing.py) on a real SQLite job store, with the Conductor's own
song work (SongStages) claiming, renewing and releasing songs there; only what a claim *does* is
the test's.

The Conductor's own tests (test_conductor.py) drive whole songs through it; these pin the runner's
rules one by one: room, timeout, failure, lost lease and hand-back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from deployments.song_stages import SongStages
from serve.config import JobsConfig
from serve.metrics import song_metrics
from serve.store import JobRecord
from serve.store.sqlite import SQLiteJobStore
from serve.workflow.leasing import LeasedRunner

Run = Callable[[JobRecord], Awaitable[None]]


class SongsOnTheStore(SongStages):
    """The Conductor's song work, claimed, renewed and released on the store as SongStages does,
    with a `run` the test chooses; records what the runner told it."""

    def __init__(self, store: SQLiteJobStore, jobs: JobsConfig, run: Run) -> None:
        super().__init__(
            jobs,
            store,
            None,  # type: ignore[arg-type] - no render is looked up
            lyrics=None,
            tags=None,
            router=None,
            postprocessor=None,
            metrics=song_metrics(),
        )
        self._run = run
        self.failed: list[tuple[str, str, str]] = []
        self.stopped_by: list[tuple[str, str]] = []
        self.drives_ended: list[str] = []

    async def run(self, job: JobRecord) -> None:
        await self._run(job)

    async def fail(self, job: JobRecord, code: str, message: str) -> None:
        self.failed.append((job.id, code, message))

    async def stopped(self, job: JobRecord, why: BaseException) -> None:
        self.stopped_by.append((job.id, type(why).__name__))

    def ended(self, job: JobRecord) -> None:
        super().ended(job)
        self.drives_ended.append(job.id)


def _jobs(**fields: Any) -> JobsConfig:
    defaults: dict[str, Any] = {
        "lease_s": 5.0,
        "heartbeat_s": 1.0,
        "max_attempts": 3,
        "max_concurrent_jobs": 2,
        "job_timeout_s": 30.0,
    }
    return JobsConfig.model_validate({**defaults, **fields})


async def _songs(store: SQLiteJobStore, count: int) -> list[JobRecord]:
    created = [
        await store.create_job(owner="a", request={"p": i}, seed=i, variations=1)
        for i in range(count)
    ]
    return [job for job, _ in created]


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


def _runner(work: SongsOnTheStore, jobs: JobsConfig, freed: list[int]) -> LeasedRunner[JobRecord]:
    return LeasedRunner(
        work,
        jobs,
        "worker-a",
        on_slot_free=lambda: freed.append(1),
        describe_failure=lambda error: f"described: {error}",
    )


def test_it_claims_while_there_is_room_and_frees_a_slot_per_finished_drive(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.db")
        jobs = _jobs(max_concurrent_jobs=2)
        release = asyncio.Event()

        async def run(job: JobRecord) -> None:
            await release.wait()

        work, freed = SongsOnTheStore(store, jobs, run), []
        runner = _runner(work, jobs, freed)
        songs = await _songs(store, 3)
        assert await runner.claim_while_room() is False  # full, one song still queued
        driving = [song.id for song in songs if runner.driving(song.id)]
        assert driving == [songs[0].id, songs[1].id]
        release.set()
        await _until(lambda: len(work.drives_ended) == 2)
        assert len(freed) == 2 and not work.failed and not work.stopped_by
        assert await runner.claim_while_room() is True  # the third, then nothing left
        await _until(lambda: len(work.drives_ended) == 3)
        await store.close()

    asyncio.run(scenario())


def test_a_drive_past_the_job_timeout_fails_naming_the_setting(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.db")
        jobs = _jobs(job_timeout_s=0.2)

        async def run(job: JobRecord) -> None:
            await asyncio.sleep(10)

        work, freed = SongsOnTheStore(store, jobs, run), []
        runner = _runner(work, jobs, freed)
        (song,) = await _songs(store, 1)
        await runner.claim_while_room()
        await _until(lambda: bool(work.drives_ended))
        assert work.failed == [
            (song.id, "timeout", f"{song.id} did not finish within jobs.job_timeout_s (0.2 s)")
        ]
        await store.close()

    asyncio.run(scenario())


def test_a_drive_that_raises_fails_with_the_works_code_and_the_described_error(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.db")
        jobs = _jobs()

        async def run(job: JobRecord) -> None:
            raise ValueError("no such chord")

        work, freed = SongsOnTheStore(store, jobs, run), []
        runner = _runner(work, jobs, freed)
        (song,) = await _songs(store, 1)
        await runner.claim_while_room()
        await _until(lambda: bool(work.drives_ended))
        assert work.failed == [(song.id, "internal_error", "described: no such chord")]
        await store.close()

    asyncio.run(scenario())


def test_a_lease_taken_over_by_another_claim_stops_the_drive(tmp_path: Path) -> None:
    """The heartbeat comes after the lease expired and another worker claimed the song: the
    renewal is refused, and the drive is cancelled rather than writing on as a second driver."""

    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.db")
        # A heartbeat later than the lease, as a stalled event loop makes it (the setting's own
        # validation refuses it as a configuration).
        jobs = _jobs().model_copy(update={"lease_s": 0.2, "heartbeat_s": 0.6})
        finished: list[str] = []

        async def run(job: JobRecord) -> None:
            await asyncio.sleep(3)
            finished.append(job.id)

        work, freed = SongsOnTheStore(store, jobs, run), []
        runner = _runner(work, jobs, freed)
        (song,) = await _songs(store, 1)
        await runner.claim_while_room()
        await asyncio.sleep(0.35)  # the lease has expired
        other = await store.claim_next("worker-b", lease_s=30, max_attempts=3)
        assert other is not None and other.id == song.id
        await _until(lambda: bool(work.drives_ended))
        assert work.stopped_by == [(song.id, "CancelledError")]
        assert finished == [] and work.failed == []
        await store.close()

    asyncio.run(scenario())


def test_hand_back_cancels_every_drive_and_releases_its_song_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.db")
        jobs = _jobs(max_concurrent_jobs=2, lease_s=60)

        async def run(job: JobRecord) -> None:
            await asyncio.sleep(30)

        work, freed = SongsOnTheStore(store, jobs, run), []
        runner = _runner(work, jobs, freed)
        songs = await _songs(store, 2)
        await runner.claim_while_room()
        assert await runner.hand_back() == 2
        assert sorted(work.drives_ended) == sorted(song.id for song in songs)
        # Released, not left to a 60 s lease: another replica claims both now.
        claimed = [await store.claim_next("worker-b", lease_s=30, max_attempts=3) for _ in songs]
        assert sorted(job.id for job in claimed if job is not None) == sorted(s.id for s in songs)
        await store.close()

    asyncio.run(scenario())
