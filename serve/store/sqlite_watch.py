"""The waiting side of the SQLite job store: one poll per store wakes every waiter in the process.

SQLite cannot notify. Polling per waiter made each open SSE stream and each idle conductor run its
own query every `poll_interval_s`: a dozen streams were over a hundred queries a second on the
store's one thread, though nothing had changed. `ChangeWatch` polls once per tick for all of them,
and asks only `PRAGMA data_version` (plus the connection's own `total_changes`): a counter SQLite
keeps in shared memory, which moves when any connection commits a change. Only when it moved, or
a waiter arrived since the last look, does the tick read the tables — one grouped query for every
job that has waiters, and one runnable-work query when a conductor waits — and wake the waiters
it concerns.

The counterpart of `postgres_listener.Listener`, which hears NOTIFY instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

# SQLite's default limit on bound parameters is 999 in older builds; a grouped query asks for at
# most this many jobs at once.
_JOBS_PER_QUERY = 500

# `run(fn, *args)` awaits `fn(connection, *args)` on the store's database thread.
RunOnDatabase = Callable[..., Awaitable[Any]]


def data_version(db: sqlite3.Connection) -> tuple[int, int]:
    """What moves when the database changed: another connection's commit moves data_version,
    this connection's own writes move total_changes (data_version ignores them)."""
    row = db.execute("PRAGMA data_version").fetchone()
    return int(row[0]), db.total_changes


def latest_seqs(db: sqlite3.Connection, job_ids: Collection[str]) -> dict[str, int]:
    """The newest event number of each job that has events, of `job_ids`."""
    ids = list(job_ids)
    latest: dict[str, int] = {}
    for start in range(0, len(ids), _JOBS_PER_QUERY):
        chunk = ids[start : start + _JOBS_PER_QUERY]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT job_id, MAX(seq) FROM events WHERE job_id IN ({marks}) GROUP BY job_id",
            chunk,
        )
        latest.update({job_id: int(seq) for job_id, seq in rows})
    return latest


@dataclass
class _Waiters:
    """Everyone waiting in one event loop: event waiters by job, work waiters in one set."""

    loop: asyncio.AbstractEventLoop
    events: dict[str, dict[asyncio.Future[None], int]] = field(default_factory=dict)
    work: set[asyncio.Future[None]] = field(default_factory=set)
    arrived: bool = False  # someone began waiting since the last look at the tables

    def __bool__(self) -> bool:
        return bool(self.events or self.work)


class ChangeWatch:
    """Wakes `wait_for_events` and `wait_for_work` callers of one SQLite store.

    `has_work(connection)` says whether runnable work exists. The poll runs only while someone
    waits, on the waiters' event loop."""

    def __init__(
        self,
        run: RunOnDatabase,
        has_work: Callable[[sqlite3.Connection], bool],
        poll_interval_s: float,
    ) -> None:
        self._run = run
        self._has_work = has_work
        self._poll_interval_s = poll_interval_s
        self._waiters: _Waiters | None = None
        self._poll: asyncio.Task[None] | None = None

    async def events(self, job_id: str, after_seq: int, timeout: float) -> bool:
        """Wait until `job_id` has events numbered past `after_seq` (True), or for `timeout`
        (False)."""
        waiters = self._joined()
        woken: asyncio.Future[None] = waiters.loop.create_future()
        waiters.events.setdefault(job_id, {})[woken] = after_seq
        try:
            return await self._until(woken, timeout)
        finally:
            by_job = waiters.events.get(job_id, {})
            by_job.pop(woken, None)
            if not by_job:
                waiters.events.pop(job_id, None)

    async def work(self, timeout: float) -> bool:
        """Wait until the store holds runnable work (True), or for `timeout` (False)."""
        waiters = self._joined()
        woken: asyncio.Future[None] = waiters.loop.create_future()
        waiters.work.add(woken)
        try:
            return await self._until(woken, timeout)
        finally:
            waiters.work.discard(woken)

    async def close(self) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        self._poll = None

    # -- the poll ---------------------------------------------------------------------------------

    def _joined(self) -> _Waiters:
        loop = asyncio.get_running_loop()
        if self._waiters is None or self._waiters.loop is not loop:
            # A new loop (a test's next asyncio.run): the old one's waiters are gone with it.
            self._waiters = _Waiters(loop)
            self._poll = None
        self._waiters.arrived = True
        if self._poll is None or self._poll.done():
            self._poll = loop.create_task(self._poll_while_waited(self._waiters))
        return self._waiters

    async def _until(self, woken: asyncio.Future[None], timeout: float) -> bool:
        await asyncio.wait({woken}, timeout=timeout)
        return woken.done()

    async def _poll_while_waited(self, waiters: _Waiters) -> None:
        seen: tuple[int, int] | None = None
        while waiters:
            try:
                version: tuple[int, int] = await self._run(data_version)
                if version != seen or waiters.arrived:
                    waiters.arrived = False
                    await self._look(waiters)
                    seen = version
            except Exception:  # a busy or failing database: its waiters time out
                logger.debug("looking for changes in the job store failed", exc_info=True)
            await asyncio.sleep(self._poll_interval_s)

    async def _look(self, waiters: _Waiters) -> None:
        if waiters.events:
            latest: dict[str, int] = await self._run(latest_seqs, tuple(waiters.events))
            for job_id, seq in latest.items():
                for woken, after_seq in list(waiters.events.get(job_id, {}).items()):
                    if seq > after_seq and not woken.done():
                        woken.set_result(None)
        if waiters.work and await self._run(self._has_work):
            for woken in list(waiters.work):
                if not woken.done():
                    woken.set_result(None)
