"""Stems: the four named parts of a song, which always sum back to its mix.

Every song's stems use Demucs' four source names, in its order (`STEM_NAMES`), whichever model
made the song, so clients get the same set:

- sketch songs have exact stems: the sketch renders each part on its own track and mixes them
  by plain summation, so `sketch_stems` only regroups those tracks — no separation, no error;
- songs of other models are separated by htdemucs (`deployments.stem_separator`), which works at
  44.1 kHz: `to_model_rate` / `from_model_rate` resample around it, and `complete_to_mix` makes its
  estimates sum back to the song exactly.

Pure functions: arrays `[channels, n_samples]` (or `[..., n_samples]`), explicit sample rates.
"""

from __future__ import annotations

from math import gcd
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

if TYPE_CHECKING:
    from pipeline.sketch import SketchRender

STEM_NAMES = ("drums", "bass", "other", "vocals")
"""Stem names in htdemucs' source order."""

RESIDUAL_STEM = "other"
"""The stem that takes whatever a separator left unassigned (see `complete_to_mix`)."""

MODEL_SAMPLE_RATE = 44_100
"""The rate htdemucs was trained at (songs are 48 kHz: 48 000 → 44 100 is 147/160)."""

SKETCH_STEM_SOURCES: dict[str, tuple[str, ...]] = {
    "drums": ("drums",),
    "bass": ("bass",),
    "other": ("harmony",),
    "vocals": ("lead",),
}
"""Which sketch tracks (`pipeline.sketch.STEM_NAMES`) make each stem of a sung song.

With `instrumental=True` the lead (then a synth, reed or flute melody) joins "other" and
"vocals" is silent. In a sung song the lead track also carries the short instrumental melodies
of sections without lyrics: the sketch renders them on the same track as the voice.
"""


def sketch_stems(render: SketchRender, *, instrumental: bool = False) -> dict[str, np.ndarray]:
    """The exact stems of a sketch render: float32 `[2, n]` arrays keyed by `STEM_NAMES`.

    Each stem is a sum of the render's own per-track arrays (`render.stems`) after all their
    processing (room sends, pumping, fade, gain), so the stems sum to `render.mix` up to float32
    rounding (bit-exactly for a sung song). The arrays are new: changing them leaves the render
    alone. Raises ValueError when the render lacks a track the mapping needs.
    """
    sources = dict(SKETCH_STEM_SOURCES)
    if instrumental:
        sources["other"] = (*sources["other"], *sources["vocals"])
        sources["vocals"] = ()
    missing = sorted({t for tracks in sources.values() for t in tracks} - set(render.stems))
    if missing:
        raise ValueError(f"sketch render has no track(s) {missing}; it has {sorted(render.stems)}")
    stems: dict[str, np.ndarray] = {}
    for name in STEM_NAMES:
        stem = np.zeros(render.mix.shape, dtype=np.float32)
        for track in sources[name]:
            stem += render.stems[track]
        stems[name] = stem
    return stems


def _ratio(from_rate: int, to_rate: int) -> tuple[int, int]:
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} and {to_rate}")
    common = gcd(from_rate, to_rate)
    return to_rate // common, from_rate // common


