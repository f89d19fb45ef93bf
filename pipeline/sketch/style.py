"""Tags → a sound-design profile: groove, harmonic language, timbres, energy and brightness.

The genre family picks the groove and default timbres; moods nudge energy and brightness;
instrument names hint timbres by substring. Unknown families fall back to pop.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.tags import StyleTags


@dataclass(frozen=True)
class StyleProfile:
    """How a song should sound. Levels are 0..1 unless stated."""

    family: str  # the family the profile was built for ("pop" when the tag's family is unknown)
    groove: str  # key into the pattern tables of patterns.py
    harmonic_language: str  # key into theory.PROGRESSIONS
    sevenths: bool  # voice chords as seventh chords
    harmony_timbre: (
        str  # "keys" | "epiano" | "pluck" | "organ" | "power" | "pad" | "strings" | "brass"
    )
    pad_layer: bool  # add a sustained pad under the comping in energetic sections
    bass_timbre: str  # "finger" | "synth" | "808" | "upright" | "sub"
    lead_instrument: str  # timbre of instrumental melodies: "synth" | "reed" | "flute"
    drum_kit: str  # "acoustic" | "electronic" | "808" | "brush" | "soft"
    drum_level: float  # 0 = no drums
    swing: float  # 0 straight … 1 triplet swing of the offbeat subdivision
    swing_unit_beats: float  # which subdivision swings: 0.5 (8ths) or 0.25 (16ths)
    energy: float  # overall drive: velocities, densities, drum presence
    brightness: float  # spectral tilt of synthesised timbres
    reverb_s: float  # decay time of the room (RT60-ish), seconds
    sidechain_depth: float  # 0 = none; dance music pumps harmony and bass against the kick


# Per family: groove, harmonic language, sevenths (0/1), harmony timbre, pad layer (0/1), bass
# timbre, instrumental lead, drum kit, drum level, swing, base energy, base brightness, room decay
# (s) and sidechain pumping depth.
_FAMILY_TABLE = """
pop          pop        pop       0 keys    1 finger  synth acoustic   0.9  0    0.6  0.6  1.4 0
rock         rock       pop       0 power   0 finger  synth acoustic   1.0  0    0.75 0.6  1.2 0
punk         punk       pop       0 power   0 finger  synth acoustic   1.0  0    0.9  0.7  0.9 0
metal        metal      pop       0 power   0 finger  synth acoustic   1.0  0    0.95 0.55 1.1 0
electronic   four_floor pop       0 pad     1 synth   synth electronic 0.95 0    0.75 0.7  1.8 0.55
dance        four_floor pop       0 pad     1 synth   synth electronic 1.0  0    0.85 0.75 1.6 0.6
experimental four_floor pop       1 pad     1 synth   synth electronic 0.8  0    0.6  0.5  2.2 0.3
hiphop       hiphop     pop       0 epiano  1 808     synth 808        1.0  0.35 0.7  0.5  1.2 0
rnb          rnb        pop       1 epiano  1 808     reed  808        0.85 0.3  0.55 0.5  1.5 0
soul         funk       pop       1 organ   0 finger  reed  acoustic   0.85 0.2  0.6  0.55 1.4 0
funk         funk       pop       1 pluck   1 finger  synth acoustic   0.95 0.15 0.8  0.7  1.0 0
gospel       funk       pop       1 organ   1 finger  reed  acoustic   0.85 0.3  0.7  0.6  2.0 0
jazz         swing      jazz      1 keys    0 upright reed  brush      0.7  1.0  0.5  0.5  1.6 0
blues        shuffle    blues     0 organ   0 finger  reed  acoustic   0.85 1.0  0.6  0.5  1.4 0
country      folk       pop       0 pluck   0 finger  flute soft       0.8  0    0.6  0.65 1.2 0
folk         folk       pop       0 pluck   0 upright flute soft       0.55 0    0.45 0.6  1.4 0
world        folk       pop       0 pluck   0 finger  flute soft       0.7  0    0.55 0.6  1.6 0
latin        latin      pop       0 keys    0 finger  reed  acoustic   0.9  0    0.75 0.7  1.3 0
reggae       reggae     pop       0 organ   0 finger  reed  acoustic   0.85 0.2  0.55 0.5  1.3 0
classical    orchestral cinematic 0 strings 1 sub     flute soft       0.5  0    0.35 0.45 2.4 0
soundtrack   orchestral cinematic 0 strings 1 sub     flute soft       0.8  0    0.5  0.5  2.6 0
ambient      ambient    cinematic 1 pad     1 sub     flute soft       0.45 0    0.3  0.4  3.0 0
"""
# Grooves whose swing (if any) falls on sixteenths rather than eighths.
_SIXTEENTH_SWING_GROOVES = ("hiphop", "rnb", "funk", "reggae")


def _family_defaults() -> dict[str, list[str]]:
    rows = (line.split() for line in _FAMILY_TABLE.strip().splitlines())
    return {row[0]: row[1:] for row in rows}


_FAMILY_DEFAULTS = _family_defaults()

# Substring of a mood → (energy delta, brightness delta).
_MOOD_SHIFTS: dict[str, tuple[float, float]] = {
    "energetic": (0.2, 0.1), "aggressive": (0.25, 0.05), "happy": (0.12, 0.15),
    "upbeat": (0.15, 0.1), "euphoric": (0.2, 0.15), "party": (0.2, 0.1), "uplifting": (0.1, 0.15),
    "angry": (0.2, 0.0), "epic": (0.15, 0.05), "bright": (0.05, 0.2), "groovy": (0.08, 0.05),
    "sad": (-0.15, -0.15), "melancholic": (-0.12, -0.15), "dark": (-0.05, -0.25),
    "calm": (-0.2, -0.1), "chill": (-0.15, -0.05), "relax": (-0.2, -0.1), "dreamy": (-0.1, -0.05),
    "romantic": (-0.08, 0.0), "mellow": (-0.15, -0.1), "peaceful": (-0.2, -0.05),
    "somber": (-0.15, -0.2), "moody": (-0.05, -0.15), "nostalgic": (-0.08, -0.05),
}  # fmt: skip

# Instrument-name substring → harmony timbre it asks for (first match in tag order wins).
_HARMONY_HINTS = (
    ("electric piano", "epiano"), ("rhodes", "epiano"), ("piano", "keys"), ("keys", "keys"),
    ("organ", "organ"), ("string", "strings"), ("violin", "strings"), ("cello", "strings"),
    ("brass", "brass"), ("horn", "brass"), ("pad", "pad"), ("synth", "pad"),
    ("electric guitar", "power"), ("guitar", "pluck"), ("banjo", "pluck"), ("ukulele", "pluck"),
)  # fmt: skip
_LEAD_HINTS = (
    ("sax", "reed"), ("trumpet", "reed"), ("brass", "reed"), ("clarinet", "reed"),
    ("flute", "flute"), ("whistle", "flute"), ("synth", "synth"),
)  # fmt: skip


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def style_for_tags(tags: StyleTags) -> StyleProfile:
    """Build the profile for `tags`: family defaults, then mood and instrument adjustments."""
    family = tags.family if tags.family in _FAMILY_DEFAULTS else "pop"
    (groove, language, sevenths, harmony, pad_layer, bass, lead, kit, *numbers) = _FAMILY_DEFAULTS[
        family
    ]
    drum_level, swing, energy, brightness, reverb_s, sidechain = (float(x) for x in numbers)
    for mood in tags.moods:
        for word, (energy_delta, brightness_delta) in _MOOD_SHIFTS.items():
            if word in mood.lower():
                energy += energy_delta
                brightness += brightness_delta
    instruments = [name.lower() for name in tags.instruments]
    harmony = _first_hint(instruments, _HARMONY_HINTS, harmony)
    lead = _first_hint(instruments, _LEAD_HINTS, lead)
    if any("808" in name for name in instruments):
        bass = "808"
    elif any("synth bass" in name or "bass synth" in name for name in instruments):
        bass = "synth"
    elif any("upright" in name or "double bass" in name for name in instruments):
        bass = "upright"
    return StyleProfile(
        family=family,
        groove=groove,
        harmonic_language=language,
        sevenths=sevenths == "1",
        harmony_timbre=harmony,
        pad_layer=pad_layer == "1",
        bass_timbre=bass,
        lead_instrument=lead,
        drum_kit=kit,
        drum_level=drum_level,
        swing=swing,
        swing_unit_beats=0.25 if groove in _SIXTEENTH_SWING_GROOVES else 0.5,
        energy=_clamp(energy, 0.1, 1.0),
        brightness=_clamp(brightness, 0.1, 1.0),
        reverb_s=reverb_s,
        sidechain_depth=sidechain,
    )


def _first_hint(instruments: list[str], hints: tuple[tuple[str, str], ...], default: str) -> str:
    for name in instruments:
        for needle, timbre in hints:
            if needle in name:
                return timbre
    return default
