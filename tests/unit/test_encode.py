"""Every delivery format round-trips through encode_audio/decode_audio and is what it claims."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate, correlation_lags

from pipeline.encode import AUDIO_FORMATS, CONTENT_TYPES, decode_audio, encode_audio

SR = 48_000
DURATION_S = 2.0
# One LSB of 24-bit audio: lossless formats must come back within half of it (plus rounding).
LSB_24 = 2.0**-23


def _song_like(channels: int, sample_rate: int = SR, duration_s: float = DURATION_S) -> np.ndarray:
    """Tonal, band-limited content (what perceptual coders keep well) with an odd length."""
    t = np.arange(int(duration_s * sample_rate) + 37) / sample_rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63, 440.0))
    pluck = np.sin(2 * np.pi * 880.0 * t) * np.exp(-(t % 0.25) / 0.05)
    left = 0.15 * chord + 0.3 * pluck
    right = 0.15 * chord - 0.2 * pluck
    return np.stack([left, right][:channels]).astype(np.float32)


def _lag(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 2048) -> int:
    """Samples by which `decoded` trails `reference` (argmax of the cross-correlation)."""
    n = min(reference.shape[1], decoded.shape[1])
    xcorr = correlate(decoded[0, :n], reference[0, :n], mode="full", method="fft")
    lags = correlation_lags(n, n, mode="full")
    window = np.abs(lags) <= max_lag
    return int(lags[window][np.argmax(xcorr[window])])


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    # Elementwise sums, not np.corrcoef: BLAS's thread pool stalls erratically on shared cores.
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def _snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    n = min(reference.shape[1], decoded.shape[1])
    error = decoded[:, :n] - reference[:, :n]
    return float(10.0 * np.log10(np.sum(reference[:, :n] ** 2) / np.sum(error**2)))


def _mp4_top_level_boxes(data: bytes) -> list[bytes]:
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8])
        if size == 1:  # 64-bit size follows the type
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


def test_every_format_has_a_content_type() -> None:
    assert AUDIO_FORMATS == ("m4a", "mp3", "flac", "wav")
    assert set(CONTENT_TYPES) == set(AUDIO_FORMATS)
    assert CONTENT_TYPES["m4a"] == "audio/mp4"
    assert CONTENT_TYPES["mp3"] == "audio/mpeg"


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_round_trip_keeps_rate_channels_length_and_content(fmt: str, channels: int) -> None:
    audio = _song_like(channels)
    decoded, sample_rate = decode_audio(encode_audio(audio, SR, fmt))

    assert sample_rate == SR
    assert decoded.dtype == np.float32
    assert decoded.shape[0] == channels
    # Encoder delay and padding are undone from the MP4 edit list / LAME tag: same length.
    assert abs(decoded.shape[1] - audio.shape[1]) <= int(0.05 * SR)
    if fmt in ("flac", "wav"):
        assert decoded.shape == audio.shape
        np.testing.assert_allclose(decoded, audio, rtol=0, atol=LSB_24)
    else:
        assert _lag(audio, decoded) == 0
        assert _snr_db(audio, decoded) > 20.0
        for channel in range(channels):
            assert _correlation(audio[channel], decoded[channel, : audio.shape[1]]) > 0.99


@pytest.mark.parametrize("fmt", ["m4a", "mp3"])
def test_lossy_round_trip_is_sample_exact_in_length(fmt: str) -> None:
    audio = _song_like(2)
    decoded, _ = decode_audio(encode_audio(audio, SR, fmt))
    assert decoded.shape == audio.shape


def test_the_fast_aac_coder_makes_another_good_m4a() -> None:
    audio = _song_like(2)
    default = encode_audio(audio, SR, "m4a")
    fast = encode_audio(audio, SR, "m4a", aac_coder="fast")

    assert encode_audio(audio, SR, "m4a", aac_coder="twoloop") == default  # FFmpeg's default
    assert fast != default  # the option reaches the encoder
    decoded, _ = decode_audio(fast)
    assert decoded.shape == audio.shape
    assert _lag(audio, decoded) == 0
    assert _snr_db(audio, decoded) > 20.0
    # Only AAC has quantiser search to choose: other formats ignore the option.
    assert encode_audio(audio, SR, "flac", aac_coder="fast") == encode_audio(audio, SR, "flac")


def test_an_unknown_aac_coder_is_refused() -> None:
    with pytest.raises(ValueError, match="aac_coder slow"):
        encode_audio(_song_like(2), SR, "m4a", aac_coder="slow")


def test_m4a_is_mp4_with_moov_before_mdat() -> None:
    data = encode_audio(_song_like(2), SR, "m4a")
    boxes = _mp4_top_level_boxes(data)
    assert boxes[0] == b"ftyp"
    assert data[8:12] == b"M4A "
    assert b"moov" in boxes and b"mdat" in boxes
    assert boxes.index(b"moov") < boxes.index(b"mdat")


def test_mp3_starts_with_id3_or_frame_sync() -> None:
    data = encode_audio(_song_like(2), SR, "mp3")
    assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)


def test_flac_is_24_bit() -> None:
    data = encode_audio(_song_like(2), SR, "flac")
    assert data[:4] == b"fLaC"
    # STREAMINFO follows its 4-byte block header: after two 16-bit block sizes and two 24-bit
    # frame sizes come 20 bits of sample rate, 3 of channels - 1, 5 of bits per sample - 1.
    packed = int.from_bytes(data[8 + 10 : 8 + 13], "big")
    assert packed >> 4 == SR
    assert ((packed >> 1) & 0b111) + 1 == 2
    bits_per_sample = (((packed & 1) << 4) | (data[8 + 13] >> 4)) + 1
    assert bits_per_sample == 24


def test_wav_is_24_bit_pcm() -> None:
    data = encode_audio(_song_like(1), SR, "wav")
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    fmt_at = data.index(b"fmt ")
    channels = int.from_bytes(data[fmt_at + 10 : fmt_at + 12], "little")
    rate = int.from_bytes(data[fmt_at + 12 : fmt_at + 16], "little")
    bits = int.from_bytes(data[fmt_at + 22 : fmt_at + 24], "little")
    assert (channels, rate, bits) == (1, SR, 24)


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_out_of_range_samples_are_clipped(fmt: str) -> None:
    loud = np.clip(_song_like(2) * 4.0, -1.6, 1.6)
    decoded, _ = decode_audio(encode_audio(loud, SR, fmt))
    if fmt in ("flac", "wav"):
        np.testing.assert_allclose(decoded, np.clip(loud, -1.0, 1.0), rtol=0, atol=LSB_24)
    else:
        # Lossy codecs ring around the clipped edges, but what they coded was the clipped wave.
        n = min(decoded.shape[1], loud.shape[1])
        clipped_error = np.abs(decoded[:, :n] - np.clip(loud, -1.0, 1.0)[:, :n]).mean()
        unclipped_error = np.abs(decoded[:, :n] - loud[:, :n]).mean()
        assert clipped_error < 0.5 * unclipped_error


@pytest.mark.parametrize("fmt", ["m4a", "mp3"])
def test_bitrate_sets_lossy_size(fmt: str) -> None:
    audio = _song_like(2, duration_s=4.0)
    seconds = audio.shape[1] / SR
    for kbps in (128, 256):
        size = len(encode_audio(audio, SR, fmt, bitrate_kbps=kbps))
        assert size == pytest.approx(kbps * 1000 / 8 * seconds, rel=0.15)


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_44k1_mono_round_trips(fmt: str) -> None:
    audio = _song_like(1, sample_rate=44_100, duration_s=1.0)
    decoded, sample_rate = decode_audio(encode_audio(audio, 44_100, fmt))
    assert sample_rate == 44_100
    assert decoded.shape[0] == 1
    assert abs(decoded.shape[1] - audio.shape[1]) <= int(0.05 * 44_100)


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown audio format"):
        encode_audio(_song_like(2), SR, "ogg")


def test_audio_outside_the_convention_is_rejected() -> None:
    with pytest.raises(ValueError):
        encode_audio(np.zeros(100, dtype=np.float32), SR, "wav")
    with pytest.raises(ValueError):
        encode_audio(np.zeros((2, 100), dtype=np.int16), SR, "wav")


def test_empty_audio_and_refused_rates_raise_value_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        encode_audio(np.zeros((2, 0), dtype=np.float32), SR, "wav")
    with pytest.raises(ValueError, match="refused"):
        encode_audio(_song_like(2), 96_000, "mp3")


def test_garbage_does_not_decode() -> None:
    with pytest.raises(ValueError):
        decode_audio(b"definitely not audio" * 100)


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_decoding_can_be_capped(fmt: str) -> None:
    audio = _song_like(2)
    data = encode_audio(audio, SR, fmt)
    capped, rate = decode_audio(data, max_duration_s=0.5)
    assert rate == SR and capped.shape == (2, SR // 2)
    whole, _ = decode_audio(data)
    np.testing.assert_array_equal(capped, whole[:, : SR // 2])


def test_naming_formats_does_not_load_ffmpeg() -> None:
    """The conductor hashes prompts with pipeline.provenance, which names formats from this
    module: neither may load PyAV (FFmpeg) or c2pa into a coordination replica."""
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import sys; import pipeline.provenance, deployments.conductor; "
        "print(sorted(m for m in ('av', 'c2pa') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == "[]"
