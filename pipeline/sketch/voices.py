"""Pitched voices: harmony and bass timbres (cached per pitch and length) and the lead voices.

Every timbre is additive: layers of harmonic spectra, each with its own envelope (a bright attack
layer that dies fast over a darker body gives plucks and pianos their decay). The sung lead is
a glottal-like source whose harmonics are weighted by three vowel formants, with vibrato,
portamento, breath and consonant noise, so the line reads as a voice singing syllables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

from pipeline.sketch.oscillators import (
    envelope,
    harmonic_numbers,
    harmonic_table,
    lowpass_weights,
    read_table,
    vibrato_curve,
)
from pipeline.sketch.score import NoteEvent
from pipeline.sketch.theory import midi_to_hz


@dataclass(frozen=True)
class Layer:
    spectrum: str  # recipe name, see _spectrum
    gain: float
    attack_s: float
    decay_s: float  # math.inf = no decay
    sustain: float  # level the decay settles to, 0..1


@dataclass(frozen=True)
class Timbre:
    layers: tuple[Layer, ...]
    release_s: float
    unison_cents: float = 0.0  # > 0: two detuned copies, one per channel (an ensemble width)
    drive: float = 0.0  # tanh saturation amount (0 = clean)


_INF = math.inf
TIMBRES: dict[str, Timbre] = {
    # harmony
    "keys": Timbre((Layer("piano_hammer", 0.5, 0.002, 0.2, 0.0),
                    Layer("piano_body", 1.0, 0.003, 1.6, 0.0)), release_s=0.18),
    "epiano": Timbre((Layer("epiano_tine", 0.4, 0.002, 0.3, 0.0),
                      Layer("epiano_body", 1.0, 0.004, 2.2, 0.15)), release_s=0.2),
    "pluck": Timbre((Layer("pluck_attack", 0.7, 0.001, 0.12, 0.0),
                     Layer("pluck_body", 1.0, 0.002, 1.0, 0.0)), release_s=0.08),
    "organ": Timbre((Layer("organ", 1.0, 0.012, _INF, 1.0),), release_s=0.06, unison_cents=4),
    "power": Timbre((Layer("saw_power", 1.0, 0.003, 2.5, 0.6),), release_s=0.05,
                    unison_cents=9, drive=2.5),
    "pad": Timbre((Layer("saw_pad", 1.0, 0.35, _INF, 1.0),), release_s=0.7, unison_cents=12),
    "strings": Timbre((Layer("saw_strings", 1.0, 0.2, _INF, 1.0),), release_s=0.45,
                      unison_cents=8),
    "brass": Timbre((Layer("saw_brass", 1.0, 0.04, 0.4, 0.75),), release_s=0.12, unison_cents=5),
    "stab": Timbre((Layer("stab", 1.0, 0.003, 0.22, 0.25),), release_s=0.08, unison_cents=10),
    # bass
    "finger": Timbre((Layer("bass_finger", 1.0, 0.004, 1.0, 0.4),
                      Layer("bass_pick", 0.3, 0.001, 0.06, 0.0)), release_s=0.06),
    "synth": Timbre((Layer("bass_synth", 1.0, 0.003, 0.5, 0.6),
                     Layer("sine", 0.6, 0.003, _INF, 1.0)), release_s=0.05),
    "808": Timbre((Layer("sine2", 1.0, 0.003, 1.6, 0.25),), release_s=0.12, drive=1.8),
    "upright": Timbre((Layer("upright", 1.0, 0.006, 0.45, 0.12),), release_s=0.08),
    "sub": Timbre((Layer("sine2", 1.0, 0.06, _INF, 1.0),), release_s=0.4),
    # instrumental leads (played through render_lead for vibrato and glides)
    "lead_synth": Timbre((Layer("lead_synth", 1.0, 0.01, _INF, 1.0),), release_s=0.09),
    "lead_flute": Timbre((Layer("flute", 1.0, 0.05, _INF, 1.0),), release_s=0.1),
}  # fmt: skip

_DRAWBARS = np.array([1.0, 0.75, 0.55, 0.45, 0.0, 0.3, 0.0, 0.25])
_FLUTE = np.array([1.0, 0.3, 0.12, 0.05, 0.02])


def _fixed(amplitudes: np.ndarray, count: int) -> np.ndarray:
    """A fixed harmonic recipe cut or zero-padded to `count` harmonics."""
    out = np.zeros(count)
    used = min(count, len(amplitudes))
    out[:used] = amplitudes[:used]
    return out


def _spectrum(recipe: str, f0_hz: float, brightness: float, sample_rate: int) -> np.ndarray:
    """Harmonic amplitudes of a recipe at a pitch; brightness 0..1 opens the tilt."""
    k = harmonic_numbers(f0_hz, 80, sample_rate)
    h = k * f0_hz
    b = brightness
    recipes = {
        "piano_hammer": lambda: k**-0.8 * lowpass_weights(h, 2500 + 4000 * b),
        "piano_body": lambda: k**-2.0 * lowpass_weights(h, 1500 + 1500 * b),
        "epiano_tine": lambda: k**-1.2 * lowpass_weights(h, 1500 + 2500 * b),
        "epiano_body": lambda: np.where(k == 1, 1.0, np.where(k == 2, 0.12, 0.03 / k)),
        "pluck_attack": lambda: k**-1.0 * lowpass_weights(h, 3000 + 4000 * b),
        "pluck_body": lambda: k**-1.7 * lowpass_weights(h, 1200 + 1500 * b),
        "organ": lambda: _fixed(_DRAWBARS, len(k)),
        "saw_pad": lambda: k**-1.0 * lowpass_weights(h, 900 + 2600 * b),
        "saw_strings": lambda: k**-1.0 * lowpass_weights(h, 2000 + 3000 * b),
        "saw_power": lambda: k**-1.0 * lowpass_weights(h, 2000 + 2500 * b, order=1),
        "saw_brass": lambda: k**-1.0 * lowpass_weights(h, 1200 + 2500 * b),
        "stab": lambda: k**-1.0 * lowpass_weights(h, 1500 + 3500 * b),
        "bass_finger": lambda: k**-1.6 * lowpass_weights(h, 700 + 900 * b, order=3),
        "bass_pick": lambda: k**-1.0 * lowpass_weights(h, 1500 + 1500 * b),
        "bass_synth": lambda: k**-1.0 * lowpass_weights(h, 250 + 700 * b, order=3),
        "upright": lambda: k**-1.8 * lowpass_weights(h, 600 + 600 * b, order=3),
        "sine": lambda: np.where(k == 1, 1.0, 0.0),
        "sine2": lambda: np.where(k == 1, 1.0, np.where(k == 2, 0.15, np.where(k == 3, 0.05, 0))),
        "lead_synth": lambda: k**-1.0 * np.where(k % 2 == 1, 1.0, 0.45)
        * lowpass_weights(h, 1800 + 3000 * b),
        "flute": lambda: _fixed(_FLUTE, len(k)),
    }  # fmt: skip
    return np.asarray(recipes[recipe](), dtype=np.float64)


# Vowel formants (Hz) of an adult male voice; female voices scale them up. The last entry is a
# neutral schwa for syllables without a vowel letter.
VOWEL_FORMANTS_HZ = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (300.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (320.0, 870.0, 2240.0),
    "@": (500.0, 1500.0, 2500.0),
}
_FORMANT_GAINS = (1.0, 0.55, 0.3)
_FORMANT_BANDWIDTHS_HZ = (90.0, 120.0, 170.0)


def vowel_of(syllable: str) -> str:
    """The vowel a syllable is sung on: its first vowel letter ('y' sings as 'i')."""
    for letter in syllable.lower():
        if letter in "aeiou":
            return letter
        if letter == "y":
            return "i"
    return "@"


def formant_spectrum(
    vowel: str, f0_hz: float, formant_scale: float, brightness: float, sample_rate: int
) -> np.ndarray:
    """Harmonic amplitudes of a sung vowel: a -6 dB/oct source shaped by three resonances."""
    k = harmonic_numbers(f0_hz, 60, sample_rate)
    h = k * f0_hz
    response = np.full_like(h, 0.025)
    for formant_hz, gain, bandwidth_hz in zip(
        VOWEL_FORMANTS_HZ[vowel], _FORMANT_GAINS, _FORMANT_BANDWIDTHS_HZ, strict=True
    ):
        # A high voice's harmonics are far apart; widen the resonances so some always land.
        half_width = 0.5 * max(bandwidth_hz, 0.8 * f0_hz)
        centre = formant_hz * formant_scale
        response += gain / (1.0 + ((h - centre) / half_width) ** 2)
    presence = 1.0 + (0.3 + 0.5 * brightness) * np.exp(-(((h - 3000.0) / 600.0) ** 2))
    return k**-1.0 * response * presence


class NoteSynth:
    """Renders notes of the cached timbres; identical (timbre, pitch, length) notes are reused."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._tables: dict[tuple[str, float, int], np.ndarray] = {}
        self._notes: dict[tuple[str, float, int, int], np.ndarray] = {}

    def table(self, recipe: str, f0_hz: float, brightness: float) -> np.ndarray:
        bucket = round(brightness * 20)
        key = (recipe, round(f0_hz, 2), bucket)
        cached = self._tables.get(key)
        if cached is None:
            cached = harmonic_table(_spectrum(recipe, f0_hz, bucket / 20, self.sample_rate))
            self._tables[key] = cached
        return cached

    def note(self, timbre_name: str, midi: float, gate_s: float, brightness: float) -> np.ndarray:
        """A note as float32 [channels, samples] (1 channel, or 2 for ensemble timbres)."""
        timbre = TIMBRES[timbre_name]
        sr = self.sample_rate
        gate_n = max(1, int(gate_s * sr))
        bucket = round(brightness * 20)
        key = (timbre_name, round(midi, 3), gate_n, bucket)
        cached = self._notes.get(key)
        if cached is not None:
            return cached
        n = gate_n + int(timbre.release_s * sr)
        f0_hz = midi_to_hz(midi)
        detunes = (-timbre.unison_cents, timbre.unison_cents) if timbre.unison_cents > 0 else (0.0,)
        channels = []
        for channel, cents in enumerate(detunes):
            mono = np.zeros(n, dtype=np.float32)
            for layer in timbre.layers:
                table = self.table(layer.spectrum, f0_hz, brightness)
                tone = read_table(table, f0_hz * 2 ** (cents / 1200), n, sr, 0.31 * channel)
                shape = envelope(
                    n,
                    gate_n,
                    sr,
                    attack_s=layer.attack_s,
                    decay_s=layer.decay_s,
                    sustain=layer.sustain,
                )
                mono += np.float32(layer.gain) * tone * shape
            channels.append(mono)
        wave = np.stack(channels)
        if timbre.drive > 0:
            wave = (np.tanh(timbre.drive * wave) / math.tanh(timbre.drive)).astype(np.float32)
        self._notes[key] = wave
        return wave


