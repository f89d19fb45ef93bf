"""How busy a decoder pool is and how long new work waits there: pure arithmetic, shared by the
router (which pool renders a variation) and the API (when a queued song should start).

Units. A pool's speed is `seconds_per_audio_second`: seconds of one replica's time a second of
audio costs, with a batch's time shared among the songs rendered together. So a replica renders
`1 / seconds_per_audio_second` seconds of audio per second, batching gains included, and a pool
of R replicas drains `R / seconds_per_audio_second`. Speed is measured per render (`SpeedMeter`),
starting from the pool's `expected_render_s_per_audio_s`.

Dividing the work by the pool's render *slots* (replicas × max_ongoing_requests) instead would
count the batching gain twice: slots only decide whether a new render starts at once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pipeline.song_contracts import candidate_models

Pool = TypeVar("Pool")

# The weight the newest render gets in a pool's speed once the first few have been averaged in:
# about the last ten renders count.
SPEED_WEIGHT = 0.2


def serving_pools(
    placeable: Sequence[Pool],
    *,
    model: str,
    task: str,
    language: str,
    auto_order: Sequence[str],
    model_of: Callable[[Pool], str],
    tasks_of: Callable[[Pool], Collection[str]],
    with_lora: bool = False,
    reference: bool = False,
) -> list[Pool]:
    """The pools of `placeable` a song would render on, as SongRouter.candidates picks them:
    those that serve `task`, of the first of `candidate_models` (`model`, or for `auto` the
    models preferring `language` then `auto_order`; only those taking a LoRA or a timbre
    reference when the song brings one) that has any. [] when none does. What the queue estimate
    and backlog autoscaling count a song's work against."""
    served = {model_of(pool) for pool in placeable}
    models = candidate_models(
        model,
        language=language,
        auto_order=list(auto_order),
        served=served,
        with_lora=with_lora,
        reference=reference,
    )
    for name in models:
        pools = [p for p in placeable if model_of(p) == name and task in tasks_of(p)]
        if pools:
            return pools
    return []


@dataclass(frozen=True)
class PoolLoad:
    """One pool as the pool choice sees it."""

    replicas: int  # RUNNING replicas (≥ 1: a pool still starting counts as one)
    capacity: int  # renders it runs at once: replicas × max_ongoing_requests
    renders: int  # in flight there, across the cluster
    audio_s: float  # seconds of audio those renders make
    seconds_per_audio_second: float

    @property
    def drain_s(self) -> float:
        """Seconds until the pool has rendered all the work it has in flight."""
        return self.audio_s * self.seconds_per_audio_second / max(self.replicas, 1)

    @property
    def expected_wait_s(self) -> float:
        """Seconds a new render waits before it starts: none while a slot is free; else the
        share of the work in flight that has to finish before a slot frees (fluid estimate:
        the renders beyond capacity, plus one)."""
        if self.renders < self.capacity:
            return 0.0
        return self.drain_s * (self.renders - self.capacity + 1) / self.renders


def order_by_wait(
    pools: Sequence[str], load: Mapping[str, PoolLoad], rotation_start: int
) -> list[str]:
    """`pools` from the shortest expected wait to the longest; among equal waits (every pool
    with a free slot, say) the one that drains its work soonest first, so a pool twice as fast
    takes about twice the songs. Exact ties keep the rotated order
    `pools[rotation_start:] + pools[:rotation_start]`, so equal idle pools alternate."""
    start = rotation_start % len(pools) if pools else 0
    rotated = [*pools[start:], *pools[:start]]
    # sorted() is stable: ties keep the rotation.
    return sorted(rotated, key=lambda pool: (load[pool].expected_wait_s, load[pool].drain_s))


def drain_rate(loads: Sequence[PoolLoad]) -> float:
    """Seconds of audio per second that `loads` render together (0 for none)."""
    return sum(max(p.replicas, 1) / p.seconds_per_audio_second for p in loads)


def expected_start_s(audio_s_ahead: float, loads: Sequence[PoolLoad]) -> float | None:
    """Seconds until work queued behind `audio_s_ahead` seconds of audio starts, if the pools
    `loads` render it all; None when there is no pool to render it."""
    rate = drain_rate(loads)
    return None if rate <= 0 else audio_s_ahead / rate


def seconds_per_audio_second(render_s: float, audio_s: float, batch_size: int = 1) -> float | None:
    """Replica seconds per second of audio of one render: `render_s` wall seconds for `audio_s`
    seconds of audio, made in one model call with `batch_size - 1` other songs (which share the
    time). None for a timing that says nothing (a clock that did not move, no audio)."""
    if render_s <= 0 or audio_s <= 0:
        return None
    return render_s / max(batch_size, 1) / audio_s


class SpeedMeter:
    """A pool's measured `seconds_per_audio_second`: a moving average over its renders that
    starts from the configured guess, which counts as one render until others replace it."""

    def __init__(self, expected: float) -> None:
        self.value = expected
        self.renders = 0

    def add(self, render_s: float, audio_s: float, batch_size: int = 1) -> None:
        """One render (see `seconds_per_audio_second`); nonsense is ignored."""
        self.add_sample(seconds_per_audio_second(render_s, audio_s, batch_size))

    def add_sample(self, sample: float | None) -> None:
        """One render's measured seconds per audio second (None: ignored)."""
        if sample is None:
            return
        self.renders += 1
        weight = max(1 / (self.renders + 1), SPEED_WEIGHT)
        self.value += weight * (sample - self.value)
