"""Loudness measurement, true peak and normalisation: targets hit, ceilings held, no surprises.

True peaks are checked with an independent meter (scipy's resample_poly at 4x and 8x), not
with the module's own interpolator.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import pytest
from scipy.signal import butter, lfilter, resample_poly, sosfilt

from pipeline.loudness import (
    MAX_GAIN_DB,
    SILENCE_DBTP,
    SILENCE_LUFS,
    MasteredAudio,
    measure_loudness_lufs,
    normalize_loudness,
    true_peak_dbtp,
)

SR = 48_000
DURATION_S = 5.0


def _independent_true_peak_dbtp(audio: np.ndarray, oversample: int) -> float:
    upsampled = resample_poly(audio.astype(np.float64), oversample, 1, axis=1)
    return float(20.0 * np.log10(np.abs(upsampled).max()))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    # Elementwise sums, not np.corrcoef: BLAS's thread pool stalls erratically on shared cores.
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def _at_lufs(audio: np.ndarray, lufs: float) -> np.ndarray:
    gain_db = lufs - measure_loudness_lufs(audio, SR)
    return (audio * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def _times(duration_s: float = DURATION_S) -> np.ndarray:
    return np.arange(int(duration_s * SR)) / SR


def _music_like(seed: int = 1) -> np.ndarray:
    """Chord pad, decaying kick every half second, band-limited noise: a crude song."""
    rng = np.random.default_rng(seed)
    t = _times()
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63))
    kick = 3.0 * np.sin(2 * np.pi * 60.0 * t) * np.exp(-(t % 0.5) / 0.08)
    band = butter(2, [200.0, 8000.0], btype="band", fs=SR, output="sos")
    noise = sosfilt(band, rng.standard_normal((2, t.size)), axis=1)
    song = np.stack([0.3 * chord + kick, 0.3 * chord + 0.8 * kick]) + 0.2 * noise
    return (song / np.abs(song).max() * 0.5).astype(np.float32)


def _drum_hit_train(seed: int = 2) -> np.ndarray:
    """Kick, snare and hi-hat hits over a faint pad: ~17 dB between true peak and loudness."""
    rng = np.random.default_rng(seed)
    t = _times()
    beat = t % 0.5
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-beat / 0.02)) * beat) * np.exp(-beat / 0.15)
    snare = 0.6 * rng.standard_normal(t.size) * np.exp(-((t + 0.25) % 0.5) / 0.05)
    high = butter(4, 7000.0, btype="high", fs=SR, output="sos")
    hat = 0.3 * sosfilt(high, rng.standard_normal(t.size)) * np.exp(-(t % 0.125) / 0.01)
    pad = 0.02 * np.sin(2 * np.pi * 110.0 * t)
    mono = kick + snare + hat + pad
    stereo = np.stack([mono, 0.9 * mono])
    return (stereo / np.abs(stereo).max() * 0.5).astype(np.float32)


def _pink_noise(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Paul Kellet's economy pink filter: -3 dB/octave within 0.5 dB over the audio band.
    b = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
    a = [1.0, -2.494956002, 2.017265875, -0.522189400]
    pink = lfilter(b, a, rng.standard_normal((2, _times().size)), axis=1)
    return (pink / np.abs(pink).max() * 0.5).astype(np.float32)


def _sine_chord() -> np.ndarray:
    t = _times()
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0))
    return (0.2 * np.stack([chord, chord])).astype(np.float32)


def _inter_sample_sine(amplitude: float = 0.5) -> np.ndarray:
    """fs/4 sine at 45 degrees: samples sit at 0.707 * amplitude, true peaks at amplitude.

    Faded in and out over 10 ms: an abrupt start is a click whose ringing overshoots.
    """
    n = np.arange(int(DURATION_S * SR))
    fade = np.minimum(1.0, np.minimum(n, n[::-1]) / (0.01 * SR))
    sine = amplitude * np.sin(np.pi / 2 * n + np.pi / 4) * np.sin(np.pi / 2 * fade) ** 2
    return np.stack([sine, sine]).astype(np.float32)


SIGNALS: dict[str, Callable[[], np.ndarray]] = {
    "quiet_music_-40": lambda: _at_lufs(_music_like(), -40.0),
    "loud_music_-6": lambda: _at_lufs(_music_like(), -6.0),
    "drum_hit_train": _drum_hit_train,
    "pink_noise": _pink_noise,
    "sine_chord": _sine_chord,
}


def _mono_997hz(amplitude: float, duration_s: float) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * 997.0 * _times(duration_s)))[None].astype(np.float32)


def test_stereo_997hz_sine_reads_its_level_in_lufs() -> None:
    # BS.1770: a 997 Hz sine at A in one channel reads 20 log10(A) - 3.01 LUFS, so A in both
    # channels reads 20 log10(A).
    sine = _mono_997hz(0.1, 5.0)
    assert measure_loudness_lufs(np.vstack([sine, sine]), SR) == pytest.approx(-20.0, abs=0.1)
    assert measure_loudness_lufs(sine, SR) == pytest.approx(-23.01, abs=0.1)


def test_input_shorter_than_a_gating_block_is_measured() -> None:
    short = _mono_997hz(0.1, 0.2)
    assert measure_loudness_lufs(np.vstack([short, short]), SR) == pytest.approx(-20.0, abs=0.3)
    # Five samples: meaningless as loudness, but a number, not an exception or -inf.
    assert measure_loudness_lufs(np.full((2, 5), 0.1, dtype=np.float32), SR) >= SILENCE_LUFS


def test_silence_measures_at_the_floors() -> None:
    silence = np.zeros((2, SR), dtype=np.float32)
    assert measure_loudness_lufs(silence, SR) == SILENCE_LUFS
    assert measure_loudness_lufs(np.zeros((1, 0), dtype=np.float32), SR) == SILENCE_LUFS
    assert true_peak_dbtp(silence, SR) == SILENCE_DBTP


def test_true_peak_sees_inter_sample_peaks() -> None:
    sine = _inter_sample_sine(amplitude=0.5)
    sample_peak_db = 20.0 * np.log10(np.abs(sine).max())
    assert sample_peak_db == pytest.approx(20.0 * np.log10(0.5) - 3.01, abs=0.01)
    # 0.02 dB: the interpolator's passband ripple at fs/4.
    assert true_peak_dbtp(sine, SR) == pytest.approx(20.0 * np.log10(0.5), abs=0.02)
    assert true_peak_dbtp(sine, SR) == pytest.approx(_independent_true_peak_dbtp(sine, 4), abs=0.01)


def test_true_peak_matches_an_independent_meter_on_music() -> None:
    music = _music_like()
    assert true_peak_dbtp(music, SR) == pytest.approx(
        _independent_true_peak_dbtp(music, 4), abs=0.01
    )
    assert true_peak_dbtp(music, SR, oversample=1) == pytest.approx(
        20.0 * np.log10(np.abs(music).max()), abs=1e-6
    )


@pytest.mark.parametrize("target_lufs", [-23.0, -14.0, -9.0])
@pytest.mark.parametrize("signal_name", sorted(SIGNALS))
def test_normalize_hits_target_under_ceiling(signal_name: str, target_lufs: float) -> None:
    audio = SIGNALS[signal_name]()
    mastered = normalize_loudness(audio, SR, target_lufs=target_lufs, ceiling_dbtp=-1.0)

    measured = measure_loudness_lufs(mastered.audio, SR)
    assert measured == pytest.approx(target_lufs, abs=0.5)
    assert mastered.loudness_lufs == pytest.approx(measured, abs=1e-6)
    assert _independent_true_peak_dbtp(mastered.audio, 4) <= -1.0
    assert _independent_true_peak_dbtp(mastered.audio, 8) <= -1.0
    assert mastered.true_peak_dbtp <= -1.0
    assert mastered.audio.shape == audio.shape
    assert mastered.audio.dtype == np.float32


@pytest.mark.parametrize("ceiling_dbtp", [-1.0, -2.0, -0.1])
def test_limiter_catches_inter_sample_peaks(ceiling_dbtp: float) -> None:
    # Gain such that the samples stay 1.5 dB under the ceiling but true peaks go 1.5 dB over it:
    # a sample-peak limiter would do nothing here.
    sine = _inter_sample_sine(amplitude=0.5)
    over_db = ceiling_dbtp + 1.5 - true_peak_dbtp(sine, SR)
    target = measure_loudness_lufs(sine, SR) + over_db

    mastered = normalize_loudness(sine, SR, target_lufs=target, ceiling_dbtp=ceiling_dbtp)

    assert _independent_true_peak_dbtp(mastered.audio, 8) <= ceiling_dbtp
    assert _independent_true_peak_dbtp(mastered.audio, 4) <= ceiling_dbtp


@pytest.mark.parametrize("gain_db", [0.0, 6.0, 14.0])
def test_peaks_made_exact_only_where_the_limiter_acts_give_the_same_gain(gain_db: float) -> None:
    # The planner interpolates 8x only the blocks whose cheap bound reaches the ceiling; the gain
    # it plans must be what it plans with every block's 8x peak exact.
    from pipeline.loudness import _GainPlanner, _k_weighted_power

    song = _music_like()
    power = _k_weighted_power(song, SR)
    lazy = _GainPlanner.for_signal(song, power, SR, ceiling_dbtp=-1.0)
    everywhere = _GainPlanner.for_signal(song, power, SR, ceiling_dbtp=-1.0)
    everywhere._make_exact_where_limited(np.inf)
    assert everywhere.exact.all()

    knots = lazy.knots(gain_db)

    assert 0 < lazy.exact.mean() < 1  # some blocks limited, some never interpolated
    np.testing.assert_array_equal(knots, everywhere.knots(gain_db))
    assert np.all(lazy.peaks >= everywhere.peaks)  # a bound where not exact, never below


def test_headroom_means_pure_gain() -> None:
    chord = _at_lufs(_sine_chord(), -30.0)
    mastered = normalize_loudness(chord, SR, target_lufs=-23.0)

    assert mastered.gain_db == pytest.approx(7.0, abs=0.05)
    expected = chord * np.float32(10.0 ** (mastered.gain_db / 20.0))
    np.testing.assert_allclose(mastered.audio, expected, rtol=1e-6, atol=1e-9)
    assert _correlation(chord, mastered.audio) > 0.999999


def test_mastering_is_one_gain_curve_that_parts_of_the_mix_share() -> None:
    # Loud enough that the limiter works: the gain curve is not a constant.
    drums, music = _drum_hit_train(), _music_like()
    mix = drums + music
    mastered = normalize_loudness(mix, SR, target_lufs=-9.0)
    assert mastered.gain.shape == (mix.shape[1],) and mastered.gain.dtype == np.float32
    assert float(mastered.gain.max() - mastered.gain.min()) > 0.05  # limiting happened
    np.testing.assert_array_equal(mastered.audio, mix * mastered.gain)
    # Stems mastered with the mix's curve add up to the mastered mix.
    parts = drums * mastered.gain + music * mastered.gain
    assert float(np.max(np.abs(parts - mastered.audio))) <= 1e-6
    silence = normalize_loudness(np.zeros((2, 100), np.float32), SR)
    np.testing.assert_array_equal(silence.gain, np.ones(100, np.float32))


def test_limiting_keeps_the_waveform_recognisable() -> None:
    music = _music_like()
    mastered = normalize_loudness(music, SR, target_lufs=-14.0)
    assert _correlation(music, mastered.audio) > 0.99


def test_silence_stays_silence() -> None:
    silence = np.zeros((2, 2 * SR), dtype=np.float32)
    mastered = normalize_loudness(silence, SR)
    assert not mastered.audio.any()
    assert mastered.gain_db == 0.0
    assert mastered.loudness_lufs == SILENCE_LUFS
    assert mastered.true_peak_dbtp == SILENCE_DBTP


def test_sub_gate_noise_is_not_amplified() -> None:
    hiss = (1e-6 * np.random.default_rng(4).standard_normal((2, 2 * SR))).astype(np.float32)
    mastered = normalize_loudness(hiss, SR)
    np.testing.assert_array_equal(mastered.audio, hiss)
    assert mastered.gain_db == 0.0


def test_gain_is_capped_for_very_quiet_input() -> None:
    whisper = _at_lufs(_music_like(), -65.0)
    mastered = normalize_loudness(whisper, SR, target_lufs=-14.0)
    assert mastered.gain_db == MAX_GAIN_DB
    assert mastered.loudness_lufs == pytest.approx(-25.0, abs=0.5)


def test_mono_and_44k1_are_normalised() -> None:
    t = np.arange(3 * 44_100) / 44_100
    rng = np.random.default_rng(5)
    mono = (0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * rng.standard_normal(t.size))[None]
    mastered = normalize_loudness(mono.astype(np.float32), 44_100, target_lufs=-10.0)
    assert mastered.audio.shape == mono.shape
    assert measure_loudness_lufs(mastered.audio, 44_100) == pytest.approx(-10.0, abs=0.5)
    assert _independent_true_peak_dbtp(mastered.audio, 8) <= -1.0


def test_result_is_immutable() -> None:
    mastered = normalize_loudness(_sine_chord(), SR)
    assert isinstance(mastered, MasteredAudio)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mastered.gain_db = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(100, dtype=np.float32),
        np.zeros((3, 100), dtype=np.float32),
        np.zeros((2, 100), dtype=np.int16),
        np.full((2, 100), np.nan, dtype=np.float32),
    ],
)
def test_rejects_audio_outside_the_convention(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        normalize_loudness(bad, SR)


def test_thirty_seconds_normalise_quickly() -> None:
    # Regression guard against accidentally per-sample Python loops; ~0.2 s on a laptop core.
    rng = np.random.default_rng(6)
    song = np.tile(_music_like(), (1, 4))[:, : 30 * SR]
    song = song + 0.01 * rng.standard_normal(song.shape).astype(np.float32)
    started = time.perf_counter()
    normalize_loudness(song, SR, target_lufs=-9.0)
    assert time.perf_counter() - started < 3.0
