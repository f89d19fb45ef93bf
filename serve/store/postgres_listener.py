"""The LISTEN side of the Postgres job store: one connection per store, outside its pool, that
hears every NOTIFY and wakes the waiters of `wait_for_events` and `wait_for_work` in this process
(so an idle SSE stream costs the database nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg

from .postgres_connect import unavailable_error

logger = logging.getLogger(__name__)

EVENTS_CHANNEL = "songserve_events"
"""NOTIFY channel of appended events; the payload is `<job id>:<seq>`."""
WORK_CHANNEL = "songserve_work"
"""NOTIFY channel of work that became claimable; the payload is `job:<id>` or `stems:<id>:<k>`."""
_LISTEN_BACKOFF_S = (0.1, 2.0)  # first and longest pause between LISTEN reconnection attempts


class _JobWaiter:
    """A `wait_for_events` caller: woken by events of its job numbered past `after_seq`."""

    __slots__ = ("after_seq", "woken")

    def __init__(self, after_seq: int) -> None:
        self.after_seq = after_seq
        self.woken = asyncio.Event()


class Listener:
    """One LISTEN connection (outside the pool) that wakes this process's waiters.

    `wait_for_events` callers wait per job (a notification with a sequence number they have seen
    leaves them asleep), `wait_for_work` callers in one set. When the connection drops it
    reconnects with backoff, and every (re)connection wakes every waiter: notifications sent while
    nobody listened are lost, so waiters must read again.
    """

    def __init__(self, conninfo: str, connect_kwargs: dict[str, Any]) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._job_waiters: dict[str, set[_JobWaiter]] = {}
        self._work_waiters: set[asyncio.Event] = set()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.tried = asyncio.Event()  # the first connection attempt has ended, either way
        self.connections = 0  # how many times LISTEN was (re)established

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="songserve-jobs-listen")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @contextlib.contextmanager
    def job_waiter(self, job_id: str, after_seq: int) -> Iterator[asyncio.Event]:
        waiter = _JobWaiter(after_seq)
        self._job_waiters.setdefault(job_id, set()).add(waiter)
        try:
            yield waiter.woken
        finally:
            waiters = self._job_waiters.get(job_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._job_waiters[job_id]

    @contextlib.contextmanager
    def work_waiter(self) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._work_waiters.add(event)
        try:
            yield event
        finally:
            self._work_waiters.discard(event)

    def _wake_all(self) -> None:
        for waiters in self._job_waiters.values():
            for waiter in waiters:
                waiter.woken.set()
        for event in self._work_waiters:
            event.set()

    def _dispatch(self, notify: psycopg.Notify) -> None:
        if notify.channel == EVENTS_CHANNEL:
            job_id, _, seq = notify.payload.rpartition(":")
            newest = int(seq) if seq.isdigit() else None
            for waiter in self._job_waiters.get(job_id, ()):
                if newest is None or newest > waiter.after_seq:
                    waiter.woken.set()
        elif notify.channel == WORK_CHANNEL:
            for event in self._work_waiters:
                event.set()

    async def _run(self) -> None:
        pause, longest = _LISTEN_BACKOFF_S
        failures = 0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, **self._connect_kwargs
                )
            except psycopg.Error as error:
                self.tried.set()
                failures += 1
                logger.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "job store LISTEN: %s; retrying (every %g s at most)",
                    unavailable_error(self._conninfo, error),
                    longest,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, longest)
                continue
            try:
                await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                await conn.execute(f"LISTEN {WORK_CHANNEL}")
                self.connected.set()
                self.tried.set()
                if self.connections:
                    logger.warning("job store LISTEN connection re-established")
                self.connections += 1
                failures = 0
                pause = _LISTEN_BACKOFF_S[0]
                self._wake_all()
                async for notify in conn.notifies():
                    self._dispatch(notify)
            except psycopg.Error as error:
                logger.warning(
                    "job store LISTEN connection lost: %s; reconnecting",
                    unavailable_error(self._conninfo, error),
                )
            finally:
                self.connected.clear()
                await conn.close()
            await asyncio.sleep(pause)
