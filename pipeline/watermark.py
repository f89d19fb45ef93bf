"""Audio watermarking around a 16 kHz model: resampling, the watermark delta, detection scores.

Pure functions on `[channels, n_samples]` float arrays with an explicit `sample_rate`. The model
sits behind two small protocols (`WatermarkGenerator`, `WatermarkDetector`) that work on 16 kHz
arrays; `pipeline.engines.audioseal` adapts AudioSeal to them.

AudioSeal is trained at 16 kHz, so the song is resampled down, the model computes a watermark
there, and only that watermark (the *delta*) is resampled back up and added to the untouched
original. The song's content above 8 kHz is never band-limited; the watermark itself lives
below 8 kHz, where the model put it.

Channels are watermarked independently (each channel is one batch item): the model shapes its
watermark to the content it hears, so a hard-panned part gets its watermark where it plays, and
a channel that is silent stays silent. A mono mix would put the mid channel's watermark into
both sides. Detection scores each channel and averages them.
"""

from __future__ import annotations

from math import gcd
from typing import Protocol

import numpy as np

from .audio import checked_audio

MODEL_SAMPLE_RATE = 16_000
# The model runs on windows of this length, cross-faded over the overlap: its activations for a
# whole song are several GB, and on a CPU a 10 s window runs faster per second than a 3 min one.
CHUNK_S = 10.0
CHUNK_OVERLAP_S = 0.5


class WatermarkGenerator(Protocol):
    """A watermark model working at `MODEL_SAMPLE_RATE`."""

    @property
    def message_bits(self) -> int:
        """Length of the message the watermark carries."""
        ...

    def watermark_16k(self, audio_16k: np.ndarray, message: np.ndarray) -> np.ndarray:
        """The additive watermark `[channels, n]` for `audio_16k` `[channels, n]` float32.

        `message` is `[message_bits]` of 0/1, embedded in every channel.
        """
        ...


