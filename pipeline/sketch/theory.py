"""Music theory for the sketch arranger: keys, diatonic chords, progressions, pitch ↔ frequency.

Pitches are MIDI note numbers (69 = A4 = 440 Hz); pitch classes are 0..11 with 0 = C. Scale
degrees are 0-based (0 = tonic); a "diatonic index" counts scale steps across octaves, so a melody
can move by steps and still land on the key's notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_PITCH_CLASS_BY_NAME = {
    "C": 0, "B#": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "FB": 4, "E#": 5, "F": 5,
    "F#": 6, "GB": 6, "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10, "BB": 10, "B": 11, "CB": 11,
}  # fmt: skip

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10)

_ROMAN_DEGREE = {"I": 0, "II": 1, "III": 2, "IV": 3, "V": 4, "VI": 5, "VII": 6}


@dataclass(frozen=True)
class Chord:
    """A chord as a root pitch class and the semitone offsets of its tones above the root."""

    root_pc: int
    intervals: tuple[int, ...]
    degree: int  # 0-based scale degree of the root within the song's key

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        return tuple((self.root_pc + interval) % 12 for interval in self.intervals)

    @property
    def third(self) -> int:
        return self.intervals[1]

    @property
    def fifth(self) -> int:
        return self.intervals[2]


@dataclass(frozen=True)
class Key:
    """A tonic pitch class and a mode ("major" or natural "minor")."""

    tonic_pc: int
    mode: str

    @property
    def scale(self) -> tuple[int, ...]:
        return MINOR_SCALE if self.mode == "minor" else MAJOR_SCALE

    def degree_pc(self, degree: int) -> int:
        """Pitch class of a (0-based, any octave) scale degree."""
        return (self.tonic_pc + self.scale[degree % 7]) % 12

    def chord(self, degree: int, *, seventh: bool = False, dominant: bool = False) -> Chord:
        """The diatonic triad (or seventh chord) stacked in thirds on `degree`.

        `dominant` forces a major triad with a flat seventh (blues I7/IV7/V7), the one
        deliberately non-diatonic colour the arranger uses.
        """
        degree %= 7
        root_pc = self.degree_pc(degree)
        if dominant:
            return Chord(root_pc, (0, 4, 7, 10), degree)
        stack = (0, 2, 4, 6) if seventh else (0, 2, 4)
        intervals = tuple((self.degree_pc(degree + step) - root_pc) % 12 for step in stack)
        return Chord(root_pc, intervals, degree)

    def midi_of_index(self, diatonic_index: int, tonic_midi: int) -> int:
        """MIDI pitch of a diatonic index counted from the tonic at `tonic_midi`."""
        octave, degree = divmod(diatonic_index, 7)
        return tonic_midi + 12 * octave + self.scale[degree]


def parse_key(text: str) -> Key:
    """Parse "<tonic> <major|minor>" ("F# minor", "Bb major", "a min"); fall back to C major."""
    parts = text.strip().split()
    if not parts:
        return Key(0, "major")
    tonic_name = parts[0].upper()
    mode = "major"
    if tonic_name.endswith("M") and len(tonic_name) > 1 and tonic_name[:-1] in _PITCH_CLASS_BY_NAME:
        tonic_name, mode = tonic_name[:-1], "minor"  # "Am" style
    if len(parts) > 1 and parts[1].lower().startswith("min"):
        mode = "minor"
    return Key(_PITCH_CLASS_BY_NAME.get(tonic_name, 0), mode)


def parse_roman(progression: str) -> list[int]:
    """ "I V vi IV" → [0, 4, 5, 3]. Case only documents the quality; the key decides it."""
    return [_ROMAN_DEGREE[token.upper()] for token in progression.split()]


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def hz_to_midi(frequency_hz: float) -> float:
    return 69.0 + 12.0 * math.log2(frequency_hz / 440.0)


def nearest_midi_with_pc(pitch_class: int, target_midi: float) -> int:
    """The MIDI note of `pitch_class` closest to `target_midi` (ties go down)."""
    base = math.floor(target_midi) - 6
    offset = (pitch_class - base) % 12
    return base + offset


# Progressions by harmonic language, mode and section kind. Each line is one loop of chords,
# one chord per bar; sections cycle their loop. Verse and chorus sets overlap on purpose — the
# arranger picks a chorus loop different from the verse loop.
PROGRESSIONS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "pop": {
        "major": {
            "verse": ("I V vi IV", "I vi IV V", "vi IV I V", "I IV vi V", "I iii IV V"),
            "pre-chorus": ("IV V IV V", "ii iii IV V", "vi V IV V", "ii IV V V"),
            "chorus": ("IV V iii vi", "I V vi IV", "vi IV I V", "IV I V vi", "I IV vi V"),
            "bridge": ("vi iii IV V", "ii V iii vi", "IV V vi vi", "ii IV vi V"),
        },
        "minor": {
            "verse": ("i VI III VII", "i VII VI VII", "i iv VII III", "i VI iv VII", "i iv v i"),
            "pre-chorus": ("iv VI VII VII", "VI VII iv VII", "iv v VI VII"),
            "chorus": (
                "VI VII i i",
                "VI III VII i",
                "i VI III VII",
                "VI VII III i",
                "iv VI III VII",
            ),
            "bridge": ("III VII iv VI", "VI iv VII III", "iv i VII VI", "iv v VI VII"),
        },
    },
    "jazz": {
        "major": {
            "verse": ("ii V I vi", "I vi ii V", "iii vi ii V"),
            "pre-chorus": ("ii V ii V", "IV iii ii V"),
            "chorus": ("I vi ii V", "ii V I I", "IV iii ii V", "I IV iii vi"),
            "bridge": ("IV IV iii vi", "vi ii V I", "iii vi ii V"),
        },
        "minor": {
            "verse": ("i iv ii v", "ii v i i", "i VI ii v"),
            "pre-chorus": ("iv VII III VI", "ii v ii v"),
            "chorus": ("iv VII III VI", "i iv VII III", "VI ii v i"),
            "bridge": ("III VI ii v", "iv VII III III"),
        },
    },
    "blues": {
        "major": {
            "verse": ("I I I I IV IV I I V IV I V",),
            "pre-chorus": ("IV IV I I",),
            "chorus": ("I IV I I IV IV I I V IV I I",),
            "bridge": ("IV IV I I V V IV IV",),
        },
        "minor": {
            "verse": ("i i i i iv iv i i VI v i v",),
            "pre-chorus": ("iv iv i i",),
            "chorus": ("i iv i i iv iv i i VI v i i",),
            "bridge": ("iv iv i i VI VI v v",),
        },
    },
    "cinematic": {
        "major": {
            "verse": ("I iii vi IV", "I V vi iii", "I IV vi V", "vi IV I V"),
            "pre-chorus": ("ii IV V V", "IV vi V V"),
            "chorus": ("IV I V vi", "vi IV I V", "I V vi IV", "IV V vi I"),
            "bridge": ("vi iii IV I", "ii vi IV V"),
        },
        "minor": {
            "verse": ("i VI III VII", "i III VII iv", "i iv VI v"),
            "pre-chorus": ("iv VI VII VII", "VI iv VII VII"),
            "chorus": ("VI III VII i", "VI VII i i", "iv VI III VII"),
            "bridge": ("III VII iv VI", "VI iv i v"),
        },
    },
}
