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
