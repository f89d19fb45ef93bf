"""render_sketch: plan → parts → synthesised stems → room, pumping, fade, gain → mix."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.lyrics import LyricSection
from pipeline.sketch.arrangement import SongPlan, plan_song, stable_rng
from pipeline.sketch.bassline import write_bass
from pipeline.sketch.comping import write_harmony
from pipeline.sketch.drums import render_drums, write_drums
from pipeline.sketch.melody import write_lead
from pipeline.sketch.mixing import (
    TARGET_PEAK,
    Room,
    balance_gain,
    ending_fade,
    pump_gain,
    remove_dc,
    room_impulse,
)
from pipeline.sketch.voices import LeadVoice, NoteSynth, render_notes
from pipeline.tags import StyleTags

STEM_NAMES = ("drums", "bass", "harmony", "lead")

# Balance of the stems (dB of active RMS, relative) before the mix is scaled to its target
# peak, and their room sends. The drum level of the style lowers the drums further.
_STEM_BALANCE_DB = {"drums": 0.0, "bass": -3.0, "harmony": -5.0, "lead": -2.0}
_ROOM_SEND = {"drums": 0.12, "bass": 0.0, "harmony": 0.3, "lead": 0.28}
_RENDER_STEPS = 6


@dataclass(frozen=True)
class SketchRender:
    """A rendered song. `mix` is the sum of `stems`; all arrays are float32 [2, n_samples]."""

    sample_rate: int
    mix: np.ndarray
    stems: dict[str, np.ndarray]


def render_sketch(
    tags: StyleTags,
    sections: list[LyricSection],
    duration_s: float,
    seed: int,
    *,
    instrumental: bool = False,
    sample_rate: int = 48_000,
    on_progress: Callable[[int, int], None] | None = None,
) -> SketchRender:
    """Arrange and synthesise a song of exactly round(duration_s * sample_rate) samples.

    `sections` may be empty or line-less (an instrumental form is invented). The result is
    deterministic for (inputs, seed); the mix peaks at -3 dBFS and fades out over its last
    bar or two. `on_progress(step, steps)` is called with step = 1..steps as work completes.
    Raises ValueError for a duration outside 1..600 s or a non-positive sample rate.
    """
    if not math.isfinite(duration_s) or not 1.0 <= duration_s <= 600.0:
        raise ValueError(f"duration_s must be within 1..600 s, got {duration_s!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate!r}")

    def progress(step: int) -> None:
        if on_progress is not None:
            on_progress(step, _RENDER_STEPS)

    n_samples = round(duration_s * sample_rate)
    plan = plan_song(tags, sections, duration_s, seed, instrumental=instrumental)
    progress(1)

    stems: dict[str, np.ndarray] = {}
    stems["drums"] = render_drums(plan, write_drums(plan, seed), n_samples, sample_rate, seed)
    progress(2)

    synth = NoteSynth(sample_rate)
    stems["bass"] = np.zeros((2, n_samples), dtype=np.float32)
    render_notes(write_bass(plan, seed), stems["bass"], synth)
    progress(3)

    stems["harmony"] = np.zeros((2, n_samples), dtype=np.float32)
    render_notes(write_harmony(plan, seed), stems["harmony"], synth)
    progress(4)

    stems["lead"] = np.zeros((2, n_samples), dtype=np.float32)
    lead_voice = LeadVoice(sample_rate, stable_rng(seed, "lead-voice"), plan.style.brightness)
    lead_voice.render(write_lead(plan, seed), stems["lead"])
    progress(5)

    stems = _process_stems(plan, stems, sample_rate, seed)
    mix = _sum_stems(stems)
    progress(6)
    return SketchRender(sample_rate=sample_rate, mix=mix, stems=stems)


def _process_stems(
    plan: SongPlan, stems: dict[str, np.ndarray], sample_rate: int, seed: int
) -> dict[str, np.ndarray]:
    n_samples = stems["drums"].shape[1]
    style = plan.style
    if style.sidechain_depth > 0:
        pump = pump_gain(n_samples, sample_rate, plan.beat_s, style.sidechain_depth)
        stems["bass"] *= pump
        stems["harmony"] *= pump
    stems["bass"] = remove_dc(stems["bass"], sample_rate)
    stems["drums"] = remove_dc(stems["drums"], sample_rate)
    room = Room(room_impulse(style.reverb_s, sample_rate, stable_rng(seed, "room")), n_samples)
    space = 1.0 + 0.25 * max(0.0, style.reverb_s - 1.5)  # big-room styles send more
    fade = ending_fade(n_samples, sample_rate, min(2 * plan.bar_s, 0.25 * plan.duration_s, 8.0))
    processed: dict[str, np.ndarray] = {}
    for name in STEM_NAMES:
        target_db = _STEM_BALANCE_DB[name]
        if name == "drums":
            target_db += 20.0 * math.log10(max(style.drum_level, 1e-3))
        elif name == "bass" and style.bass_timbre == "sub":
            target_db -= 3.0  # a sustained sine sub carries far more energy than it sounds
        stem = stems[name] * np.float32(balance_gain(stems[name], sample_rate, target_db))
        if _ROOM_SEND[name] > 0:
            stem += room.wet(stem, _ROOM_SEND[name] * space)
        processed[name] = stem * fade
    mix = _sum_stems(processed)
    peak = max(float(mix.max()), -float(mix.min()))
    scale = np.float32(TARGET_PEAK / peak) if peak > 0 else np.float32(1.0)
    for stem in processed.values():
        stem *= scale
    return processed


def _sum_stems(stems: dict[str, np.ndarray]) -> np.ndarray:
    mix = stems[STEM_NAMES[0]].copy()
    for name in STEM_NAMES[1:]:
        mix += stems[name]
    return mix