class WatermarkDetector(Protocol):
    """A watermark detector working at `MODEL_SAMPLE_RATE`."""

    def detect_16k(self, audio_16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per channel of `audio_16k` `[channels, n]`: (score `[channels]` in [0, 1], message
        bit probabilities `[channels, message_bits]` in [0, 1])."""
        ...


def resample_audio(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """`audio` `[channels, n]` resampled along time with a polyphase FIR (float32 out).

    The output has `ceil(n * to_rate / from_rate)` samples; the same rates return a copy.
    """
    from scipy.signal import resample_poly

    array = np.asarray(audio, dtype=np.float32)
    if from_rate == to_rate:
        return array.copy()
    common = gcd(int(from_rate), int(to_rate))
    resampled = resample_poly(array, int(to_rate) // common, int(from_rate) // common, axis=-1)
    return np.asarray(resampled, dtype=np.float32)


def watermark_delta(
    audio: np.ndarray,
    sample_rate: int,
    generator: WatermarkGenerator,
    message: np.ndarray | None = None,
) -> np.ndarray:
    """The watermark for `audio` at `sample_rate`: computed at 16 kHz, resampled back.

    Same shape as `audio`, float32. `message` defaults to all zeros (a fixed, replica-independent
    mark; AudioSeal's own default is a random message per model instance).
    """
    audio = checked_audio(audio)
    bits = _message_bits(message, generator.message_bits)
    n_samples = audio.shape[-1]
    audio_16k = resample_audio(audio, sample_rate, MODEL_SAMPLE_RATE)
    delta_16k = _chunked_watermark(audio_16k, generator, bits)
    delta = resample_audio(delta_16k, MODEL_SAMPLE_RATE, sample_rate)
    return _fit_length(delta, n_samples)


def embed_watermark(
    audio: np.ndarray,
    sample_rate: int,
    generator: WatermarkGenerator,
    message: np.ndarray | None = None,
) -> np.ndarray:
    """`audio` plus its watermark (see `watermark_delta`); same shape and dtype as `audio`.

    Not clipped: the watermark is far below full scale, and clipping here would hide a
    mastering problem (a limiter belongs before this step, with headroom for the mark).
    """
    audio = checked_audio(audio)
    delta = watermark_delta(audio, sample_rate, generator, message)
    return (audio + delta).astype(audio.dtype, copy=False)


def detect_watermark(
    audio: np.ndarray, sample_rate: int, detector: WatermarkDetector
) -> tuple[float, np.ndarray]:
    """(score in [0, 1], message bits `[message_bits]` of 0/1) for `audio` at `sample_rate`.

    The score is the mean over channels of the fraction of 16 kHz frames the detector calls
    watermarked; the message thresholds the bit probabilities averaged over channels and
    `CHUNK_S` windows (weighted by their length).
    """
    audio = checked_audio(audio)
    audio_16k = resample_audio(audio, sample_rate, MODEL_SAMPLE_RATE)
    chunk = int(CHUNK_S * MODEL_SAMPLE_RATE)
    # Detection is per frame, so plain back-to-back windows (weighted by length) need no fades.
    starts = range(0, audio_16k.shape[-1], chunk)
    windows = [audio_16k[:, start : start + chunk] for start in starts] or [audio_16k]
    results = [detector.detect_16k(window) for window in windows]
    weights = np.array([max(window.shape[-1], 1) for window in windows], dtype=np.float64)
    scores = np.average([np.mean(scores) for scores, _ in results], weights=weights)
    probabilities = np.average(
        [np.mean(np.atleast_2d(bits), axis=0) for _, bits in results], axis=0, weights=weights
    )
    return float(np.clip(scores, 0.0, 1.0)), (probabilities > 0.5).astype(np.int64)


def is_watermarked(score: float, threshold: float) -> bool:
    """Whether a detection `score` counts as watermarked: at or above `threshold`."""
    return score >= threshold


def _chunked_watermark(
    audio_16k: np.ndarray, generator: WatermarkGenerator, message: np.ndarray
) -> np.ndarray:
    """The generator's watermark for `audio_16k`, computed on `CHUNK_S` windows.

    Neighbouring windows overlap by `CHUNK_OVERLAP_S` and are cross-faded linearly there (the
    two ramps sum to one), so the watermark has no seam where the model's context changes.
    """
    n_samples = audio_16k.shape[-1]
    chunk = int(CHUNK_S * MODEL_SAMPLE_RATE)
    overlap = int(CHUNK_OVERLAP_S * MODEL_SAMPLE_RATE)
    hop = chunk - overlap
    watermark = np.zeros_like(audio_16k, dtype=np.float32)
    if n_samples == 0:
        return watermark
    starts = list(range(0, max(n_samples - overlap, 1), hop))
    fade_in = np.linspace(0.0, 1.0, overlap + 2, dtype=np.float32)[1:-1]
    for index, start in enumerate(starts):
        window = audio_16k[:, start : start + chunk]
        delta = np.asarray(generator.watermark_16k(window, message), dtype=np.float32)
        if delta.shape != window.shape:
            raise ValueError(f"watermark generator returned {delta.shape} for {window.shape}")
        gain = np.ones(window.shape[-1], dtype=np.float32)
        if index > 0:
            gain[:overlap] = fade_in[: window.shape[-1]]
        if index < len(starts) - 1:
            gain[-overlap:] = fade_in[::-1]
        watermark[:, start : start + window.shape[-1]] += delta * gain
    return watermark


def _message_bits(message: np.ndarray | None, length: int) -> np.ndarray:
    if message is None:
        return np.zeros(length, dtype=np.int64)
    bits = np.asarray(message).reshape(-1)
    if bits.shape[0] != length or not np.isin(bits, (0, 1)).all():
        raise ValueError(f"message must be {length} bits of 0/1, got {bits.tolist()}")
    return bits.astype(np.int64)


def _fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    # Down- then up-sampling rounds the length up to a whole number of 16 kHz samples.
    if audio.shape[-1] >= n_samples:
        return audio[..., :n_samples]
    return np.pad(audio, ((0, 0), (0, n_samples - audio.shape[-1])))
