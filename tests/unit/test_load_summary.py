"""`songserve load` statistics and knee detection, on constructed records."""

from __future__ import annotations

import numpy as np
import pytest

from serve.load import SongRecord, find_knee, percentile, plan_steps, summarize_steps
from serve.load.arrivals import Step


def fifo_server(rates_per_min: list[float], step_s: float) -> tuple[list[Step], list[SongRecord]]:
    """Evenly spaced arrivals through one FIFO server that finishes a song at most every 6 s
    (10 songs/min) and never sooner than 30 s after its POST."""
    steps = plan_steps([r / 60 for r in rates_per_min], step_s)
    records: list[SongRecord] = []
    last_done = -1e9
    for step in steps:
        gap = 60 / (step.rate_per_s * 60)
        at = step.start_s
        while at < step.end_s:
            done_at = max(at + 30, last_done + 6)
            last_done = done_at
            records.append(
                SongRecord(
                    index=len(records),
                    step=step.index,
                    scheduled_at_s=at,
                    body={},
                    submitted_at_s=at,
                    http_status=202,
                    admission="accepted",
                    song_id=f"song_{len(records)}",
                    first_progress_s=2.0,
                    done_s=done_at - at,
                    ended_s=done_at - at,
                    result="done",
                )
            )
            at += gap
    return steps, records


def test_percentile_matches_numpy_linear() -> None:
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.0]
    for q in (0, 50, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0


def test_steps_below_capacity_keep_up_and_above_it_plateau() -> None:
    steps, records = fifo_server([6, 12, 24], step_s=600)
    low, mid, high = summarize_steps(steps, records)
    assert (low.offered_per_min, low.submitted, low.done) == (6, 60, 60)
    assert low.finished_per_min == pytest.approx(6, abs=0.2)
    assert low.keep_up == pytest.approx(1.0, abs=0.03)
    assert low.time_to_done.p50 == low.time_to_done.p95 == pytest.approx(30)
    assert low.time_to_first_progress.p95 == 2.0
    # Past capacity, the finished rate stays at the server's 10/min, and latency climbs.
    for row in (mid, high):
        assert row.finished_per_min == pytest.approx(10, abs=0.3)
        assert row.time_to_done.p95 is not None and row.time_to_done.p95 > 100
    assert mid.keep_up == pytest.approx(10 / 12, abs=0.03)
    assert high.keep_up == pytest.approx(10 / 24, abs=0.03)
    assert high.time_to_done.p99 >= high.time_to_done.p95 >= high.time_to_done.p50


def test_knee_is_the_last_rate_that_keeps_up() -> None:
    steps, records = fifo_server([6, 9, 12, 24], step_s=600)
    rows = summarize_steps(steps, records)
    knee = find_knee(rows, keep_up=0.9, p95_target_s=600)
    assert knee.offered_per_min == 9
    assert knee.first_failing is not None and knee.first_failing.offered_per_min == 12
    assert "finished" in knee.why and "< 90%" in knee.why
    # A step that keeps up but slowly: its p95 against the target decides.
    for record in records:
        if record.step == 1 and record.done_s is not None:
            record.done_s += 20
    rows = summarize_steps(steps, records)
    assert rows[1].keep_up == pytest.approx(1.0, abs=0.06)
    tight = find_knee(rows, keep_up=0.9, p95_target_s=40)
    assert tight.offered_per_min == 6 and "p95 time to done 50.0 s > target 40 s" in tight.why
    none = find_knee(rows, keep_up=0.9, p95_target_s=10)
    assert none.offered_per_min is None and "not even the lowest" in none.why


def test_all_steps_keeping_up_put_the_knee_beyond_the_run() -> None:
    steps, records = fifo_server([3, 6], step_s=600)
    knee = find_knee(summarize_steps(steps, records), keep_up=0.9, p95_target_s=60)
    assert knee.offered_per_min == 6 and knee.first_failing is None
    assert "beyond" in knee.why


def test_refusals_failures_and_unfinished_are_counted_per_step() -> None:
    steps = plan_steps([0.1, 0.1], step_s=100)

    def record(index: int, step: int, **fields: object) -> SongRecord:
        at = step * 100 + index
        return SongRecord(
            index=index, step=step, scheduled_at_s=at, body={}, submitted_at_s=at, **fields
        )  # type: ignore[arg-type]

    records = [
        record(0, 0, http_status=202, admission="accepted", result="done", done_s=10.0),
        record(1, 0, http_status=429, admission="throttled", result="refused", reason="quota"),
        record(2, 0, http_status=503, admission="overloaded", result="refused", reason="busy"),
        record(3, 0, http_status=None, admission="other", result="refused", reason="ConnectError"),
        record(4, 1, http_status=202, admission="accepted", result="failed", reason="x"),
        record(5, 1, http_status=202, admission="accepted", result="unfinished"),
    ]
    first, second = summarize_steps(steps, records)
    assert (first.submitted, first.admitted, first.throttled, first.overloaded, first.other) == (
        4, 1, 1, 1, 1,
    )  # fmt: skip
    assert (first.refused, first.done, first.failed, first.unfinished) == (3, 1, 0, 0)
    assert first.finished_per_min == pytest.approx(0.6)  # 1 song in 100 s
    assert (second.admitted, second.done, second.failed, second.unfinished) == (2, 0, 1, 1)
    assert second.finished_per_min == 0 and second.time_to_done.p50 is None
    knee = find_knee([first, second], keep_up=0.9, p95_target_s=60)
    assert knee.offered_per_min is None  # 1 of 4 finished at the only rate offered
