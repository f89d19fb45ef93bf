"""The audio array convention every `pipeline/` function shares, checked in one place.

Audio is a float array `[channels, n_samples]` with 1 (mono) or 2 (stereo) channels, nominally in
[-1, 1], always passed with an explicit `sample_rate` in Hz.
"""

from __future__ import annotations

import numpy as np


def checked_audio(audio: np.ndarray, *, allow_non_finite: bool = False) -> np.ndarray:
    """`audio` as an array, after checking the convention; raises ValueError naming the problem.

    NaN or infinite samples are refused unless `allow_non_finite` (for callers that sanitise
    them themselves): downstream they would become invalid JSON or arbitrary integers.
    """
    array = np.asarray(audio)
    if array.ndim != 2 or array.shape[0] not in (1, 2):
        raise ValueError(
            f"audio must be [channels, n_samples] with 1 or 2 channels, got {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"audio must be floating point, got {array.dtype}")
    if not allow_non_finite and not np.isfinite(array).all():
        raise ValueError("audio contains NaN or infinite samples")
    return array


def raw_render_bytes(audio: np.ndarray) -> bytes:
    """A render as stored between decoding and mastering: float32 `.npy`, lossless and
    self-describing (shape and dtype travel with it), so mastering can be redone from it."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(checked_audio(audio), dtype=np.float32))
    return buffer.getvalue()


def raw_render_from_bytes(data: bytes) -> np.ndarray:
    """The audio `raw_render_bytes` stored; raises ValueError for anything else."""
    import io

    audio = np.load(io.BytesIO(data), allow_pickle=False)
    return checked_audio(audio)
