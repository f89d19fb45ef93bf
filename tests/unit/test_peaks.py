"""Waveform peaks: bucket (min, max) values, shapes and the JSON document."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.peaks import DEFAULT_SAMPLES_PER_PEAK, compute_peaks, peaks_document

SR = 48_000


def _noise(channels: int, n_samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.5 * rng.standard_normal((channels, n_samples))).astype(np.float32)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("n_samples", [1, 479, 480, 481, 10_000])
def test_peaks_match_a_direct_computation(channels: int, n_samples: int) -> None:
    audio = _noise(channels, n_samples)
    peaks = compute_peaks(audio, SR, samples_per_peak=480)

    expected = [
        (audio[:, start : start + 480].min(), audio[:, start : start + 480].max())
        for start in range(0, n_samples, 480)
    ]
    assert peaks.dtype == np.float32
    assert peaks.shape == (-(-n_samples // 480), 2)
    np.testing.assert_array_equal(peaks, np.array(expected, dtype=np.float32))
    assert np.all(peaks[:, 0] <= peaks[:, 1])


def test_peaks_span_both_channels() -> None:
    audio = np.zeros((2, 960), dtype=np.float32)
    audio[0, 10] = 0.9  # first bucket: max from the left channel
    audio[1, 500] = -0.7  # second bucket: min from the right channel
    peaks = compute_peaks(audio, SR, samples_per_peak=480)
    np.testing.assert_array_equal(peaks, np.array([[0.0, 0.9], [-0.7, 0.0]], dtype=np.float32))


def test_default_gives_about_100_peaks_per_second_at_48k() -> None:
    assert DEFAULT_SAMPLES_PER_PEAK == 480
    peaks = compute_peaks(_noise(2, 3 * SR), SR)
    assert peaks.shape == (300, 2)


def test_empty_audio_has_no_peaks() -> None:
    assert compute_peaks(np.zeros((2, 0), dtype=np.float32), SR).shape == (0, 2)


def test_document_is_json_ready_and_rounded() -> None:
    audio = _noise(2, 1000)
    document = peaks_document(audio, SR, 480)

    assert set(document) == {"sample_rate", "samples_per_peak", "peaks"}
    assert document["sample_rate"] == SR and type(document["sample_rate"]) is int
    assert document["samples_per_peak"] == 480 and type(document["samples_per_peak"]) is int
    assert len(document["peaks"]) == 3
    for pair, exact in zip(document["peaks"], compute_peaks(audio, SR, 480), strict=True):
        assert len(pair) == 2 and all(type(value) is float for value in pair)
        assert pair == [round(float(exact[0]), 4), round(float(exact[1]), 4)]
    assert json.loads(json.dumps(document)) == document


def test_three_minutes_are_fast_and_compact() -> None:
    document = peaks_document(_noise(2, 180 * SR), SR, DEFAULT_SAMPLES_PER_PEAK)
    assert len(document["peaks"]) == 18_000
    assert len(json.dumps(document)) < 400_000


@pytest.mark.parametrize("samples_per_peak", [0, -5])
def test_bucket_size_must_be_positive(samples_per_peak: int) -> None:
    with pytest.raises(ValueError):
        compute_peaks(_noise(1, 100), SR, samples_per_peak)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(100, dtype=np.float32),
        np.zeros((3, 100), dtype=np.float32),
        np.full((1, 100), np.nan, dtype=np.float32),
    ],
)
def test_audio_outside_the_convention_is_rejected(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        compute_peaks(bad, SR)
