"""`with_progress`: a worker thread's progress reaches the event loop in order, then the result."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from deployments.progress import Finished, ProgressCallback, WorkStopped, with_progress


def _collect(work: Any) -> list[Any]:
    async def run() -> list[Any]:
        return [item async for item in with_progress(work)]

    return asyncio.run(run())


def test_reports_arrive_in_order_then_the_result() -> None:
    loop_thread = threading.get_ident()
    ran_on: list[int] = []

    def work(on_progress: ProgressCallback) -> str:
        ran_on.append(threading.get_ident())
        for step in range(1, 6):
            time.sleep(0.01 if step % 2 else 0)
            on_progress(step, 5)
        return "made"

    items = _collect(work)
    assert items == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5), Finished("made")]
    assert ran_on != [loop_thread]  # the loop stayed free


def test_the_loop_keeps_running_while_the_work_runs() -> None:
    async def run() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        async for _ in with_progress(lambda _: time.sleep(0.3)):
            pass
        ticker.cancel()
        return ticks

    assert asyncio.run(run()) >= 5


def test_the_work_s_exception_propagates_after_its_reports() -> None:
    seen: list[Any] = []

    def work(on_progress: ProgressCallback) -> None:
        on_progress(1, 2)
        raise ValueError("broken model")

    async def run() -> None:
        async for item in with_progress(work):
            seen.append(item)

    with pytest.raises(ValueError, match="broken model"):
        asyncio.run(run())
    assert seen == [(1, 2)]


def test_work_stops_at_its_next_report_once_no_one_waits() -> None:
    """A thread cannot be interrupted: `stop_when` is asked at each report, and the work ends
    there with WorkStopped instead of running to its end."""
    steps_run: list[int] = []

    def work(on_progress: ProgressCallback) -> str:
        for step in range(1, 101):
            steps_run.append(step)
            on_progress(step, 100)
        return "made"

    async def run() -> list[Any]:
        seen: list[Any] = []
        stream = with_progress(work, stop_when=lambda: len(steps_run) > 3)
        with pytest.raises(WorkStopped, match="step 4 of 100"):
            async for item in stream:
                seen.append(item)
        return seen

    assert asyncio.run(run()) == [(1, 100), (2, 100), (3, 100)]
    assert steps_run == [1, 2, 3, 4]  # stopped at the fourth report, not the hundredth


def test_a_sketch_render_stops_between_its_parts() -> None:
    from pipeline.engines.sketch import SketchSongModel
    from pipeline.song_models import RenderRequest
    from pipeline.tags import StyleTags

    request = RenderRequest(
        job_id="j",
        variation=0,
        seed=1,
        duration_s=20.0,
        tags=StyleTags(genre="pop", subgenre=None, family="pop"),
        sections=[],
        instrumental=True,
        language="en",
    )
    reports: list[Any] = []

    async def run() -> None:
        rendering = with_progress(
            lambda on_progress: SketchSongModel().render([request], on_progress),
            stop_when=lambda: len(reports) >= 2,
        )
        async for item in rendering:
            reports.append(item)

    with pytest.raises(WorkStopped):
        asyncio.run(run())
    assert reports == [(1, 6), (2, 6)]  # the plan and the drums; no bass, harmony or lead
