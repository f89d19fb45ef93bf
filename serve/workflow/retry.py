"""Retries within a claim: every stage of a job is tried again, with bounded exponential backoff,
before the job is failed with the reason.

Ray Serve retries routing but never execution: a replica that dies mid-request (or a pool that is
restarting, or back-pressure) gives the caller an error. Those are usually over in seconds, so a
stage waits and tries again instead of failing the song.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger("ray.serve")

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Waits between tries: `base_s`, then 2×, 4×… up to `max_s`."""

    base_s: float
    max_s: float

    def delay_s(self, failed_attempts: int) -> float:
        """The wait after the `failed_attempts`-th failure (counting from 1)."""
        return min(self.base_s * 2 ** (failed_attempts - 1), self.max_s)


class StageFailed(RuntimeError):
    """A stage failed on every try; `reason` is the last failure, in one line."""

    def __init__(self, stage: str, attempts: int, reason: str) -> None:
        super().__init__(f"{stage} failed {attempts} time(s); last: {reason}")
        self.stage = stage
        self.attempts = attempts
        self.reason = reason


async def retry_stage(
    stage: str,
    operation: Callable[[], Awaitable[T]],
    attempts: int,
    backoff: Backoff,
    *,
    describe: Callable[[BaseException], str],
    fatal: tuple[type[BaseException], ...] = (),
    on_retry: Callable[[], None] | None = None,
) -> T:
    """`await operation()`, tried up to `attempts` times, waiting per `backoff` in between.
    Exceptions in `fatal` (and cancellation) pass through at once; the last of the others
    becomes `StageFailed`. `on_retry` is called before each further try (metrics)."""
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except fatal:
            raise
        except Exception as error:  # retried, then reported as StageFailed
            reason = describe(error)
            if attempt == attempts:
                raise StageFailed(stage, attempt, reason) from error
            delay = backoff.delay_s(attempt)
            logger.warning(
                "%s failed (try %d of %d): %s; retrying in %.1f s",
                stage,
                attempt,
                attempts,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
            if on_retry is not None:
                on_retry()
    raise ValueError(f"{stage}: attempts must be at least 1, got {attempts}")
