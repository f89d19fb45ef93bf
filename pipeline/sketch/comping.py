"""The harmony part: voice-led chord voicings played in the groove's comping rhythm.

Each chord is voiced as the inversion (within a register window) that moves the voices least
from the previous chord, so progressions sound connected rather than parallel blocks. The seed
picks the first inversion and breaks near-ties, so voicings differ between seeds. Choruses
move the window up a few semitones, double the top voice and add a pad layer where the style
has one.
"""

from __future__ import annotations

import numpy as np

from pipeline.sketch.arrangement import PlannedSection, SongPlan, stable_rng
from pipeline.sketch.drums import groove_name
from pipeline.sketch.patterns import COMPING, SECTION_LEVEL, steps
from pipeline.sketch.score import NoteEvent, step_time_s
from pipeline.sketch.theory import Chord

_STRUM_GAP_S = 0.012  # between strings of a strum
_SUSTAINED_TIMBRES = ("pad", "strings")


def voice_chord(
    pitch_classes: tuple[int, ...],
    previous: list[int] | None,
    low: int,
    high: int,
    rng: np.random.Generator,
) -> list[int]:
    """Close voicing of `pitch_classes` inside [low, high] nearest to `previous` (MIDI)."""
    candidates: list[list[int]] = []
    count = len(pitch_classes)
    for inversion in range(count):
        order = pitch_classes[inversion:] + pitch_classes[:inversion]
        bottom = low + (order[0] - low) % 12
        while bottom <= high:
            notes = [bottom]
            for pc in order[1:]:
                notes.append(notes[-1] + ((pc - notes[-1]) % 12 or 12))
            if notes[-1] <= high:
                candidates.append(notes)
            bottom += 12
    if not candidates:
        bottom = low + (pitch_classes[0] - low) % 12
        notes = [bottom]
        for pc in pitch_classes[1:]:
            notes.append(notes[-1] + ((pc - notes[-1]) % 12 or 12))
        return notes
    if previous is None or len(previous) != count:
        return candidates[int(rng.integers(len(candidates)))]
    reference = np.array(sorted(previous))
    costs = [
        float(np.abs(np.array(c) - reference).sum()) + 1.5 * float(rng.random()) for c in candidates
    ]
    return candidates[int(np.argmin(costs))]


def _low_root(chord: Chord, lowest: int) -> int:
    return lowest + (chord.root_pc - lowest) % 12


def write_harmony(plan: SongPlan, seed: int) -> list[NoteEvent]:
    groove = groove_name(plan)
    table = COMPING[groove]
    choice_rng = stable_rng(seed, "comp-patterns")
    patterns = {level: table[level][int(choice_rng.integers(len(table[level])))] for level in table}
    rng = stable_rng(seed, "voicings")
    style = plan.style
    events: list[NoteEvent] = []
    previous: list[int] | None = None
    previous_pad: list[int] | None = None
    last_bar = plan.n_bars - 1
    for section in plan.sections:
        level = SECTION_LEVEL.get(section.tag, "mid")
        chorus = section.tag == "chorus"
        lift = 3 if chorus else 0
        brightness = min(1.0, style.brightness + (0.18 if chorus else 0.0))
        dynamics = 0.4 + 0.6 * min(1.0, section.energy)
        wants_pad = style.pad_layer and (
            level == "high" or groove in ("four_floor", "ambient", "orchestral")
        )
        for bar in range(section.start_bar, section.end_bar):
            chord = plan.chord_at_bar(bar)
            pattern = "x" + "-" * 15 if bar == last_bar else patterns[level]
            voicing = voice_chord(chord.pitch_classes, previous, 52 + lift, 72 + lift, rng)
            previous = voicing
            events.extend(
                _comp_bar(plan, section, bar, chord, voicing, pattern, brightness, dynamics)
            )
            if wants_pad or (bar == last_bar and style.pad_layer):
                pad_voicing = voice_chord(chord.pitch_classes, previous_pad, 55, 76, rng)
                previous_pad = pad_voicing
                pad_timbre = "strings" if style.harmony_timbre == "strings" else "pad"
                events.extend(
                    _chord_events(
                        pad_voicing,
                        step_time_s(plan, bar, 0),
                        plan.bar_s * 1.02,
                        0.42 * dynamics,
                        pad_timbre,
                        brightness,
                    )
                )
    return events