def resampled_length(n_samples: int, from_rate: int, to_rate: int) -> int:
    """The length `resample_poly` gives `n_samples` resampled from `from_rate` to `to_rate`."""
    up, down = _ratio(from_rate, to_rate)
    return -(-n_samples * up // down)


def to_model_rate(
    audio: np.ndarray, sample_rate: int, model_rate: int = MODEL_SAMPLE_RATE
) -> np.ndarray:
    """`audio` `[..., n]` resampled from `sample_rate` to `model_rate` Hz, as float32.

    Polyphase resampling (`scipy.signal.resample_poly`, 147/160 for 48 kHz → 44.1 kHz) along the
    last axis; the output has `resampled_length(n, sample_rate, model_rate)` samples. A copy
    when the rates are equal.
    """
    up, down = _ratio(sample_rate, model_rate)
    if up == down:
        return np.array(audio, dtype=np.float32)
    return signal.resample_poly(audio, up, down, axis=-1).astype(np.float32)


def from_model_rate(
    audio: np.ndarray, sample_rate: int, n_samples: int, model_rate: int = MODEL_SAMPLE_RATE
) -> np.ndarray:
    """`audio` `[..., m]` at `model_rate` Hz back at `sample_rate`, exactly `n_samples` long.

    The inverse of `to_model_rate`: resampling rounds lengths up, so the result is cut (or, for
    a short input, zero-padded) to the original song's `n_samples`. float32.
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    up, down = _ratio(model_rate, sample_rate)
    out = audio if up == down else signal.resample_poly(audio, up, down, axis=-1)
    out = np.asarray(out, dtype=np.float32)[..., :n_samples]
    if out.shape[-1] < n_samples:
        pad = [(0, 0)] * (out.ndim - 1) + [(0, n_samples - out.shape[-1])]
        out = np.pad(out, pad)
    return np.ascontiguousarray(out)


def complete_to_mix(
    stems: dict[str, np.ndarray], mix: np.ndarray, residual_stem: str = RESIDUAL_STEM
) -> dict[str, np.ndarray]:
    """Stems that sum to `mix`: `residual_stem` becomes `mix` minus all the other stems.

    A separator's estimates never sum exactly to its input (model error, the resampling round
    trip, the chunk cross-fades). The difference goes to "other" because "other" already means
    "everything that is not drums, bass or vocals": unclaimed sound belongs there, while adding
    it to a named stem would leak the rest of the mix into the stems people use in isolation
    (an a cappella, a drumless practice track) — the same choice as Demucs' own `--two-stems`,
    whose "no_vocals" is the mix minus the vocals. The other stems are returned unchanged
    (float32); the residual is computed in float64, so the float32 stems sum to `mix` within
    float32 rounding. Raises ValueError for a missing residual stem or mismatched shapes.
    """
    if residual_stem not in stems:
        raise ValueError(f"no {residual_stem!r} stem to take the residual; got {sorted(stems)}")
    for name, stem in stems.items():
        if stem.shape != mix.shape:
            raise ValueError(f"stem {name!r} has shape {stem.shape}, the mix {mix.shape}")
    claimed = np.zeros(mix.shape, dtype=np.float64)
    for name, stem in stems.items():
        if name != residual_stem:
            claimed += stem
    completed = {name: np.asarray(stem, dtype=np.float32) for name, stem in stems.items()}
    completed[residual_stem] = (np.asarray(mix, dtype=np.float64) - claimed).astype(np.float32)
    return completed


FINGERPRINT_BLOCK_S = 1.0
"""Length of the blocks `render_fingerprint` measures."""


def render_fingerprint(audio: np.ndarray, sample_rate: int) -> list[float]:
    """RMS of each `FINGERPRINT_BLOCK_S` block of `audio` `[channels, n]` (all channels), as a
    plain list: a compact record of a render that a later render of the same song can be checked
    against with `same_render`. (Not a hash: float rounding that differs between machines must
    not make two renders of one song look different.)"""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    block = max(1, round(FINGERPRINT_BLOCK_S * sample_rate))
    samples = np.asarray(audio, dtype=np.float64)
    n_blocks = -(-samples.shape[-1] // block)
    padded = np.zeros((*samples.shape[:-1], n_blocks * block))
    padded[..., : samples.shape[-1]] = samples
    blocks = padded.reshape(-1, n_blocks, block)
    return [float(x) for x in np.sqrt(np.mean(np.square(blocks), axis=(0, 2)))]


def same_render(fingerprint: list[float], other: list[float], tolerance: float = 1e-4) -> bool:
    """Whether two `render_fingerprint`s are of the same audio: same length, and every block
    within `tolerance` of the louder block of the pair (relative), or of full scale for blocks
    quieter than that."""
    if len(fingerprint) != len(other):
        return False
    return all(
        abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-3)
        for a, b in zip(fingerprint, other, strict=True)
    )
