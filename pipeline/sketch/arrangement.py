"""Lyric sections → a bar-level song plan: form fitted to the duration, energy, chords per bar.

All songs are in 4/4. Bar 0 starts at t = 0; the plan covers ceil(duration / bar) bars and the
renderer cuts the last (partial) bar at the requested duration.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.lyrics import SECTION_TAGS, LyricSection
from pipeline.sketch.style import StyleProfile, style_for_tags
from pipeline.sketch.theory import PROGRESSIONS, Chord, Key, parse_key, parse_roman
from pipeline.tags import StyleTags

BEATS_PER_BAR = 4

# Relative drive of each section kind before moods/family scale it.
SECTION_ENERGY = {
    "intro": 0.45, "verse": 0.6, "pre-chorus": 0.72, "chorus": 1.0, "bridge": 0.55, "outro": 0.5,
}  # fmt: skip

# Lengths of sections without lyrics (and the instrumental form invented when there are none).
_INSTRUMENTAL_BARS = {"intro": 4, "verse": 8, "pre-chorus": 4, "chorus": 8, "bridge": 8, "outro": 4}
_INVENTED_FORM = ("verse", "chorus", "verse", "chorus", "bridge", "chorus", "chorus")
_MAX_SECTION_BARS = 16


@dataclass(frozen=True)
class PlannedSection:
    """A section placed on the bar grid. `lines` are the lyric lines that fit (may be empty)."""

    tag: str
    start_bar: int
    n_bars: int
    lines: tuple[str, ...]
    energy: float  # 0..1, already scaled by the style's energy
    chords: tuple[Chord, ...]  # one per bar
    occurrence: int  # 0 for the first section of this tag, 1 for the second, ...

    @property
    def end_bar(self) -> int:
        return self.start_bar + self.n_bars


@dataclass(frozen=True)
class SongPlan:
    """Everything the part writers need: tempo, key, style, and the sections on the bar grid."""

    duration_s: float
    bpm: float
    key: Key
    style: StyleProfile
    sections: tuple[PlannedSection, ...]
    bars_per_line: int  # how many bars one sung line spans
    vocal: str

    @property
    def beat_s(self) -> float:
        return 60.0 / self.bpm

    @property
    def bar_s(self) -> float:
        return BEATS_PER_BAR * self.beat_s

    @property
    def n_bars(self) -> int:
        return self.sections[-1].end_bar if self.sections else 0

    def chord_at_bar(self, bar: int) -> Chord:
        for section in self.sections:
            if section.start_bar <= bar < section.end_bar:
                return section.chords[bar - section.start_bar]
        return self.sections[-1].chords[-1]

    def section_at_bar(self, bar: int) -> PlannedSection:
        for section in self.sections:
            if section.start_bar <= bar < section.end_bar:
                return section
        return self.sections[-1]


def stable_rng(seed: int, *labels: object) -> np.random.Generator:
    """A generator derived from the seed and labels, stable across processes (unlike hash())."""
    words = [zlib.crc32(str(label).encode("utf-8")) for label in labels]
    return np.random.default_rng([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, *words])


def plan_song(
    tags: StyleTags,
    sections: list[LyricSection],
    duration_s: float,
    seed: int,
    *,
    instrumental: bool = False,
) -> SongPlan:
    """Fit the form to `duration_s` and choose the progressions. Deterministic for a seed."""
    style = style_for_tags(tags)
    key = parse_key(tags.key)
    bpm = float(min(220, max(40, tags.bpm)))
    bar_s = BEATS_PER_BAR * 60.0 / bpm
    n_bars = max(1, math.ceil(duration_s / bar_s - 1e-9))
    bars_per_line = 1 if bpm < 90 else 2
    form = _form_from_lyrics(sections, instrumental)
    placed = _fit_form(form, n_bars, bars_per_line, bar_s)
    progressions = _choose_progressions(style, key, seed)
    planned: list[PlannedSection] = []
    occurrences: dict[str, int] = {}
    start = 0
    for tag, n, lines in placed:
        occurrence = occurrences.get(tag, 0)
        occurrences[tag] = occurrence + 1
        energy = SECTION_ENERGY.get(tag, 0.6) * (0.55 + 0.45 * style.energy / 0.6)
        if tag == "chorus" and occurrence > 0:
            energy *= 1.05  # later choruses lift a little
        chords = _section_chords(tag, n, progressions, key, style, seed)
        planned.append(PlannedSection(tag, start, n, lines, min(1.2, energy), chords, occurrence))
        start += n
    return SongPlan(duration_s, bpm, key, style, tuple(planned), bars_per_line, tags.vocal)


def _form_from_lyrics(
    sections: list[LyricSection], instrumental: bool
) -> list[tuple[str, tuple[str, ...]]]:
    form: list[tuple[str, tuple[str, ...]]] = []
    for section in sections:
        tag = section.tag.lower().strip()
        tag = tag if tag in SECTION_TAGS else "verse"
        lines = () if instrumental else tuple(ln.strip() for ln in section.lines if ln.strip())
        form.append((tag, lines))
    if not form:
        form = [(tag, ()) for tag in _INVENTED_FORM]
    if form[0][0] != "intro":
        form.insert(0, ("intro", ()))
    if form[-1][0] != "outro":
        form.append(("outro", ()))
    return form


def _natural_bars(tag: str, lines: tuple[str, ...], bars_per_line: int) -> int:
    if not lines:
        return _INSTRUMENTAL_BARS.get(tag, 8)
    bars = len(lines) * bars_per_line
    return min(_MAX_SECTION_BARS, max(4, 2 * math.ceil(bars / 2)))


def _fit_form(
    form: list[tuple[str, tuple[str, ...]]], n_bars: int, bars_per_line: int, bar_s: float
) -> list[tuple[str, int, tuple[str, ...]]]:
    """Place (tag, lines) on the grid: intro, body sections (truncated or extended), outro."""
    intro, body, outro = form[0], form[1:-1], form[-1]
    if n_bars >= 24:
        intro_bars, outro_bars = (2, 4) if bar_s > 3.5 else (4, 4)
    elif n_bars >= 10:
        intro_bars, outro_bars = 2, 2
    elif n_bars >= 5:
        intro_bars, outro_bars = 1, 1
    else:
        intro_bars, outro_bars = 0, 0
    if intro[1]:  # a sung intro keeps its lines if they fit
        intro_bars = min(_natural_bars("intro", intro[1], bars_per_line), max(intro_bars, 4))
    if not body:
        body = [("chorus", ())]
    available = n_bars - intro_bars - outro_bars
    if available < 2:
        intro_bars, outro_bars, available = 0, 0, n_bars

    first_chorus = next((i for i, (tag, _) in enumerate(body) if tag == "chorus"), None)
    placed_body: list[tuple[str, int, tuple[str, ...]]] = []
    remaining = available
    for index, (tag, lines) in enumerate(body):
        if remaining < 2 and placed_body:
            break
        length = min(_natural_bars(tag, lines, bars_per_line), remaining)
        if first_chorus is not None and index < first_chorus:
            # Short songs must still reach their first chorus: reserve room for it.
            reserve = min(
                _natural_bars("chorus", body[first_chorus][1], bars_per_line),
                max(2, remaining // 2),
            )
            length = min(length, remaining - reserve)
            if length < 2:
                continue
        placed_body.append((tag, length, lines[: max(0, length // bars_per_line)]))
        remaining -= length

    # Fewer lyrics than time: repeat the chorus (sung if it had lines), else instrumental bars.
    chorus_lines = body[first_chorus][1] if first_chorus is not None else ()
    while remaining >= 4:
        length = min(_natural_bars("chorus", chorus_lines, bars_per_line), remaining)
        placed_body.append(("chorus", length, chorus_lines[: length // bars_per_line]))
        remaining -= length
    outro_bars += remaining

    placed: list[tuple[str, int, tuple[str, ...]]] = []
    if intro_bars:
        placed.append(("intro", intro_bars, intro[1][: intro_bars // bars_per_line]))
    placed.extend(placed_body)
    if outro_bars:
        placed.append(("outro", outro_bars, outro[1][: outro_bars // bars_per_line]))
    return placed


def _choose_progressions(style: StyleProfile, key: Key, seed: int) -> dict[str, list[int]]:
    rng = stable_rng(seed, "progressions")
    options = PROGRESSIONS[style.harmonic_language][key.mode]
    chosen: dict[str, list[int]] = {}
    for kind in ("verse", "pre-chorus", "chorus", "bridge"):
        candidates = list(options[kind])
        if kind == "chorus" and len(candidates) > 1:
            candidates = [c for c in candidates if parse_roman(c) != chosen["verse"]]
        chosen[kind] = parse_roman(candidates[int(rng.integers(len(candidates)))])
    return chosen


def _section_chords(
    tag: str,
    n_bars: int,
    progressions: dict[str, list[int]],
    key: Key,
    style: StyleProfile,
    seed: int,
) -> tuple[Chord, ...]:
    if tag in progressions:
        loop = progressions[tag]
        degrees = [loop[i % len(loop)] for i in range(n_bars)]
    elif tag == "intro":
        loop = progressions["verse"]
        degrees = [loop[i % len(loop)] for i in range(n_bars)]
    else:  # outro: ride the chorus loop and cadence onto the tonic in the last bar(s)
        loop = progressions["chorus"]
        degrees = [loop[i % len(loop)] for i in range(n_bars)]
        cadence = [3, 4] if stable_rng(seed, "cadence").random() < 0.5 else [4]
        if n_bars >= 3:
            degrees[-1 - len(cadence) : -1] = cadence[-(n_bars - 1) :]
        degrees[-1] = 0
    blues = style.harmonic_language == "blues" and key.mode == "major"
    return tuple(
        key.chord(d, seventh=style.sevenths, dominant=blues and d in (0, 3, 4)) for d in degrees
    )
