"""Bus processing: a generated stereo room, dance-style pumping, the ending fade, gain staging.

The room is a convolution with a short synthetic impulse response (early reflections plus a
decorrelated noise tail that darkens as it decays); each stem gets its own send so the stems
still sum exactly to the mix. All of it is vectorised (FFT convolution, array envelopes).
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy import signal

TARGET_PEAK = 10 ** (-3.0 / 20.0)  # -3 dBFS: headroom for the mastering stage downstream


def room_impulse(decay_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A stereo impulse response [2, n] with unit energy per channel, RT60 ≈ `decay_s`."""
    length_s = min(2.5, max(0.6, decay_s * 0.8))
    n = int(length_s * sample_rate)
    t = np.arange(n) / sample_rate
    sos_low = signal.butter(1, 3500, "lowpass", fs=sample_rate, output="sos")
    impulse = np.zeros((2, n))
    for channel in range(2):
        noise = rng.standard_normal(n)
        low = signal.sosfilt(sos_low, noise)
        high = noise - low
        # High frequencies die twice as fast as lows, as in a real room.
        tail = low * np.exp(-6.9 * t / decay_s) + 0.5 * high * np.exp(-13.8 * t / decay_s)
        tail *= np.minimum(1.0, t / 0.02)  # the tail builds up after the early reflections
        for delay_s, gain in zip(
            rng.uniform(0.005, 0.04, 6), rng.uniform(0.3, 0.7, 6), strict=True
        ):
            tail[int(delay_s * sample_rate)] += gain * 8.0 * (1 if rng.random() < 0.5 else -1)
        pre_delay = int(0.012 * sample_rate)
        impulse[channel, pre_delay:] = tail[: n - pre_delay]
        impulse[channel] /= np.sqrt(np.sum(impulse[channel] ** 2))
    return impulse


class Room:
    """Convolution reverb whose impulse spectrum is computed once per render length."""

    def __init__(self, impulse: np.ndarray, n_samples: int) -> None:
        self._n_samples = n_samples
        self._fft_size = scipy.fft.next_fast_len(n_samples + impulse.shape[1] - 1, real=True)
        self._impulse_spectrum = scipy.fft.rfft(impulse.astype(np.float32), self._fft_size, axis=1)

    def wet(self, dry: np.ndarray, send: float) -> np.ndarray:
        """The reverb return [2, n] for a stereo stem fed (as mid) with gain `send`."""
        mid = (0.5 * send) * (dry[0] + dry[1])
        spectrum = scipy.fft.rfft(mid.astype(np.float32), self._fft_size)
        wet = scipy.fft.irfft(
            self._impulse_spectrum * spectrum[np.newaxis, :], self._fft_size, axis=1
        )
        return wet[:, : self._n_samples].astype(np.float32)


def pump_gain(n_samples: int, sample_rate: int, beat_s: float, depth: float) -> np.ndarray:
    """Sidechain-style ducking on every beat: dips by `depth`, recovers over ~40% of a beat.

    The dip has a 4 ms attack, so the gain is continuous across beat boundaries (no clicks).
    """
    t = np.arange(n_samples, dtype=np.float64) / sample_rate
    phase_s = np.mod(t, beat_s)
    duck = np.minimum(1.0, phase_s / 0.004) * np.exp(-phase_s / (0.18 * beat_s))
    return (1.0 - depth * duck).astype(np.float32)


def ending_fade(n_samples: int, sample_rate: int, fade_s: float) -> np.ndarray:
    """Gain curve: a 5 ms fade-in, unity, then a raised-cosine fade reaching 0 at the end."""
    gain = np.ones(n_samples, dtype=np.float32)
    n_in = min(n_samples // 4, int(0.005 * sample_rate))
    if n_in > 0:
        gain[:n_in] = np.linspace(0.0, 1.0, n_in, dtype=np.float32)
    n_out = min(n_samples - n_in, int(fade_s * sample_rate))
    if n_out > 0:
        gain[-n_out:] *= 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n_out, dtype=np.float32))
    return gain


def remove_dc(stem: np.ndarray, sample_rate: int) -> np.ndarray:
    """High-pass at 20 Hz: saturated bass and kicks can leave a slow offset."""
    sos = signal.butter(2, 20.0, "highpass", fs=sample_rate, output="sos")
    return signal.sosfilt(sos, stem, axis=1).astype(np.float32)


def active_rms(stem: np.ndarray, sample_rate: int, window_s: float = 0.05) -> float:
    """RMS over the 50 ms frames within 40 dB of the loudest one (silent stretches ignored)."""
    frame = max(1, int(window_s * sample_rate))
    usable = (stem.shape[1] // frame) * frame
    if usable == 0:
        return float(np.sqrt(np.mean(stem.astype(np.float64) ** 2)))
    power = np.mean(stem[:, :usable].reshape(stem.shape[0], -1, frame) ** 2, axis=(0, 2))
    loudest = float(power.max())
    if loudest <= 0:
        return 0.0
    return float(np.sqrt(np.mean(power[power >= loudest * 1e-4])))


def balance_gain(stem: np.ndarray, sample_rate: int, target_db: float) -> float:
    """Gain that brings the stem's active RMS to `target_db` dBFS (1 for a silent stem)."""
    rms = active_rms(stem, sample_rate)
    return 10 ** (target_db / 20.0) / rms if rms > 1e-9 else 1.0
