"""When songs are submitted: a seeded Poisson process at a rate that steps through a schedule.

A constant rate is a schedule of one step (or of several equal steps, one per reporting window);
a ramp is a list of rates, each held for `step_s` seconds. Within a step, gaps between arrivals
are exponential with mean 1 / rate; the process is memoryless, so restarting it at each step
boundary is exactly a Poisson process with a piecewise-constant rate. Arrival times depend only
on the seed, never on how the server answers (open loop).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One step of the schedule: `rate_per_s` songs/s offered from `start_s` to `end_s`."""

    index: int
    rate_per_s: float
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Arrival:
    """A song to submit `at_s` seconds after the run starts, in step `step`."""

    at_s: float
    step: int


def plan_steps(
    rates_per_s: list[float], step_s: float, duration_s: float | None = None
) -> list[Step]:
    """The schedule: each rate held `step_s` seconds, in order, cut at `duration_s` when given
    (a step cut short keeps its shorter length; steps past it are dropped).

    Raises ValueError naming the option for a negative rate, an empty list or a step ≤ 0."""
    if not rates_per_s:
        raise ValueError("--rate/--ramp: give at least one rate (songs/s)")
    if any(not math.isfinite(r) or r < 0 for r in rates_per_s):
        raise ValueError(f"--rate/--ramp: rates are songs/s ≥ 0, got {rates_per_s}")
    if not step_s > 0:
        raise ValueError(f"--step-s must be > 0, got {step_s}")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"--duration-s must be > 0, got {duration_s}")
    steps: list[Step] = []
    for index, rate in enumerate(rates_per_s):
        start = index * step_s
        end = start + step_s
        if duration_s is not None:
            if start >= duration_s:
                break
            end = min(end, duration_s)
        steps.append(Step(index, float(rate), start, end))
    return steps


def poisson_arrivals(steps: list[Step], seed: int, max_songs: int | None = None) -> list[Arrival]:
    """Arrival times of a Poisson process following `steps`, seeded; at most `max_songs`."""
    rng = random.Random(seed)
    arrivals: list[Arrival] = []
    for step in steps:
        if step.rate_per_s <= 0:
            continue
        at = step.start_s
        while True:
            at += rng.expovariate(step.rate_per_s)
            if at >= step.end_s:
                break
            if max_songs is not None and len(arrivals) >= max_songs:
                return arrivals
            arrivals.append(Arrival(at, step.index))
    return arrivals