def pan_gains(pan: float) -> tuple[float, float]:
    """Equal-power (left, right) gains for pan -1 … 1."""
    angle = (min(1.0, max(-1.0, pan)) + 1.0) * math.pi / 4.0
    return math.cos(angle), math.sin(angle)


def mix_in(out: np.ndarray, wave: np.ndarray, start: int, gains: tuple[float, float]) -> None:
    """Add a mono or stereo `wave` into stereo `out` at sample `start`, clipped to the buffer."""
    if start >= out.shape[1]:
        return
    offset = max(0, -start)
    start = max(0, start)
    end = min(out.shape[1], start + wave.shape[1] - offset)
    if end <= start:
        return
    piece = wave[:, offset : offset + end - start]
    if piece.shape[0] == 1:
        out[0, start:end] += gains[0] * piece[0]
        out[1, start:end] += gains[1] * piece[0]
    else:
        out[0, start:end] += gains[0] * math.sqrt(2.0) * piece[0]
        out[1, start:end] += gains[1] * math.sqrt(2.0) * piece[1]


def render_notes(events: list[NoteEvent], out: np.ndarray, synth: NoteSynth) -> None:
    """Add cached-timbre notes (harmony, bass) into the stereo buffer `out`."""
    sr = synth.sample_rate
    for event in events:
        wave = synth.note(event.timbre, event.midi, event.duration_s, event.brightness)
        left, right = pan_gains(event.pan)
        mix_in(
            out,
            wave,
            round(event.start_s * sr),
            (event.velocity * left, event.velocity * right),
        )


