"""Synthesised drum one-shots (mono float32, peak ≈ 1), built once per render.

Kicks and toms are pitch-swept sines, snares and claps shaped band-passed noise over a tone,
cymbals the classic six-square metallic cluster plus high-passed noise. The kit style ("acoustic",
"electronic", "808", "brush", "soft") changes decays and tunings.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from pipeline.sketch.oscillators import fade_edges

# Stereo position of each piece (-1 left … 1 right) and its level in the drum bus.
DRUM_PAN = {
    "kick": 0.0, "snare": 0.05, "clap": -0.05, "rim": -0.15, "hat": 0.3, "ohat": 0.3,
    "ride": -0.35, "crash": -0.4, "shaker": 0.45, "tamb": -0.45, "clave": 0.25, "conga": -0.3,
    "tom_hi": 0.3, "tom_mid": 0.0, "tom_lo": -0.3, "timpani": 0.0, "brush": 0.1,
}  # fmt: skip
DRUM_LEVEL = {
    "kick": 1.0, "snare": 0.75, "clap": 0.45, "rim": 0.4, "hat": 0.22, "ohat": 0.2,
    "ride": 0.2, "crash": 0.3, "shaker": 0.16, "tamb": 0.18, "clave": 0.25, "conga": 0.4,
    "tom_hi": 0.55, "tom_mid": 0.55, "tom_lo": 0.6, "timpani": 0.7, "brush": 0.3,
}  # fmt: skip

# Frequencies (Hz) of the square-wave cluster that makes cymbals sound metallic.
_METAL_HZ = (205.3, 304.4, 369.6, 522.7, 540.0, 800.0)


class DrumKit:
    """One-shot samples for a kit style; `sample(name)` synthesises on first use."""

    def __init__(self, style: str, sample_rate: int, rng: np.random.Generator, tonic_hz: float):
        self.style = style
        self.sample_rate = sample_rate
        self._rng = rng
        self._tonic_hz = tonic_hz
        self._samples: dict[str, np.ndarray] = {}

    def sample(self, name: str) -> np.ndarray:
        cached = self._samples.get(name)
        if cached is None:
            cached = fade_edges(
                getattr(self, f"_make_{name}")().astype(np.float32), self.sample_rate, 0.0005
            )
            peak = float(np.max(np.abs(cached)))
            cached = cached / peak if peak > 0 else cached
            self._samples[name] = cached
        return cached

    # -- building blocks -------------------------------------------------------------------

    def _t(self, length_s: float) -> np.ndarray:
        return np.arange(int(length_s * self.sample_rate)) / self.sample_rate

    def _noise(self, length_s: float) -> np.ndarray:
        return self._rng.standard_normal(int(length_s * self.sample_rate))

    def _filtered(
        self, x: np.ndarray, kind: str, cutoff_hz: float | tuple[float, float]
    ) -> np.ndarray:
        sos = signal.butter(2, cutoff_hz, kind, fs=self.sample_rate, output="sos")
        return signal.sosfilt(sos, x)

    def _sweep(self, length_s: float, start_hz: float, end_hz: float, sweep_s: float) -> np.ndarray:
        t = self._t(length_s)
        frequency = end_hz + (start_hz - end_hz) * np.exp(-t / sweep_s)
        return np.sin(2 * np.pi * np.cumsum(frequency) / self.sample_rate)

    def _metal(self, length_s: float) -> np.ndarray:
        t = self._t(length_s)
        cluster = sum(np.sign(np.sin(2 * np.pi * f * 1.7 * t + i)) for i, f in enumerate(_METAL_HZ))
        return np.asarray(cluster, dtype=np.float64)

    # -- pieces ----------------------------------------------------------------------------

    def _make_kick(self) -> np.ndarray:
        start_hz, end_hz, sweep_s, decay_s, length_s = {
            "electronic": (160.0, 47.0, 0.035, 0.32, 0.6),
            "808": (110.0, 44.0, 0.05, 0.7, 1.1),
            "soft": (90.0, 55.0, 0.03, 0.18, 0.4),
            "brush": (90.0, 58.0, 0.03, 0.2, 0.4),
        }.get(self.style, (140.0, 52.0, 0.03, 0.26, 0.5))
        t = self._t(length_s)
        body = self._sweep(length_s, start_hz, end_hz, sweep_s) * np.exp(-t / decay_s)
        click = self._filtered(self._noise(length_s), "highpass", 1500) * np.exp(-t / 0.004)
        kick = body + (0.25 if self.style != "soft" else 0.08) * click
        return np.tanh(1.6 * kick) if self.style in ("electronic", "808") else kick

    def _make_snare(self) -> np.ndarray:
        length_s = 0.35
        t = self._t(length_s)
        tone = (np.sin(2 * np.pi * 185 * t) + 0.5 * np.sin(2 * np.pi * 330 * t)) * np.exp(-t / 0.06)
        noise_decay = 0.12 if self.style == "electronic" else 0.16
        noise = self._filtered(self._noise(length_s), "bandpass", (1200, 9000))
        noise *= np.exp(-t / noise_decay)
        if self.style in ("soft", "brush"):
            return 0.3 * tone + self._filtered(noise, "lowpass", 4000)
        return 0.55 * tone + 1.4 * noise

    def _make_clap(self) -> np.ndarray:
        length_s = 0.35
        t = self._t(length_s)
        envelope = np.zeros_like(t)
        for burst_s in (0.0, 0.011, 0.022):
            envelope += np.where(t >= burst_s, np.exp(-np.maximum(t - burst_s, 0) / 0.006), 0)
        envelope += np.where(t >= 0.03, np.exp(-np.maximum(t - 0.03, 0) / 0.11), 0) * 0.8
        return self._filtered(self._noise(length_s), "bandpass", (900, 5000)) * envelope

    def _make_rim(self) -> np.ndarray:
        t = self._t(0.1)
        tone = np.sin(2 * np.pi * 1700 * t) + 0.6 * np.sin(2 * np.pi * 820 * t)
        click = self._filtered(self._noise(0.1), "highpass", 3000)
        return (tone + 0.5 * click) * np.exp(-t / 0.018)

    def _make_hat(self) -> np.ndarray:
        return self._cymbal(0.12, decay_s=0.035, highpass_hz=7000)

    def _make_ohat(self) -> np.ndarray:
        return self._cymbal(0.5, decay_s=0.22, highpass_hz=6500)

    def _make_ride(self) -> np.ndarray:
        t = self._t(1.6)
        bell = np.sin(2 * np.pi * 2850 * t) * np.exp(-t / 0.25) * 0.15
        return self._cymbal(1.6, decay_s=0.7, highpass_hz=3500, noise_mix=0.4) + bell

    def _make_crash(self) -> np.ndarray:
        return self._cymbal(2.2, decay_s=0.9, highpass_hz=4000, noise_mix=0.8)

    def _cymbal(
        self, length_s: float, *, decay_s: float, highpass_hz: float, noise_mix: float = 0.6
    ) -> np.ndarray:
        t = self._t(length_s)
        tone = self._metal(length_s) / 6 + noise_mix * self._noise(length_s)
        return self._filtered(tone, "highpass", highpass_hz) * np.exp(-t / decay_s)

    def _make_shaker(self) -> np.ndarray:
        t = self._t(0.15)
        envelope = np.minimum(1.0, t / 0.012) * np.exp(-t / 0.045)
        return self._filtered(self._noise(0.15), "bandpass", (5000, 12000)) * envelope

    def _make_tamb(self) -> np.ndarray:
        t = self._t(0.3)
        jingle = self._filtered(self._metal(0.3) / 6 + self._noise(0.3), "highpass", 7000)
        return jingle * np.exp(-t / 0.09)

    def _make_clave(self) -> np.ndarray:
        t = self._t(0.12)
        return np.sin(2 * np.pi * 2500 * t) * np.exp(-t / 0.025)

    def _make_conga(self) -> np.ndarray:
        t = self._t(0.4)
        slap = self._filtered(self._noise(0.4), "bandpass", (800, 4000)) * np.exp(-t / 0.01)
        return self._sweep(0.4, 330, 240, 0.02) * np.exp(-t / 0.17) + 0.3 * slap

    def _tom(self, pitch_hz: float) -> np.ndarray:
        t = self._t(0.6)
        thud = self._filtered(self._noise(0.6), "lowpass", 2000) * np.exp(-t / 0.02)
        return self._sweep(0.6, pitch_hz * 1.5, pitch_hz, 0.04) * np.exp(-t / 0.25) + 0.2 * thud

    def _make_tom_hi(self) -> np.ndarray:
        return self._tom(190.0)

    def _make_tom_mid(self) -> np.ndarray:
        return self._tom(140.0)

    def _make_tom_lo(self) -> np.ndarray:
        return self._tom(100.0)

    def _make_timpani(self) -> np.ndarray:
        # Tuned to the song's tonic so the orchestral hits sit in the key.
        t = self._t(2.0)
        f = self._tonic_hz
        partials = sum(
            g * np.sin(2 * np.pi * f * r * t) for r, g in ((1.0, 1.0), (1.5, 0.5), (1.99, 0.35))
        )
        attack = np.minimum(1.0, t / 0.006)
        thud = self._filtered(self._noise(2.0), "lowpass", 800) * np.exp(-t / 0.03)
        return np.asarray(partials) * attack * np.exp(-t / 0.9) + 0.4 * thud

    def _make_brush(self) -> np.ndarray:
        t = self._t(0.3)
        envelope = np.minimum(1.0, t / 0.03) * np.exp(-t / 0.09)
        return self._filtered(self._noise(0.3), "bandpass", (1500, 7000)) * envelope
