"""Band-limited wavetable oscillators, envelopes and spectral recipes (pure numpy).

A timbre is a list of harmonic amplitudes rendered once into a one-cycle table (inverse FFT) and
read back by phase, so every note costs a few vector operations and never aliases: harmonics
above the Nyquist limit are simply left out of its table.
"""

from __future__ import annotations

import numpy as np

TABLE_SIZE = 1 << 14  # nearest-sample lookup at this size keeps phase noise near -74 dB
_TABLE_MASK = TABLE_SIZE - 1
MAX_HARMONIC_HZ = 18_000.0


def harmonic_table(amplitudes: np.ndarray) -> np.ndarray:
    """One cycle (float32, peak 1) with harmonic k+1 at `amplitudes[k]`, all in sine phase."""
    count = min(len(amplitudes), TABLE_SIZE // 2 - 1)
    spectrum = np.zeros(TABLE_SIZE // 2 + 1, dtype=np.complex128)
    spectrum[1 : count + 1] = -0.5j * TABLE_SIZE * np.asarray(amplitudes[:count])
    table = np.fft.irfft(spectrum, TABLE_SIZE)
    peak = float(np.max(np.abs(table)))
    return (table / peak if peak > 0 else table).astype(np.float32)


def harmonic_numbers(f0_hz: float, limit: int, sample_rate: int) -> np.ndarray:
    """1..K where K keeps every harmonic below both the Nyquist margin and MAX_HARMONIC_HZ."""
    ceiling_hz = min(MAX_HARMONIC_HZ, 0.45 * sample_rate)
    count = max(1, min(limit, int(ceiling_hz // max(f0_hz, 1.0))))
    return np.arange(1, count + 1, dtype=np.float64)


def lowpass_weights(frequencies_hz: np.ndarray, cutoff_hz: float, order: int = 2) -> np.ndarray:
    """Butterworth-shaped magnitude at each frequency: the tilt a filter would give."""
    return 1.0 / np.sqrt(1.0 + (frequencies_hz / cutoff_hz) ** (2 * order))


def read_table(
    table: np.ndarray,
    frequency_hz: float | np.ndarray,
    n_samples: int,
    sample_rate: int,
    phase_cycles: float = 0.0,
) -> np.ndarray:
    """Play `table` at a fixed frequency or a per-sample frequency curve (for vibrato/glides)."""
    if np.ndim(frequency_hz) == 0:
        increment = float(frequency_hz) * TABLE_SIZE / sample_rate
        positions = np.arange(n_samples, dtype=np.float64) * increment
        positions += phase_cycles * TABLE_SIZE
    else:
        curve = np.asarray(frequency_hz, dtype=np.float64)[:n_samples]
        positions = np.cumsum(curve) * (TABLE_SIZE / sample_rate)
        positions += phase_cycles * TABLE_SIZE
    indices = positions.astype(np.int64) & _TABLE_MASK
    return table[indices]


def envelope(
    n_samples: int,
    gate_samples: int,
    sample_rate: int,
    *,
    attack_s: float,
    decay_s: float,
    sustain: float,
) -> np.ndarray:
    """Attack ramp, exponential decay towards `sustain`, raised-cosine release after the gate.

    The release runs from `gate_samples` to `n_samples` and ends at exactly zero, so notes never
    click when they stop; the attack starts at zero so they never click when they start.
    """
    t_s = np.arange(n_samples, dtype=np.float32) / np.float32(sample_rate)
    attack = np.minimum(np.float32(1.0), t_s / np.float32(max(attack_s, 1e-3)))
    if np.isfinite(decay_s) and sustain < 1.0:
        body = sustain + (1.0 - sustain) * np.exp(-t_s / np.float32(decay_s))
        shape = attack * body.astype(np.float32)
    else:
        shape = attack
    release_samples = n_samples - gate_samples
    if release_samples > 0:
        progress = np.linspace(0.0, 1.0, release_samples, dtype=np.float32)
        shape[gate_samples:] *= 0.5 + 0.5 * np.cos(np.pi * progress)
    return shape


def fade_edges(signal: np.ndarray, sample_rate: int, fade_s: float = 0.003) -> np.ndarray:
    """Short raised-cosine fade in/out on the last axis (for one-shots cut to length)."""
    n_fade = min(signal.shape[-1] // 2, int(fade_s * sample_rate))
    if n_fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n_fade, dtype=np.float32))
        signal[..., :n_fade] *= ramp
        signal[..., -n_fade:] *= ramp[::-1]
    return signal


def vibrato_curve(
    n_samples: int,
    sample_rate: int,
    *,
    rate_hz: float,
    depth_semitones: float,
    delay_s: float,
    phase: float = 0.0,
) -> np.ndarray:
    """Pitch offset in semitones: a sine that fades in after `delay_s` (singers settle first)."""
    t_s = np.arange(n_samples, dtype=np.float64) / sample_rate
    fade_in = np.clip((t_s - delay_s) / 0.25, 0.0, 1.0)
    return depth_semitones * fade_in * np.sin(2.0 * np.pi * rate_hz * t_s + phase)
