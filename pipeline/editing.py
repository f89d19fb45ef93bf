"""The sample arithmetic of song edits (extend, repaint), shared by every model that edits.

A model renders the whole edited song; `splice_window` then keeps the source's samples outside
the edit window exactly, so what the user did not ask to change does not change. Inside the
window's edges the new audio is joined to the old within `EDIT_CROSSFADE_S`:

- where the source has audio on both sides of an edge (a repaint's start and end), the old
  audio crossfades into the new one (equal-power);
- where the source ends (an extension's start), the new audio carries an offset that makes the
  waveform continuous at the join and ramps to zero, so the continuation starts without a click
  and without fading in from silence.

`splice_edit` first brings the new audio to the source's level (`match_level`): a source is
usually a delivered, mastered song or an upload, while a model renders at its own level, and the
whole edited song is mastered as one afterwards, so a level step at the window would stay.
"""

from __future__ import annotations

import numpy as np

EDIT_CROSSFADE_S = 0.25
# match_level compares at least this much audio, and moves the new audio by at most this much.
LEVEL_MATCH_MIN_S = 0.5
LEVEL_MATCH_MAX_DB = 12.0
# Quieter than this (RMS) is silence: no level to match.
_SILENT_RMS = 1e-5


def window_samples(
    start_s: float, end_s: float, sample_rate: int, n_samples: int
) -> tuple[int, int]:
    """[start, end) of an edit window in samples, clipped to the song."""
    start = min(max(0, round(start_s * sample_rate)), n_samples)
    end = min(max(start, round(end_s * sample_rate)), n_samples)
    return start, end


def fitted_source(source: np.ndarray, n_samples: int) -> np.ndarray:
    """The source `[2, n]` cut or padded with silence to `n_samples` (what an extension
    repaints over)."""
    source = np.asarray(source, dtype=np.float32)
    if source.shape[-1] >= n_samples:
        return np.ascontiguousarray(source[:, :n_samples])
    return np.pad(source, [(0, 0), (0, n_samples - source.shape[-1])])


def splice_window(
    source: np.ndarray,
    rendered: np.ndarray,
    start: int,
    end: int,
    sample_rate: int,
    crossfade_s: float = EDIT_CROSSFADE_S,
) -> np.ndarray:
    """`rendered` `[2, n]` inside [start, end) and `source` (any length) outside it, exactly.

    Samples before `start` and from `end` on are the source's, bit for bit (where the source has
    them; past its end the result is `rendered`'s). The joins are made inside the window (see
    the module docstring), shortened to half the window when it is short."""
    rendered = np.asarray(rendered, dtype=np.float32)
    n = rendered.shape[-1]
    if not 0 <= start <= end <= n:
        raise ValueError(f"edit window [{start}, {end}) is outside the song's {n} samples")
    source = np.asarray(source, dtype=np.float32)
    kept = min(source.shape[-1], n)
    out = rendered.copy()
    out[:, : min(start, kept)] = source[:, : min(start, kept)]
    if end < kept:
        out[:, end:kept] = source[:, end:kept]
    fade = min(round(crossfade_s * sample_rate), (end - start) // 2)
    if fade <= 0:
        return out
    if 0 < start < kept:  # old audio on both sides of the start (as far as the source goes)
        length = min(fade, kept - start)
        new_in, old_out = _equal_power(length)
        span = slice(start, start + length)
        out[:, span] = source[:, span] * old_out + rendered[:, span] * new_in
    elif 0 < start == kept:  # the source ends here: make the join continuous
        offset = source[:, start - 1 : start] - rendered[:, start - 1 : start]
        span = slice(start, start + fade)
        out[:, span] = rendered[:, span] + offset * (1.0 - _ramp(fade))
    if end < kept:  # old audio resumes after the window
        old_in, new_out = _equal_power(fade)
        span = slice(end - fade, end)
        out[:, span] = rendered[:, span] * new_out + source[:, span] * old_in
    return out


def match_level(
    source: np.ndarray, rendered: np.ndarray, start: int, end: int, sample_rate: int
) -> np.ndarray:
    """`rendered` scaled so that, where the source is kept (outside [start, end), as far as the
    source goes), its RMS level is the source's: both renderings of the same stretch of song are
    compared, so the gain is the level difference between the two, not between their contents.
    Unscaled when less than LEVEL_MATCH_MIN_S is kept or either side is silent there; the gain
    is held to ±LEVEL_MATCH_MAX_DB."""
    rendered = np.asarray(rendered, dtype=np.float32)
    source = np.asarray(source, dtype=np.float32)
    kept = min(source.shape[-1], rendered.shape[-1])
    spans = [slice(0, min(start, kept)), slice(min(end, kept), kept)]
    if sum(span.stop - span.start for span in spans) < LEVEL_MATCH_MIN_S * sample_rate:
        return rendered
    source_rms = _rms([source[:, span] for span in spans])
    rendered_rms = _rms([rendered[:, span] for span in spans])
    if source_rms < _SILENT_RMS or rendered_rms < _SILENT_RMS:
        return rendered
    limit = 10.0 ** (LEVEL_MATCH_MAX_DB / 20.0)
    gain = float(np.clip(source_rms / rendered_rms, 1.0 / limit, limit))
    return rendered * np.float32(gain)


def splice_edit(
    source: np.ndarray, rendered: np.ndarray, start: int, end: int, sample_rate: int
) -> np.ndarray:
    """An edit's result: `rendered` at the source's level (`match_level`), spliced into the
    source (`splice_window`)."""
    matched = match_level(source, rendered, start, end, sample_rate)
    return splice_window(source, matched, start, end, sample_rate)


def _rms(parts: list[np.ndarray]) -> float:
    total = sum(float(np.square(part, dtype=np.float64).sum()) for part in parts)
    count = sum(part.size for part in parts)
    return (total / count) ** 0.5 if count else 0.0


def _ramp(length: int) -> np.ndarray:
    """`[1, length]` from just above 0 to just below 1: sample centres of a linear fade."""
    return np.linspace(0.0, 1.0, length, endpoint=False, dtype=np.float32)[None, :] + 0.5 / length


def _equal_power(length: int) -> tuple[np.ndarray, np.ndarray]:
    """(rising, falling) gains `[1, length]` of an equal-power crossfade."""
    ramp = _ramp(length) * np.float32(np.pi / 2)
    return np.sin(ramp), np.cos(ramp)
