"""The score the part writers produce and the synthesisers consume: timed notes and drum hits.

Times are seconds from the start of the song; pitches are (fractional) MIDI note numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.sketch.arrangement import BEATS_PER_BAR, SongPlan

STEPS_PER_BEAT = 4  # patterns are written in sixteenth notes


@dataclass(frozen=True)
class NoteEvent:
    """One pitched note. `pan` is -1 (left) … 1 (right); `velocity` is a 0..1 gain."""

    start_s: float
    duration_s: float
    midi: float
    velocity: float
    timbre: str
    pan: float = 0.0
    brightness: float = 0.5  # 0..1 spectral tilt of the timbre (choruses open up)
    syllable: str | None = None  # the sung syllable for vocal lead notes
    glide_from_midi: float | None = None  # slide into the note from this pitch (legato lead)


@dataclass(frozen=True)
class DrumHit:
    start_s: float
    instrument: str
    velocity: float


def swung_beat(beat: float, swing: float, unit_beats: float) -> float:
    """Delay off-beat subdivisions: with swing 1 the second of each pair lands on the triplet.

    `unit_beats` is the swung subdivision (0.5 for eighths, 0.25 for sixteenths).
    """
    if swing <= 0.0:
        return beat
    pair_beats = 2.0 * unit_beats
    position = beat % pair_beats
    if abs(position - unit_beats) < 1e-6:
        return beat + swing * (pair_beats * 2.0 / 3.0 - unit_beats)
    return beat


def step_time_s(plan: SongPlan, bar: int, step: float) -> float:
    """Start time of sixteenth `step` (0..15, fractional allowed) of `bar`, with the swing."""
    beat = swung_beat(step / STEPS_PER_BEAT, plan.style.swing, plan.style.swing_unit_beats)
    return (bar * BEATS_PER_BAR + beat) * plan.beat_s


def beat_time_s(plan: SongPlan, bar: int, beat: float) -> float:
    return step_time_s(plan, bar, beat * STEPS_PER_BEAT)