# Leading consonant letters → the noise burst that starts the syllable.
_SIBILANTS = ("sh", "ch", "th", "s", "z", "c", "x", "f", "j", "v")
_PLOSIVES = ("t", "k", "p", "d", "b", "g", "q")


class LeadVoice:
    """The lead line's voices: a sung vowel synth and three instrumental leads."""

    def __init__(self, sample_rate: int, rng: np.random.Generator, brightness: float) -> None:
        self.sample_rate = sample_rate
        self.brightness = brightness
        self._rng = rng
        self._synth = NoteSynth(sample_rate)
        self._tables: dict[tuple[str, int, str], np.ndarray] = {}
        noise = rng.standard_normal(2 * sample_rate)
        self._breath = signal.sosfilt(
            signal.butter(2, (1200, 6000), "bandpass", fs=sample_rate, output="sos"), noise
        ).astype(np.float32)
        self._hiss = signal.sosfilt(
            signal.butter(4, 4500, "highpass", fs=sample_rate, output="sos"), noise
        ).astype(np.float32)

    def _vowel_table(self, vowel: str, midi: float, voice: str) -> np.ndarray:
        key = (vowel, round(midi), voice)
        cached = self._tables.get(key)
        if cached is None:
            formant_scale = {"male": 1.0, "reed": 0.9}.get(voice, 1.15)
            amplitudes = formant_spectrum(
                vowel, midi_to_hz(round(midi)), formant_scale, self.brightness, self.sample_rate
            )
            cached = harmonic_table(amplitudes)
            self._tables[key] = cached
        return cached

    def _noise(self, source: np.ndarray, n: int) -> np.ndarray:
        """`n` samples of a pre-filtered noise bed, from a random offset; looped for notes held
        longer than the bed (a one-syllable line can last several seconds)."""
        if n > len(source):
            return np.resize(source, n)
        start = int(self._rng.integers(0, len(source) - n + 1))
        return source[start : start + n]

    def render(self, events: list[NoteEvent], out: np.ndarray) -> None:
        """Add lead notes into `out`. `timbre` is "male"/"female" (sung) or "lead_*"."""
        sr = self.sample_rate
        for event in events:
            sung = event.syllable is not None
            release_s = 0.07 if sung else TIMBRES.get(event.timbre, TIMBRES["lead_synth"]).release_s
            gate_n = max(1, int(event.duration_s * sr))
            n = gate_n + int(release_s * sr)
            pitch = np.full(n, event.midi, dtype=np.float64)
            if event.glide_from_midi is not None:
                t_s = np.arange(n) / sr
                pitch += (event.glide_from_midi - event.midi) * np.exp(-t_s / 0.035)
            if event.duration_s > 0.22:
                depth = 0.28 if sung else 0.15
                pitch += vibrato_curve(
                    n,
                    sr,
                    rate_hz=5.2 + 0.6 * self._rng.random(),
                    depth_semitones=depth,
                    delay_s=0.16,
                    phase=float(self._rng.random() * 6.28),
                )
            frequency_hz = 440.0 * np.exp2((pitch - 69.0) / 12.0)
            if sung:
                assert event.syllable is not None
                table = self._vowel_table(vowel_of(event.syllable), event.midi, event.timbre)
                attack_s = 0.03 if event.syllable[:1].lower() in "lmnrwyh" else 0.015
            elif event.timbre == "lead_reed":
                table = self._vowel_table("o", event.midi, "reed")
                attack_s = 0.03
            else:
                layer = TIMBRES[event.timbre].layers[0]
                table = self._synth.table(layer.spectrum, midi_to_hz(event.midi), self.brightness)
                attack_s = layer.attack_s
            tone = read_table(table, frequency_hz, n, sr)
            shape = envelope(n, gate_n, sr, attack_s=attack_s, decay_s=2.5, sustain=0.7)
            wave = tone * shape
            breath_level = (
                0.05 if sung else (0.09 if event.timbre in ("lead_reed", "lead_flute") else 0)
            )
            if breath_level:
                wave += np.float32(breath_level) * self._noise(self._breath, n) * shape
            if sung:
                assert event.syllable is not None
                self._add_consonant(wave, event.syllable.lower())
            left, right = (0.7071, 0.7071)
            mix_in(
                out,
                wave[np.newaxis, :],
                round(event.start_s * sr),
                (event.velocity * left, event.velocity * right),
            )

    def _add_consonant(self, wave: np.ndarray, syllable: str) -> None:
        sr = self.sample_rate
        if syllable.startswith(_SIBILANTS):
            length_s, level = 0.06, 0.22
        elif syllable.startswith(_PLOSIVES):
            length_s, level = 0.02, 0.15
        else:
            return
        n = min(len(wave), int(length_s * sr))
        burst = self._noise(self._hiss, n) * np.hanning(n).astype(np.float32)
        wave[:n] += np.float32(level) * burst
