"""The SQLite store's waiters share one poll (`serve.store.sqlite_watch.ChangeWatch`).

Statements are counted with sqlite3's trace callback on the waiting store's own connection; the
writes come from a second store on the same file, as from another replica's process. Wake-ups
themselves are in the store contract (`test_job_store_contract.py`, both backends).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from serve.store.sqlite import SQLiteJobStore

POLL_S = 0.05


class Statements:
    """Every statement the store's connection runs, once traced."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def trace(self, store: SQLiteJobStore) -> None:
        def install(db: sqlite3.Connection) -> None:
            db.set_trace_callback(self.seen.append)

        await store._run_on_db(install)

    def reads(self, since: int = 0) -> list[str]:
        """The statements that read tables (not the version probe)."""
        return [s for s in self.seen[since:] if s.strip() != "PRAGMA data_version"]


def one_job_reads(statements: list[str]) -> list[str]:
    """`events_after` of one job (the trace shows statements with their values bound)."""
    return [s for s in statements if "FROM events WHERE job_id = '" in s]


def test_idle_waiters_share_one_version_probe(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.db", poll_interval_s=POLL_S)
        writer = SQLiteJobStore(tmp_path / "jobs.db", poll_interval_s=POLL_S)
        statements = Statements()
        try:
            jobs = [
                (await writer.create_job(owner="a", request={"p": i}, seed=i, variations=1))[0]
                for i in range(20)
            ]
            await statements.trace(store)
            waiters = [
                asyncio.create_task(store.wait_for_events(jobs[i % 20].id, 1, timeout=2.0))
                for i in range(200)
            ]
            await asyncio.sleep(20 * POLL_S)
            arrived = len(statements.seen)
            reads = statements.reads()
            # Each waiter read its job once on arrival; the watch then looked once for all jobs.
            assert len(one_job_reads(reads)) == 200
            assert len([s for s in reads if "GROUP BY job_id" in s]) == 1
            await asyncio.sleep(10 * POLL_S)
            assert statements.reads(arrived) == []  # nothing changed: only the version probe
            probes = len(statements.seen) - arrived
            assert 3 <= probes <= 12  # one per tick for all 200 waiters, not one per waiter

            appended = len(statements.seen)
            await writer.append_event(jobs[0].id, "progress", {"p": 1})
            results = await asyncio.gather(*waiters)
            assert [[e.seq for e in events] for events in results] == [
                [2] if i % 20 == 0 else [] for i in range(200)
            ]
            # Only the ten waiters of the job that changed read it again; the others timed out
            # without a query.
            after = statements.reads(appended)
            assert len(one_job_reads(after)) == 10
        finally:
            await store.close()
            await writer.close()

    asyncio.run(scenario())


def test_work_waiters_read_the_tables_only_when_the_database_changed(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.db", poll_interval_s=POLL_S)
        writer = SQLiteJobStore(tmp_path / "jobs.db", poll_interval_s=POLL_S)
        statements = Statements()
        try:
            await statements.trace(store)
            workers = [asyncio.create_task(store.wait_for_work(timeout=5.0)) for _ in range(10)]
            await asyncio.sleep(10 * POLL_S)
            arrived = len(statements.seen)
            await asyncio.sleep(10 * POLL_S)
            assert statements.reads(arrived) == []
            assert not any(worker.done() for worker in workers)

            await writer.create_job(owner="a", request={"p": 1}, seed=1, variations=1)
            done, _ = await asyncio.wait(workers, timeout=1.0)
            assert len(done) == 10  # all woken by one look, well before their timeout
        finally:
            await store.close()
            await writer.close()

    asyncio.run(scenario())


def test_own_writes_wake_waiters_of_the_same_store(tmp_path: Path) -> None:
    """data_version ignores the connection's own commits; total_changes counts them."""

    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.db", poll_interval_s=POLL_S)
        try:
            job, _ = await store.create_job(owner="a", request={"p": 1}, seed=1, variations=1)
            waiting = asyncio.create_task(store.wait_for_events(job.id, 1, timeout=5.0))
            await asyncio.sleep(5 * POLL_S)
            await store.append_event(job.id, "progress", {"p": 1})
            events = await asyncio.wait_for(waiting, 1.0)
            assert [e.seq for e in events] == [2]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_waiters_in_a_second_event_loop_are_served(tmp_path: Path) -> None:
    """A store outlives an event loop (a test's asyncio.run, a restarted replica loop)."""
    store = SQLiteJobStore(tmp_path / "jobs.db", poll_interval_s=POLL_S)
    job, _ = asyncio.run(store.create_job(owner="a", request={"p": 1}, seed=1, variations=1))

    async def wait_then_append(seq: int) -> list[int]:
        waiting = asyncio.create_task(store.wait_for_events(job.id, seq, timeout=5.0))
        await asyncio.sleep(3 * POLL_S)
        await store.append_event(job.id, "progress", {"p": seq})
        return [e.seq for e in await asyncio.wait_for(waiting, 1.0)]

    assert asyncio.run(wait_then_append(1)) == [2]
    assert asyncio.run(wait_then_append(2)) == [3]
    asyncio.run(store.close())
