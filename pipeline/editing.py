"""The sample arithmetic of song edits (extend, repaint), shared by every model that edits.

A model renders the whole edited song; `splice_window` then keeps the source's samples outside
the edit window exactly, so what the user did not ask to change does not change. Inside the
window's edges the new audio is joined to the old within `EDIT_CROSSFADE_S`:

- where the source has audio on both sides of an edge (a repaint's start and end), the old
  audio crossfades into the new one (equal-power);
- where the source ends (an extension's start), the new audio carries an offset that makes the
  waveform continuous at the join and ramps to zero, so the continuation starts without a click
  and without fading in from silence.
"""

from __future__ import annotations

import numpy as np

EDIT_CROSSFADE_S = 0.25


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


def _ramp(length: int) -> np.ndarray:
    """`[1, length]` from just above 0 to just below 1: sample centres of a linear fade."""
    return np.linspace(0.0, 1.0, length, endpoint=False, dtype=np.float32)[None, :] + 0.5 / length


def _equal_power(length: int) -> tuple[np.ndarray, np.ndarray]:
    """(rising, falling) gains `[1, length]` of an equal-power crossfade."""
    ramp = _ramp(length) * np.float32(np.pi / 2)
    return np.sin(ramp), np.cos(ramp)
