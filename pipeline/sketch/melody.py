"""The lead line: one note per lyric syllable, or an instrumental melody where nothing is sung.

A phrase is one lyric line spread over `plan.bars_per_line` bars, ending early enough to
breathe. Rhythm: the coarsest grid (quarters, eighths, sixteenths) that fits the syllables, with
a long final note and seeded lengthenings. Pitch: a contour (arch, fall, rise, wave) around the
section's register, snapped to chord tones on strong beats and moving by scale steps between
them; lines end on a chord tone, the last line of a section on the tonic when the chord allows.
Phrases are seeded by section kind and line position, so every chorus sings the same hook and
later verses reuse the first verse's tune.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.lyrics import split_syllables
from pipeline.sketch.arrangement import BEATS_PER_BAR, PlannedSection, SongPlan, stable_rng
from pipeline.sketch.score import NoteEvent, beat_time_s
from pipeline.sketch.theory import Key, nearest_midi_with_pc

# Centre of the verse melody by voice (MIDI); choruses sing higher.
VOCAL_CENTRE_MIDI = {"female": 67, "male": 55, "choir": 62, "duet": 67, "instrumental": 67}
INSTRUMENT_CENTRE_MIDI = {"lead_synth": 71, "lead_reed": 65, "lead_flute": 74}
_SECTION_LIFT_SEMITONES = {"chorus": 4, "bridge": 2, "pre-chorus": 2}
_CONTOURS = ("arch", "fall", "rise", "wave")


@dataclass(frozen=True)
class PhraseNote:
    onset_beats: float  # from the phrase start
    duration_beats: float
    diatonic_index: int  # scale steps from the register's tonic


def lead_timbre(plan: SongPlan) -> str:
    return "lead_" + plan.style.lead_instrument


def write_lead(plan: SongPlan, seed: int) -> list[NoteEvent]:
    """The lead melody of every section: sung where there are lines, played elsewhere."""
    events: list[NoteEvent] = []
    instrument = lead_timbre(plan)
    hook_contours = {
        tag: [_CONTOURS[int(stable_rng(seed, "contour", tag, i).integers(4))] for i in range(4)]
        for tag in ("intro", "verse", "pre-chorus", "chorus", "bridge", "outro")
    }
    for section in plan.sections:
        if section.lines:
            events.extend(_sung_section(plan, section, seed, hook_contours[section.tag]))
        elif section.tag not in ("intro", "outro"):
            events.extend(
                _instrumental_section(plan, section, seed, instrument, hook_contours[section.tag])
            )
    return events


def _register(key: Key, centre_midi: int) -> tuple[int, int]:
    """(tonic MIDI at or below the centre, diatonic index of the centre above that tonic)."""
    tonic_midi = nearest_midi_with_pc(key.tonic_pc, centre_midi - 6)
    steps_up = round((centre_midi - tonic_midi) * 7 / 12)
    return tonic_midi, steps_up


def _voice_for_line(plan: SongPlan, line_index: int) -> str:
    if plan.vocal == "male":
        return "male"
    if plan.vocal == "duet":
        return "female" if line_index % 2 == 0 else "male"
    return "female"


def _sung_section(
    plan: SongPlan, section: PlannedSection, seed: int, contours: list[str]
) -> list[NoteEvent]:
    events: list[NoteEvent] = []
    phrase_beats = plan.bars_per_line * BEATS_PER_BAR
    lift = _SECTION_LIFT_SEMITONES.get(section.tag, 0)
    previous_midi: float | None = None
    for line_index, line in enumerate(section.lines):
        syllables = split_syllables(line) or [line]
        voice = _voice_for_line(plan, line_index)
        centre = VOCAL_CENTRE_MIDI.get(voice, 67) + lift
        tonic_midi, centre_index = _register(plan.key, centre)
        phrase_key = line_index % 2 if section.tag == "chorus" else line_index % 4
        rng = stable_rng(seed, "phrase", section.tag, phrase_key, len(syllables))
        start_bar = section.start_bar + line_index * plan.bars_per_line
        last_line = line_index == len(section.lines) - 1
        notes = compose_phrase(
            plan,
            start_bar,
            phrase_beats,
            len(syllables),
            centre_index,
            span=5 if section.tag == "chorus" else 4,
            contour=contours[phrase_key % len(contours)],
            end_on_tonic=last_line,
            rng=rng,
        )
        for note, syllable in zip(notes, syllables, strict=False):
            midi = float(plan.key.midi_of_index(note.diatonic_index, tonic_midi))
            start_s = beat_time_s(plan, start_bar, note.onset_beats)
            end_s = beat_time_s(plan, start_bar, note.onset_beats + note.duration_beats)
            glide = previous_midi if previous_midi is not None and note.onset_beats > 0 else None
            events.append(
                NoteEvent(
                    start_s,
                    (end_s - start_s) * 0.94,
                    midi,
                    velocity=0.75 + 0.25 * min(1.0, section.energy),
                    timbre=voice,
                    syllable=syllable,
                    glide_from_midi=glide,
                )
            )
            previous_midi = midi
        previous_midi = None
    return events


def _instrumental_section(
    plan: SongPlan, section: PlannedSection, seed: int, instrument: str, contours: list[str]
) -> list[NoteEvent]:
    events: list[NoteEvent] = []
    phrase_bars = 1 if plan.bpm < 80 else 2
    phrase_beats = phrase_bars * BEATS_PER_BAR
    lift = _SECTION_LIFT_SEMITONES.get(section.tag, 0)
    tonic_midi, centre_index = _register(plan.key, INSTRUMENT_CENTRE_MIDI[instrument] + lift)
    n_phrases = section.n_bars // phrase_bars
    for phrase_index in range(n_phrases):
        if section.tag != "chorus" and phrase_index % 4 == 3:
            continue  # verses leave every fourth phrase open
        phrase_key = phrase_index % 2 if section.tag == "chorus" else phrase_index % 4
        rng = stable_rng(seed, "instrumental", section.tag, phrase_key)
        density = 2 if section.tag == "chorus" else 0
        n_notes = int(rng.integers(4, 7)) + density + (phrase_bars - 1) * 2
        start_bar = section.start_bar + phrase_index * phrase_bars
        notes = compose_phrase(
            plan,
            start_bar,
            phrase_beats,
            n_notes,
            centre_index,
            span=5 if section.tag == "chorus" else 4,
            contour=contours[phrase_key % len(contours)],
            end_on_tonic=phrase_index == n_phrases - 1,
            rng=rng,
        )
        previous_midi: float | None = None
        for note in notes:
            midi = float(plan.key.midi_of_index(note.diatonic_index, tonic_midi))
            start_s = beat_time_s(plan, start_bar, note.onset_beats)
            end_s = beat_time_s(plan, start_bar, note.onset_beats + note.duration_beats)
            events.append(
                NoteEvent(
                    start_s,
                    (end_s - start_s) * 0.9,
                    midi,
                    velocity=0.6 + 0.25 * min(1.0, section.energy),
                    timbre=instrument,
                    glide_from_midi=previous_midi,
                )
            )
            previous_midi = midi
    return events


def _contour_value(contour: str, x: float) -> float:
    """Contour height 0..1 at position x (0..1) of the phrase."""
    if contour == "arch":
        return math.sin(math.pi * min(1.0, x * 1.15))
    if contour == "fall":
        return 1.0 - 0.8 * x
    if contour == "rise":
        return 0.2 + 0.8 * math.sin(0.5 * math.pi * x)
    return 0.5 + 0.5 * math.sin(2.0 * math.pi * x)


def compose_phrase(
    plan: SongPlan,
    start_bar: int,
    phrase_beats: int,
    n_notes: int,
    centre_index: int,
    *,
    span: int,
    contour: str,
    end_on_tonic: bool,
    rng: np.random.Generator,
) -> list[PhraseNote]:
    """Rhythm and pitches for `n_notes` notes in a phrase of `phrase_beats` beats.

    Returns at most `n_notes` notes (fewer only when even sixteenths cannot fit them all).
    """
    if n_notes <= 0:
        return []
    rest_beats = 1.0 if phrase_beats >= 8 else 0.5
    available_beats = phrase_beats - rest_beats
    for unit in (1.0, 0.5, 0.25):
        slots = round(available_beats / unit)
        if n_notes + 1 <= slots:
            break
    n_notes = min(n_notes, max(1, slots - 1))
    durations = np.ones(n_notes, dtype=np.int64)
    if slots > n_notes:
        durations[-1] += 1
    spare = slots - int(durations.sum())
    used = round(spare * rng.uniform(0.4, 0.9))
    pickup = 1 if spare - used >= 1 and rng.random() < 0.35 else 0
    if used > 0:
        weights = 1.0 + rng.random(n_notes)
        weights[-1] += 2.0
        durations += rng.multinomial(used, weights / weights.sum())
    onsets = pickup + np.cumsum(durations) - durations

    notes: list[PhraseNote] = []
    previous_index = centre_index
    for j in range(n_notes):
        onset_beats = float(onsets[j] * unit)
        x = j / max(1, n_notes - 1)
        target = centre_index - span / 2 + span * _contour_value(contour, x)
        bar = start_bar + int(onset_beats // BEATS_PER_BAR)
        chord = plan.chord_at_bar(min(bar, plan.n_bars - 1))
        chord_residues = {(chord.degree + step) % 7 for step in (0, 2, 4)}
        strong = abs(onset_beats - round(onset_beats)) < 1e-6 and round(onset_beats) % 2 == 0
        last = j == n_notes - 1
        if last and end_on_tonic and 0 in chord_residues:
            allowed = {0}
        elif strong or last or j == 0:
            allowed = chord_residues
        else:
            allowed = set(range(7))
        index = _nearest_allowed(target, previous_index, allowed, first=j == 0)
        if not (strong or last) and rng.random() < 0.25:
            index += int(rng.choice((-1, 1)))
        notes.append(PhraseNote(onset_beats, float(durations[j] * unit), index))
        previous_index = index
    return notes


def _nearest_allowed(target: float, previous: int, allowed: set[int], *, first: bool) -> int:
    """The index with an allowed scale residue closest to the contour, favouring small steps."""
    best, best_cost = previous, math.inf
    for candidate in range(int(target) - 5, int(target) + 6):
        if candidate % 7 not in allowed:
            continue
        leap = abs(candidate - previous)
        cost = abs(candidate - target)
        if not first:
            # Prefer steps; discourage big leaps and (mildly) repeating the same note.
            cost += 0.4 * leap + (2.0 if leap > 4 else 0.0) + (0.5 if leap == 0 else 0.0)
        if cost < best_cost:
            best, best_cost = candidate, cost
    return best
