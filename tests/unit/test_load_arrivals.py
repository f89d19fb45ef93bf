"""`songserve load` arrivals: a seeded Poisson process following a step schedule."""

from __future__ import annotations

import itertools
import statistics

import pytest

from serve.load import plan_steps, poisson_arrivals


def test_poisson_mean_rate_and_spread_for_a_fixed_seed() -> None:
    rate = 0.5  # songs/s
    steps = plan_steps([rate], step_s=4000.0)
    arrivals = poisson_arrivals(steps, seed=7)
    # 2000 expected; a Poisson count's sd is sqrt(2000) ≈ 45: 5 % is > 2 sd.
    assert abs(len(arrivals) / 4000.0 - rate) < 0.05 * rate
    gaps = [b.at_s - a.at_s for a, b in itertools.pairwise(arrivals)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.05)
    # Exponential gaps: the standard deviation equals the mean (coefficient of variation 1), not
    # the near-zero spread of a fixed-interval generator.
    assert statistics.stdev(gaps) / mean == pytest.approx(1.0, abs=0.08)
    assert all(gap > 0 for gap in gaps)


def test_same_seed_same_arrivals_other_seed_other_arrivals() -> None:
    steps = plan_steps([0.2, 0.4], step_s=60)
    first = poisson_arrivals(steps, seed=3)
    assert poisson_arrivals(steps, seed=3) == first
    assert poisson_arrivals(steps, seed=4) != first


def test_ramp_schedule_steps_and_their_arrivals() -> None:
    steps = plan_steps([0.1, 0.0, 1.0], step_s=100)
    assert [(s.index, s.rate_per_s, s.start_s, s.end_s) for s in steps] == [
        (0, 0.1, 0, 100),
        (1, 0.0, 100, 200),
        (2, 1.0, 200, 300),
    ]
    arrivals = poisson_arrivals(steps, seed=11)
    assert [a.at_s for a in arrivals] == sorted(a.at_s for a in arrivals)
    for arrival in arrivals:
        step = steps[arrival.step]
        assert step.start_s <= arrival.at_s < step.end_s
    counts = [sum(a.step == s.index for a in arrivals) for s in steps]
    assert counts[1] == 0  # a rate of 0 offers nothing
    assert 3 <= counts[0] <= 20 and 70 <= counts[2] <= 130  # ~10 and ~100 expected


def test_duration_cuts_the_schedule_and_max_songs_caps_it() -> None:
    steps = plan_steps([1.0, 2.0, 3.0], step_s=10, duration_s=15)
    assert [(s.start_s, s.end_s) for s in steps] == [(0, 10), (10, 15)]
    arrivals = poisson_arrivals(steps, seed=1)
    assert max(a.at_s for a in arrivals) < 15
    capped = poisson_arrivals(steps, seed=1, max_songs=5)
    assert capped == arrivals[:5]


@pytest.mark.parametrize(
    ("rates", "step_s", "duration_s", "option"),
    [
        ([], 10, None, "--rate/--ramp"),
        ([-1.0], 10, None, "--rate/--ramp"),
        ([1.0], 0, None, "--step-s"),
        ([1.0], 10, 0, "--duration-s"),
    ],
)
def test_bad_schedules_name_the_option(
    rates: list[float], step_s: float, duration_s: float | None, option: str
) -> None:
    with pytest.raises(ValueError, match=option):
        plan_steps(rates, step_s, duration_s)
