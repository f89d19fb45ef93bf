"""Waveform overview peaks: (min, max) per fixed bucket of samples, for drawing in clients.

Pure: no Ray, no network, no global state. Audio is float32 `[channels, n_samples]` (1 or 2
channels) with an explicit `sample_rate` in Hz.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.audio import checked_audio

# 480 input samples per peak: 100 peaks per second at 48 kHz, enough for a full-width waveform
# of a 3-minute song (18,000 peaks) without shipping audio-sized JSON.
DEFAULT_SAMPLES_PER_PEAK = 480
_DOCUMENT_DECIMALS = 4


def compute_peaks(
    audio: np.ndarray, sample_rate: int, samples_per_peak: int = DEFAULT_SAMPLES_PER_PEAK
) -> np.ndarray:
    """float32 `[n_peaks, 2]`: (min, max) over all channels of each bucket of input samples.

    Bucket k covers samples [k * samples_per_peak, (k + 1) * samples_per_peak); the last one
    may be partial, so n_peaks = ceil(n_samples / samples_per_peak) (0 for empty audio).
    `sample_rate` does not change the buckets (they are in samples); it is taken so every
    audio function has the same shape. Raises ValueError for samples_per_peak < 1.
    """
    del sample_rate
    samples = checked_audio(audio)
    if samples_per_peak < 1:
        raise ValueError(f"samples_per_peak must be >= 1, got {samples_per_peak}")
    n_channels, n_samples = samples.shape
    n_peaks = -(-n_samples // samples_per_peak)
    peaks = np.empty((n_peaks, 2), dtype=np.float32)
    n_full = n_samples // samples_per_peak
    if n_full:
        # [channels, buckets, samples_per_peak] view: one reduction per column, no Python loop.
        buckets = samples[:, : n_full * samples_per_peak].reshape(n_channels, n_full, -1)
        peaks[:n_full, 0] = buckets.min(axis=(0, 2))
        peaks[:n_full, 1] = buckets.max(axis=(0, 2))
    if n_peaks > n_full:
        tail = samples[:, n_full * samples_per_peak :]
        peaks[n_full] = (tail.min(), tail.max())
    return peaks


def peaks_document(
    audio: np.ndarray, sample_rate: int, samples_per_peak: int = DEFAULT_SAMPLES_PER_PEAK
) -> dict[str, Any]:
    """JSON-ready peaks: {"sample_rate", "samples_per_peak", "peaks": [[min, max], ...]}.

    Values are rounded to 4 decimals (1/10,000 of full scale: far finer than any screen) and
    are plain Python ints and floats, so `json.dumps` takes the dict as is.
    """
    peaks = compute_peaks(audio, sample_rate, samples_per_peak)
    rounded = np.round(peaks.astype(np.float64), _DOCUMENT_DECIMALS)
    return {
        "sample_rate": int(sample_rate),
        "samples_per_peak": int(samples_per_peak),
        "peaks": rounded.tolist(),
    }
