"""A job store that rides out short outages, for workers.

A database restart or failover takes seconds. A conductor that gave up on the first failed write
would abandon the job until its lease expires and burn one of its attempts; instead, its calls
wait and try again while the store is unavailable, up to a patience, and only then fail. Clients
are not made to wait: the API answers 503 with Retry-After at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from serve.store import JobStore, StoreUnavailable

from .retry import Backoff

logger = logging.getLogger("ray.serve")

# Waits are already loops over time: retrying them would only stretch their timeout.
_NOT_RETRIED = frozenset({"wait_for_events", "wait_for_work", "close"})


def patient_store(store: JobStore, *, patience_s: float, backoff: Backoff) -> JobStore:
    """`store`, with every call retried on StoreUnavailable (waiting per `backoff`, without its
    attempt count) until `patience_s` have passed since the call began."""
    return cast(JobStore, _PatientStore(store, patience_s, backoff))


class _PatientStore:
    def __init__(self, store: JobStore, patience_s: float, backoff: Backoff) -> None:
        self._store = store
        self._patience_s = patience_s
        self._backoff = backoff

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if name in _NOT_RETRIED or not asyncio.iscoroutinefunction(method):
            return method
        return self._patient(name, method)

    def _patient(self, name: str, method: Callable[..., Awaitable[Any]]) -> Any:
        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._patience_s
            failures = 0
            while True:
                try:
                    return await method(*args, **kwargs)
                except StoreUnavailable as error:
                    failures += 1
                    delay = self._backoff.delay_s(failures)
                    if loop.time() + delay > deadline:
                        raise
                    logger.warning("job store unavailable (%s: %s); retrying", name, error)
                    await asyncio.sleep(delay)

        return call
