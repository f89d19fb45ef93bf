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


def conform_audio(
    audio: np.ndarray, sample_rate: int, target_rate: int, n_samples: int | None = None
) -> np.ndarray:
    """`audio` `[channels, n]` as float32 stereo at `target_rate` Hz: what every song model's
    output and every upload is made into before mastering.

    Mono is duplicated, more than two channels keep the first two; the rate changes by polyphase
    resampling. With `n_samples`, the result is fitted to exactly that length: a longer render is
    cut with a short fade-out (no click at the cut), a shorter one padded with silence.
    """
    from pipeline.stems import to_model_rate  # the project's one polyphase resampler

    array = np.asarray(audio, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] < 1:
        raise ValueError(f"audio must be [channels, n_samples], got {array.shape}")
    stereo = np.repeat(array, 2, axis=0) if array.shape[0] == 1 else array[:2]
    if sample_rate != target_rate:
        stereo = to_model_rate(stereo, sample_rate, target_rate)
    if n_samples is None:
        return np.ascontiguousarray(stereo)
    if stereo.shape[-1] >= n_samples:
        fitted = stereo[:, :n_samples].copy()
        if stereo.shape[-1] > n_samples:
            fade = min(n_samples, round(FIT_FADE_OUT_S * target_rate))
            if fade:
                fitted[:, n_samples - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return fitted
    return np.pad(stereo, [(0, 0), (0, n_samples - stereo.shape[-1])])


FIT_FADE_OUT_S = 0.5
"""The fade `conform_audio` puts on audio cut to a requested length."""


NPY_MAGIC = b"\x93NUMPY"
STORED_RAW_RATE = 48_000
"""The rate of raw `.npy` audio songserve stores outside a render (uploads): 48 kHz."""


def audio_from_file(data: bytes, target_rate: int) -> np.ndarray:
    """Stereo float32 at `target_rate` from a stored file: a raw `.npy` (`raw_render_bytes`, at
    STORED_RAW_RATE) or any audio file FFmpeg decodes (a kept master, a delivered song)."""
    if data[: len(NPY_MAGIC)] == NPY_MAGIC:
        audio, rate = raw_render_from_bytes(data), STORED_RAW_RATE
    else:
        from pipeline.encode import decode_audio

        audio, rate = decode_audio(data)
    return conform_audio(audio, rate, target_rate)
