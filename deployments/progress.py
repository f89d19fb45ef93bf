"""Compute-bound work on a worker thread, with its progress relayed to the replica's event loop.

Models report progress through a plain callback from the thread they run on; deployments stream
it to their callers as it happens. `with_progress` is that bridge: the replica's loop stays free
(health checks, other requests) while the work runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pipeline.progress import ProgressCallback, WorkStopped

T = TypeVar("T")

__all__ = ["Finished", "ProgressCallback", "WorkStopped", "with_progress"]


@dataclass(frozen=True)
class Finished(Generic[T]):
    """The last item `with_progress` yields: what the work returned."""

    value: T


async def with_progress(
    work: Callable[[ProgressCallback], T],
    executor: Executor | None = None,
    *,
    stop_when: Callable[[], bool] | None = None,
) -> AsyncIterator[tuple[int, int] | Finished[T]]:
    """Run `work(on_progress)` on `executor` (the loop's default one when None); yield each
    (step, steps) it reports, in order, then `Finished(result)`. Its exception propagates.

    A thread cannot be interrupted, so work stops at a progress report: when `stop_when()`
    (asked from the worker thread at each report) is true, `on_progress` raises WorkStopped
    into the work, which ends it there (a diffusers step callback, a sketch part)."""
    loop = asyncio.get_running_loop()
    reported: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def on_progress(step: int, steps: int) -> None:
        if stop_when is not None and stop_when():
            raise WorkStopped(f"stopped at step {step} of {steps}: no one waits for the result")
        loop.call_soon_threadsafe(reported.put_nowait, (step, steps))

    running = loop.run_in_executor(executor, work, on_progress)
    while not running.done():
        next_report = asyncio.ensure_future(reported.get())
        waiting: set[asyncio.Future[Any]] = {next_report, running}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if next_report.done():
            yield next_report.result()
        else:
            next_report.cancel()
    # Reports made just before the work returned were scheduled before its completion.
    while not reported.empty():
        yield reported.get_nowait()
    yield Finished(running.result())
