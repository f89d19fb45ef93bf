"""`LeasedRunner` — claims one kind of leased work from the job store while a replica has room,
and drives each claim under its lease.

The store leases work (a song, the stems of one variation) to a worker with an expiry and a fresh
token that fences every write of the claim (serve/store/protocol.py). A runner keeps at most
`max_concurrent` claims of its kind, renews each lease every `jobs.heartbeat_s` (a renewal refused
with LeaseLost cancels the drive: another claim owns the work now), bounds each drive by
`jobs.job_timeout_s`, turns what ends a drive early into the work's own outcome, and on shutdown
cancels its drives and hands their work back so another replica resumes it at once instead of
after the lease expires.

What a claim does is the work's (`LeasedWork`); the Conductor holds one runner per kind, songs
and stems, and one claim loop over both.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from serve.store import LeaseLost

if TYPE_CHECKING:
    from serve.config import JobsConfig

logger = logging.getLogger("ray.serve")

Claimed = TypeVar("Claimed")


class LeasedWork(Protocol[Claimed]):
    """One kind of leased work, as a `LeasedRunner` claims and drives it."""

    @property
    def max_concurrent(self) -> int:
        """Claims of this kind one replica drives at once."""
        ...

    @property
    def error_code(self) -> str:
        """The code a claim fails with when its drive raised something unexpected."""
        ...

    def key(self, claimed: Claimed) -> Hashable:
        """What identifies the work across claims (a job id; a job id and variation)."""
        ...

    def describe(self, claimed: Claimed) -> str:
        """The work in a log line or a failure message ("song_…", "the stems of song_…/1")."""
        ...

    async def claim(
        self, worker: str, *, lease_s: float, max_attempts: int, exclude: tuple[Any, ...]
    ) -> Claimed | None:
        """Lease the next runnable work whose key is not in `exclude`; None when there is none."""
        ...

    async def renew(self, claimed: Claimed, *, lease_s: float) -> None:
        """Extend the claim's lease; LeaseLost when another claim took the work over."""
        ...

    async def release(self, claimed: Claimed) -> None:
        """Hand the work back for any replica to claim at once."""
        ...

    async def run(self, claimed: Claimed) -> None:
        """Do the work of one claim, writing each result under its token."""
        ...

    async def fail(self, claimed: Claimed, code: str, message: str) -> None:
        """End the work as failed (a drive that timed out or raised)."""
        ...

    async def stopped(self, claimed: Claimed, why: BaseException) -> None:
        """The drive ended early: its lease was lost (LeaseLost) or it was cancelled."""
        ...

    def ended(self, claimed: Claimed) -> None:
        """The drive is over, however it ended."""
        ...


class LeasedRunner(Generic[Claimed]):
    def __init__(
        self,
        work: LeasedWork[Claimed],
        jobs: JobsConfig,
        worker: str,
        *,
        on_slot_free: Callable[[], None],
        describe_failure: Callable[[BaseException], str],
    ) -> None:
        """`worker` names this replica on its leases (diagnostics); `on_slot_free` is called
        whenever a drive ends (the claim loop may take more); `describe_failure` turns an
        unexpected exception into the failure's message."""
        self._work = work
        self._jobs = jobs
        self._worker = worker
        self._on_slot_free = on_slot_free
        self._describe_failure = describe_failure
        self._drives: dict[Hashable, tuple[asyncio.Task[None], Claimed]] = {}

    def driving(self, key: Hashable) -> bool:
        return key in self._drives

    def cancel(self, key: Hashable) -> bool:
        """Cancel the drive of `key`, if this runner drives it; whether it did."""
        drive = self._drives.get(key)
        if drive is None:
            return False
        drive[0].cancel()
        return True

    async def claim_while_room(self) -> bool:
        """Claim while this replica has room; False when it stopped full (the store may still
        hold runnable work), True when the store had none left for it."""
        work, jobs = self._work, self._jobs
        while len(self._drives) < work.max_concurrent:
            claimed = await work.claim(
                self._worker,
                lease_s=jobs.lease_s,
                max_attempts=jobs.max_attempts,
                # An expired lease of ours: never drive the same work twice.
                exclude=tuple(self._drives),
            )
            if claimed is None:
                return True
            key = work.key(claimed)
            attempts = getattr(claimed, "attempts", 0)
            logger.info("claimed %s (attempt %d)", work.describe(claimed), attempts)
            task = asyncio.create_task(self._drive(claimed), name=f"drive {key}")
            self._drives[key] = (task, claimed)
            task.add_done_callback(functools.partial(self._finished, key))
        return False

    async def hand_back(self) -> int:
        """Cancel every drive and release its work (shutdown); how many were handed back."""
        drives = list(self._drives.values())
        for task, _ in drives:
            task.cancel()
        await asyncio.gather(*(task for task, _ in drives), return_exceptions=True)
        for _, claimed in drives:
            try:
                await self._work.release(claimed)
            except Exception:  # the lease then simply expires
                logger.exception("could not release %s", self._work.describe(claimed))
        return len(drives)

    def _finished(self, key: Hashable, _: asyncio.Task[None]) -> None:
        # A done callback, so it runs even for a drive cancelled before it began.
        drive = self._drives.pop(key, None)
        if drive is not None:
            self._work.ended(drive[1])
        self._on_slot_free()

    async def _drive(self, claimed: Claimed) -> None:
        work, timeout_s = self._work, self._jobs.job_timeout_s
        heartbeat = asyncio.create_task(self._heartbeat(claimed, asyncio.current_task()))
        try:
            await asyncio.wait_for(work.run(claimed), timeout=timeout_s)
        except (LeaseLost, asyncio.CancelledError) as stopped:
            await work.stopped(claimed, stopped)
        except TimeoutError:
            message = (
                f"{work.describe(claimed)} did not finish within jobs.job_timeout_s "
                f"({timeout_s:g} s)"
            )
            await work.fail(claimed, "timeout", message)
        except Exception as error:
            logger.exception("%s failed", work.describe(claimed))
            await work.fail(claimed, work.error_code, self._describe_failure(error))
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, claimed: Claimed, driver: asyncio.Task[Any] | None) -> None:
        while True:
            await asyncio.sleep(self._jobs.heartbeat_s)
            try:
                await self._work.renew(claimed, lease_s=self._jobs.lease_s)
            except LeaseLost:
                if driver is not None:
                    driver.cancel()
                return
            except Exception:
                logger.exception("renewing the lease on %s failed", self._work.describe(claimed))
