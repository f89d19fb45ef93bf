"""The bass part: the chord root on each downbeat, then the groove's rhythm and note choices.

Roots sit between E1 and D#2 (41–78 Hz), where a bass guitar or an 808 lives; fifths go below
the root when it is already high, so the line stays in that register.
"""

from __future__ import annotations

import numpy as np

from pipeline.sketch.arrangement import SongPlan, stable_rng
from pipeline.sketch.drums import groove_name
from pipeline.sketch.patterns import BASS, SECTION_LEVEL, steps
from pipeline.sketch.score import NoteEvent, step_time_s
from pipeline.sketch.theory import Chord

BASS_LOWEST_MIDI = 28  # E1


def bass_root_midi(chord: Chord) -> int:
    """The chord root placed in E1..D#2."""
    return BASS_LOWEST_MIDI + (chord.root_pc - BASS_LOWEST_MIDI % 12) % 12


def write_bass(plan: SongPlan, seed: int) -> list[NoteEvent]:
    groove = groove_name(plan)
    table = BASS[groove]
    choice_rng = stable_rng(seed, "bass-patterns")
    patterns = {level: table[level][int(choice_rng.integers(len(table[level])))] for level in table}
    rng = stable_rng(seed, "bass-notes")
    chromatic = plan.style.harmonic_language in ("jazz", "blues")
    timbre = plan.style.bass_timbre
    step_s = plan.beat_s / 4
    events: list[NoteEvent] = []
    last_bar = plan.n_bars - 1
    for section in plan.sections:
        pattern = patterns[SECTION_LEVEL.get(section.tag, "mid")]
        for bar in range(section.start_bar, section.end_bar):
            chord = plan.chord_at_bar(bar)
            next_chord = plan.chord_at_bar(min(bar + 1, last_bar))
            root = bass_root_midi(chord)
            bar_pattern = "R" + "-" * 15 if bar == last_bar else pattern
            previous = root
            for step, symbol, length in steps(bar_pattern):
                midi = _note_for(symbol, chord, root, next_chord, previous, chromatic, plan, rng)
                previous = midi
                legato = 0.92 if length > 1 else 0.7
                accent = 1.0 if step == 0 else (0.85 if step % 4 == 0 else 0.72)
                start_s = step_time_s(plan, bar, step)
                end_s = (
                    step_time_s(plan, bar, step + length)
                    if step + length < 16
                    else ((bar + 1) * plan.bar_s)
                )
                events.append(
                    NoteEvent(
                        start_s=start_s,
                        duration_s=max(step_s * 0.5, (end_s - start_s) * legato),
                        midi=float(midi),
                        velocity=accent * float(rng.uniform(0.92, 1.0)),
                        timbre=timbre,
                    )
                )
    return events


def _note_for(
    symbol: str,
    chord: Chord,
    root: int,
    next_chord: Chord,
    previous: int,
    chromatic: bool,
    plan: SongPlan,
    rng: np.random.Generator,
) -> int:
    fifth = root + chord.fifth if root + chord.fifth <= 43 else root + chord.fifth - 12
    if symbol == "R":
        return root
    if symbol == "F":
        return fifth
    if symbol == "O":
        return root + 12
    if symbol == "T":
        return root + chord.third
    if symbol == "S":
        return root + 9
    if symbol == "B":
        return root + 10
    if symbol == "W":
        options = [root + chord.third, fifth, root + 12, root + chord.intervals[-1]]
        options = [note for note in options if note != previous] or [root]
        return options[int(rng.integers(len(options)))]
    if symbol == "A":
        target = bass_root_midi(next_chord)
        if target - previous > 6:
            target -= 12
        elif previous - target > 6:
            target += 12
        if chromatic:
            return target - 1 if previous < target else target + 1
        below = target - 1
        while not _in_key(below, plan):
            below -= 1
        return below
    return root


def _in_key(midi: int, plan: SongPlan) -> bool:
    return (midi - plan.key.tonic_pc) % 12 in plan.key.scale