def _comp_bar(
    plan: SongPlan,
    section: PlannedSection,
    bar: int,
    chord: Chord,
    voicing: list[int],
    pattern: str,
    brightness: float,
    dynamics: float,
) -> list[NoteEvent]:
    style = plan.style
    timbre = style.harmony_timbre
    chorus = section.tag == "chorus"
    events: list[NoteEvent] = []
    onsets = steps(pattern)
    short_hits = all(length <= 2 for _, _, length in onsets)
    if short_hits and timbre in _SUSTAINED_TIMBRES:
        timbre = "stab"
    if any(symbol == "a" for _, symbol, _ in onsets) and timbre in _SUSTAINED_TIMBRES:
        timbre = "keys"
    if timbre == "power":
        root = _low_root(chord, 40)
        notes = [root, root + 7, root + 12]
    elif any(symbol in "du" for _, symbol, _ in onsets):
        notes = [_low_root(chord, 40), *voicing]
    else:
        notes = [*voicing, voicing[0] + 12] if chorus and len(voicing) < 4 else list(voicing)
    arpeggio_notes = [_low_root(chord, 36), *voicing]
    arpeggio_order = [0, 1, 2, 3, 2, 1] if len(arpeggio_notes) >= 4 else [0, 1, 2, 1]
    arpeggio_index = 0
    for step, symbol, length in onsets:
        start_s = step_time_s(plan, bar, step)
        end_s = (
            step_time_s(plan, bar, step + length)
            if step + length < 16
            else ((bar + 1) * plan.bar_s)
        )
        span_s = end_s - start_s
        accent = 1.0 if step % 4 == 0 else 0.82
        velocity = 0.5 * dynamics * accent
        if symbol == "a":
            midi = arpeggio_notes[
                arpeggio_order[arpeggio_index % len(arpeggio_order)] % len(arpeggio_notes)
            ]
            arpeggio_index += 1
            events.append(
                NoteEvent(
                    start_s,
                    span_s * 2.0,
                    float(midi),
                    velocity * 1.4,  # single notes against block chords
                    timbre,
                    pan=-0.3 + 0.6 * (midi % 12) / 11,
                    brightness=brightness,
                )
            )
            continue
        # Short hits ring a little past their step (palm mutes, stabs) rather than clicking off.
        gate_s = span_s * (0.95 if length > 2 else 1.3)
        if symbol in "du":
            strum = notes if symbol == "d" else notes[::-1][:4]
            for index, midi in enumerate(strum):
                pan = -0.5 + index / max(1, len(strum) - 1)
                events.append(
                    NoteEvent(
                        start_s + index * _STRUM_GAP_S,
                        gate_s,
                        float(midi),
                        velocity * (1.0 if symbol == "d" else 0.7),
                        timbre,
                        pan=pan,
                        brightness=brightness,
                    )
                )
            continue
        events.extend(_chord_events(notes, start_s, gate_s, velocity, timbre, brightness))
    return events


def _chord_events(
    notes: list[int], start_s: float, gate_s: float, velocity: float, timbre: str, brightness: float
) -> list[NoteEvent]:
    """A block chord with its voices spread across the stereo field (low left, high right)."""
    spread = 0.6
    count = len(notes)
    return [
        NoteEvent(
            start_s,
            gate_s,
            float(midi),
            velocity / np.sqrt(count) * 1.6,
            timbre,
            pan=spread * (2 * i / max(1, count - 1) - 1),
            brightness=brightness,
        )
        for i, midi in enumerate(notes)
    ]
