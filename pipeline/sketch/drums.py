"""The drum part: groove patterns per section, fills into choruses, crashes, and rendering.

Hits are placed on the swung sixteenth grid with a little human timing and velocity wobble
(none for electronic kits). Rendering adds pre-panned one-shots with slicing only.
"""

from __future__ import annotations

import numpy as np

from pipeline.sketch.arrangement import SongPlan, stable_rng
from pipeline.sketch.drum_kit import DRUM_LEVEL, DRUM_PAN, DrumKit
from pipeline.sketch.patterns import DRUM_VELOCITY, DRUMS, SECTION_LEVEL
from pipeline.sketch.score import DrumHit, step_time_s
from pipeline.sketch.theory import midi_to_hz
from pipeline.sketch.voices import mix_in, pan_gains

# Fills replace the end of a bar: instrument per sixteenth step (None keeps the groove).
_FILLS: tuple[dict[int, str], ...] = (
    {12: "snare", 13: "snare", 14: "snare", 15: "snare"},
    {8: "tom_hi", 10: "tom_hi", 12: "tom_mid", 13: "tom_mid", 14: "tom_lo", 15: "tom_lo"},
    {12: "snare", 13: "snare", 14: "tom_hi", 15: "tom_lo"},
    {8: "snare", 10: "snare", 11: "snare", 12: "tom_mid", 14: "tom_lo", 15: "kick"},
)
_ROLL_GROOVES = ("four_floor",)  # dance builds with a snare roll instead of tom fills
_NO_FILL_GROOVES = ("ambient", "orchestral")


def groove_name(plan: SongPlan) -> str:
    """Hip-hop above ~115 bpm switches to a half-time (trap-like) feel."""
    groove = plan.style.groove
    return "halftime" if groove == "hiphop" and plan.bpm >= 115 else groove


def write_drums(plan: SongPlan, seed: int) -> list[DrumHit]:
    """All drum hits of the song in time order (not sorted; rendering does not care)."""
    groove = groove_name(plan)
    table = DRUMS[groove]
    choice_rng = stable_rng(seed, "drum-patterns")
    patterns = {level: table[level][int(choice_rng.integers(len(table[level])))] for level in table}
    rng = stable_rng(seed, "drum-hits")
    humanise = plan.style.drum_kit not in ("electronic", "808")
    hits: list[DrumHit] = []
    sections = plan.sections
    last_bar = plan.n_bars - 1
    for index, section in enumerate(sections):
        dynamics = 0.45 + 0.55 * min(1.0, section.energy)
        level = SECTION_LEVEL.get(section.tag, "mid")
        if level == "low" and section.tag == "bridge" and plan.style.energy > 0.8:
            level = "mid"
        pattern = patterns[level]
        next_tag = sections[index + 1].tag if index + 1 < len(sections) else None
        big_section = section.energy >= 0.7
        for bar in range(section.start_bar, section.end_bar):
            bar_in_section = bar - section.start_bar
            if bar == last_bar and plan.n_bars > 2:
                # The ending: one kick and a crash on the downbeat, ringing into the fade.
                if groove not in _NO_FILL_GROOVES:
                    hits.append(DrumHit(step_time_s(plan, bar, 0), "crash", 0.9))
                    hits.append(DrumHit(step_time_s(plan, bar, 0), "kick", 1.0))
                continue
            fill: dict[int, str] = {}
            is_last_bar = bar == section.end_bar - 1
            if is_last_bar and groove not in _NO_FILL_GROOVES and next_tag is not None:
                wants_fill = next_tag == "chorus" or (section.n_bars >= 8 and rng.random() < 0.6)
                if wants_fill:
                    if groove in _ROLL_GROOVES:
                        fill = {step: "snare" for step in range(8, 16)}
                    else:
                        fill = _FILLS[int(rng.integers(len(_FILLS)))]
            if bar_in_section == 0 and big_section and groove not in _NO_FILL_GROOVES:
                hits.append(DrumHit(step_time_s(plan, bar, 0), "crash", 0.85))
            for instrument, steps in pattern.items():
                for step, symbol in enumerate(steps):
                    if symbol == "." or (fill and step >= min(fill) and instrument != "kick"):
                        continue
                    velocity = DRUM_VELOCITY[symbol] * dynamics
                    hits.append(_hit(plan, bar, step, instrument, velocity, rng, humanise))
            first_fill_step = min(fill) if fill else 16
            for step, instrument in fill.items():
                # Fills crescendo towards the downbeat that follows.
                velocity = 0.55 + 0.45 * (step - first_fill_step + 1) / (16 - first_fill_step)
                velocity *= dynamics
                hits.append(_hit(plan, bar, step, instrument, velocity, rng, humanise))
    return hits


def _hit(
    plan: SongPlan,
    bar: int,
    step: int,
    instrument: str,
    velocity: float,
    rng: np.random.Generator,
    humanise: bool,
) -> DrumHit:
    start_s = step_time_s(plan, bar, step)
    if humanise:
        start_s += float(rng.normal(0.0, 0.003))
        velocity *= float(rng.uniform(0.88, 1.05))
    return DrumHit(max(0.0, start_s), instrument, velocity)


def render_drums(
    plan: SongPlan, hits: list[DrumHit], n_samples: int, sample_rate: int, seed: int
) -> np.ndarray:
    """The drum stem as float32 [2, n_samples]."""
    tonic_midi = 36 + (plan.key.tonic_pc - 0) % 12  # timpani sit in the C2..B2 octave
    kit = DrumKit(
        plan.style.drum_kit, sample_rate, stable_rng(seed, "drum-kit"), midi_to_hz(tonic_midi)
    )
    out = np.zeros((2, n_samples), dtype=np.float32)
    level = plan.style.drum_level
    for hit in hits:
        sample = kit.sample(hit.instrument)
        left, right = pan_gains(DRUM_PAN[hit.instrument])
        gain = hit.velocity * DRUM_LEVEL[hit.instrument] * level
        mix_in(
            out,
            sample[np.newaxis, :],
            round(hit.start_s * sample_rate),
            (gain * left, gain * right),
        )
    return out
