"""Per-step statistics of a load run, and where the knee is.

Definitions (the report repeats them):
- offered: the step's scheduled rate; submitted/min: songs actually submitted in the step ÷ its
  length (a Poisson draw of the offered rate).
- finished/min: `done` events of any song inside the step's window shifted by the step's median
  time to done, per minute. Shifting by the latency counts the completions the step's own
  arrivals cause (not the previous step's tail), and counting every song's completions gives the
  rate the server really finishes songs at, whatever the mix of durations; past saturation it
  stays at the server's capacity however much more is offered.
- keep-up: finished/min ÷ submitted/min.
- latencies: percentiles over the step's songs that got `done` (refused, failed and unfinished
  songs are counted in their own columns).
- knee: walking the steps from the lowest offered rate up, the highest offered rate before the
  first step that falls behind (keep-up below the threshold) or whose p95 time to done exceeds
  the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .arrivals import Step
from .records import SongRecord


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0–100) with linear interpolation between order statistics (numpy's
    default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Latency:
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, values: list[float]) -> Latency:
        return cls(percentile(values, 50), percentile(values, 95), percentile(values, 99))


@dataclass(frozen=True)
class StepSummary:
    step: int
    offered_per_min: float
    duration_s: float
    submitted: int
    admitted: int  # 202
    throttled: int  # 429
    overloaded: int  # 503
    other: int  # any other answer, or none
    done: int
    failed: int
    unfinished: int
    submitted_per_min: float
    finished_per_min: float
    time_to_done: Latency
    time_to_first_progress: Latency

    @property
    def refused(self) -> int:
        return self.throttled + self.overloaded + self.other

    @property
    def keep_up(self) -> float | None:
        """finished/min ÷ submitted/min; None when nothing was submitted."""
        if self.submitted_per_min <= 0:
            return None
        return self.finished_per_min / self.submitted_per_min


def summarize_steps(steps: list[Step], records: list[SongRecord]) -> list[StepSummary]:
    """One summary per step of the schedule (see the module docstring for the definitions)."""
    finished_at = sorted(t for r in records if (t := r.finished_at_s) is not None)
    rows = []
    for step in steps:
        own = [r for r in records if r.step == step.index]
        done = [r for r in own if r.result == "done" and r.done_s is not None]
        shift = percentile([r.done_s for r in done if r.done_s is not None], 50) or 0.0
        start, end = step.start_s + shift, step.end_s + shift
        finished = sum(start <= t < end for t in finished_at)
        minutes = step.duration_s / 60
        rows.append(
            StepSummary(
                step=step.index,
                offered_per_min=step.rate_per_s * 60,
                duration_s=step.duration_s,
                submitted=len(own),
                admitted=sum(r.admission == "accepted" for r in own),
                throttled=sum(r.admission == "throttled" for r in own),
                overloaded=sum(r.admission == "overloaded" for r in own),
                other=sum(r.admission == "other" for r in own),
                done=len(done),
                failed=sum(r.result == "failed" for r in own),
                unfinished=sum(r.result == "unfinished" for r in own),
                submitted_per_min=len(own) / minutes,
                finished_per_min=finished / minutes,
                time_to_done=Latency.of([r.done_s for r in done if r.done_s is not None]),
                time_to_first_progress=Latency.of(
                    [r.first_progress_s for r in own if r.first_progress_s is not None]
                ),
            )
        )
    return rows


@dataclass(frozen=True)
class Knee:
    """The highest offered rate the server kept up with (None: not even the lowest), and the
    first step that did not (None: none failed — the knee lies beyond the run)."""

    offered_per_min: float | None
    first_failing: StepSummary | None
    why: str  # one sentence for the report


def _failure(row: StepSummary, keep_up: float, p95_target_s: float) -> str | None:
    """Why a step does not keep up, or None when it does."""
    if row.submitted == 0:
        return None
    ratio = row.keep_up
    if ratio is None or ratio < keep_up:
        shown = "n/a" if ratio is None else f"{ratio:.0%}"
        return (
            f"finished {row.finished_per_min:.2f}/min of {row.submitted_per_min:.2f} submitted "
            f"({shown} < {keep_up:.0%})"
        )
    p95 = row.time_to_done.p95
    if p95 is None:
        return "no song finished"
    if p95 > p95_target_s:
        return f"p95 time to done {p95:.1f} s > target {p95_target_s:g} s"
    return None


def find_knee(rows: list[StepSummary], *, keep_up: float = 0.9, p95_target_s: float) -> Knee:
    """Where the server stops keeping up (see the module docstring). Steps offering the same
    rate (the windows of a constant-rate run) must all keep up for that rate to count."""
    by_rate: dict[float, list[StepSummary]] = {}
    for row in rows:
        if row.submitted > 0:
            by_rate.setdefault(row.offered_per_min, []).append(row)
    knee: float | None = None
    for rate in sorted(by_rate):
        for row in by_rate[rate]:
            reason = _failure(row, keep_up, p95_target_s)
            if reason is None:
                continue
            if knee is None:
                why = f"not even the lowest offered rate was served: at {rate:.2f}/min {reason}"
            else:
                why = f"{knee:.2f} songs/min offered is served; at {rate:.2f}/min {reason}"
            return Knee(knee, row, why)
        knee = rate
    if knee is None:
        return Knee(None, None, "no songs were submitted")
    return Knee(knee, None, f"every step kept up, up to {knee:.2f} songs/min: the knee lies beyond")
