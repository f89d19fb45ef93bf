"""Retries within a claim (bounded exponential backoff) and a job store that rides out short
outages for workers."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from serve.store import LeaseLost, StoreUnavailable
from serve.workflow import Backoff, StageFailed, patient_store, retry_stage


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(base_s=0.5, max_s=3.0)
    assert [backoff.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_stage_is_retried_until_it_works() -> None:
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionError("replica died")
        return "lyrics"

    result = asyncio.run(retry_stage("lyrics", flaky, 5, Backoff(0.05, 1.0), describe=repr))
    assert result == "lyrics" and len(calls) == 3
    waits = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert waits[0] >= 0.05 and waits[1] >= 0.1  # 0.05 s, then twice that


def test_a_stage_failing_every_try_names_the_last_reason() -> None:
    async def broken() -> None:
        raise ValueError("bad answer")

    with pytest.raises(StageFailed) as caught:
        asyncio.run(retry_stage("tags", broken, 3, Backoff(0, 0), describe=repr))
    assert caught.value.stage == "tags" and caught.value.attempts == 3
    assert "bad answer" in caught.value.reason and "failed 3 time(s)" in str(caught.value)


def test_fatal_errors_pass_through_at_once() -> None:
    calls = 0

    async def lost() -> None:
        nonlocal calls
        calls += 1
        raise LeaseLost("taken over")

    with pytest.raises(LeaseLost):
        asyncio.run(retry_stage("x", lost, 5, Backoff(0, 0), describe=repr, fatal=(LeaseLost,)))
    assert calls == 1


class FlakyStore:
    """A store unavailable for its first `outage` calls."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.calls = 0

    async def get_job(self, job_id: str) -> Any:
        self.calls += 1
        if self.calls <= self.outage:
            raise StoreUnavailable("the database restarts")
        return {"id": job_id}

    async def wait_for_work(self, timeout: float) -> None:
        self.calls += 1
        raise StoreUnavailable("down")


def test_a_patient_store_rides_out_a_short_outage() -> None:
    flaky = FlakyStore(outage=3)
    store: Any = patient_store(flaky, patience_s=5.0, backoff=Backoff(0.01, 0.05))  # type: ignore[arg-type]
    assert asyncio.run(store.get_job("song_1")) == {"id": "song_1"}
    assert flaky.calls == 4


def test_a_patient_store_gives_up_after_its_patience() -> None:
    flaky = FlakyStore(outage=10**6)
    store: Any = patient_store(flaky, patience_s=0.2, backoff=Backoff(0.05, 0.05))  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.get_job("song_1"))
    assert time.monotonic() - started < 1.0 and flaky.calls >= 3
    # Waits are not retried: they are loops over time already.
    with pytest.raises(StoreUnavailable):
        asyncio.run(store.wait_for_work(1.0))
