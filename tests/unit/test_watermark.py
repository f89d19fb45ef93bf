"""AudioSeal watermarking: the real checkpoint loader on tiny real-format checkpoints
(scripts/make_tiny_audioseal.py), the 16 kHz delta path of `pipeline.watermark`, and the
config-facing errors. The tiny weights are random, so detection *quality* is not tested here."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.engines.audioseal import (
    GENERATOR_SETTING,
    AudioSealWatermarker,
    load_audioseal_detector,
    load_audioseal_generator,
)
from pipeline.tiny.audioseal import NBITS, build_tiny_audioseal
from pipeline.watermark import (
    MODEL_SAMPLE_RATE,
    detect_watermark,
    embed_watermark,
    is_watermarked,
    resample_audio,
    watermark_delta,
)
from serve.config import WatermarkConfig

pytest.importorskip("audioseal")

SAMPLE_RATE = 48_000


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # The tiny model is too small to gain from threads, and on a busy CI machine torch's OpenMP
    # threads spin against other processes: one thread keeps these tests fast and steady.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_tiny_audioseal(tmp_path_factory.mktemp("audioseal"))


@pytest.fixture(scope="module")
def watermarker(tiny_checkpoints: tuple[Path, Path]) -> AudioSealWatermarker:
    generator_path, detector_path = tiny_checkpoints
    config = WatermarkConfig(generator_path=str(generator_path), detector_path=str(detector_path))
    loaded = AudioSealWatermarker.from_config(config)
    assert loaded is not None
    return loaded


def _song(seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 12_000 * t)
    right = 0.2 * np.sin(2 * np.pi * 330 * t)
    return np.stack([left, right]).astype(np.float32)


class _EchoGenerator:
    """A stand-in model whose watermark is its (16 kHz) input: exposes the resampling path."""

    message_bits = NBITS

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def watermark_16k(self, audio_16k: np.ndarray, message: np.ndarray) -> np.ndarray:
        self.calls.append(audio_16k.shape)
        return audio_16k.copy()


def test_tiny_builder_writes_audioseal_format_and_is_idempotent(
    tiny_checkpoints: tuple[Path, Path],
) -> None:
    import torch

    generator_path, detector_path = tiny_checkpoints
    generator = torch.load(generator_path, weights_only=False)
    detector = torch.load(detector_path, weights_only=False)
    for checkpoint in (generator, detector):
        assert set(checkpoint) == {"xp.cfg", "model"}
        assert {"seanet", "channels", "dtype", "sample_rate"} <= set(checkpoint["xp.cfg"])
    assert "encoder.model.0.conv.conv.weight_g" in generator["model"]
    assert generator["model"]["msg_processor.msg_processor.weight"].shape[0] == 2 * NBITS
    assert detector["model"]["detector.1.weight"].shape[0] == 2 + NBITS
    stamp = generator_path.stat().st_mtime_ns
    assert build_tiny_audioseal(generator_path.parent) == tiny_checkpoints
    assert generator_path.stat().st_mtime_ns == stamp


def test_loader_matches_audioseals_own_loader(tiny_checkpoints: tuple[Path, Path]) -> None:
    import torch
    from audioseal import AudioSeal

    generator_path, detector_path = tiny_checkpoints
    with warnings.catch_warnings():  # AudioSeal's path uses the deprecated torch weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        references = (
            AudioSeal.load_generator(str(generator_path), nbits=NBITS),
            AudioSeal.load_detector(str(detector_path), nbits=NBITS),
        )
    ours = (
        load_audioseal_generator(str(generator_path)),
        load_audioseal_detector(str(detector_path)),
    )
    for reference, model in zip(references, ours, strict=True):
        expected, actual = reference.state_dict(), model.state_dict()
        assert expected.keys() == actual.keys()
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6)


def test_loader_reads_parametrization_keys_that_audioseal_cannot(tmp_path: Path) -> None:
    # Current torch names weight-norm tensors `parametrizations.weight.original0/1`; AudioSeal's
    # loader then wraps the streaming ConvTranspose wrapper in weight_norm and fails.
    generator_path, detector_path = build_tiny_audioseal(
        tmp_path, weight_norm_keys="parametrizations"
    )
    legacy_generator, _ = build_tiny_audioseal(tmp_path / "legacy")
    import torch

    modern = load_audioseal_generator(str(generator_path)).state_dict()
    legacy = load_audioseal_generator(str(legacy_generator)).state_dict()
    for key in legacy:
        torch.testing.assert_close(modern[key], legacy[key])
    load_audioseal_detector(str(detector_path))


def test_embed_adds_a_small_watermark_and_keeps_the_layout(
    watermarker: AudioSealWatermarker,
) -> None:
    audio = _song(2.0)
    marked = watermarker.embed(audio, SAMPLE_RATE)
    assert marked.shape == audio.shape and marked.dtype == np.float32
    change = marked - audio
    assert 0 < np.abs(change).max() < 0.01
    assert np.sqrt(np.mean(change**2)) < 0.01 * np.sqrt(np.mean(audio**2))
    # Deterministic: the same audio and message give the same watermark.
    np.testing.assert_array_equal(watermarker.embed(audio, SAMPLE_RATE), marked)
    other_message = np.ones(NBITS, dtype=np.int64)
    assert not np.array_equal(watermarker.embed(audio, SAMPLE_RATE, other_message), marked)


def test_embed_leaves_content_above_the_model_band_untouched(
    watermarker: AudioSealWatermarker,
) -> None:
    audio = _song(1.0)
    change = watermarker.embed(audio, SAMPLE_RATE) - audio
    spectrum = np.abs(np.fft.rfft(change[0]))
    frequencies = np.fft.rfftfreq(change.shape[-1], 1 / SAMPLE_RATE)
    # Only the delta is resampled: nothing of the 12 kHz partial is lost or added.
    assert spectrum[frequencies > 9_000].max() < 1e-3 * spectrum.max()


def test_detect_runs_end_to_end(watermarker: AudioSealWatermarker) -> None:
    audio = _song(1.5)
    marked = watermarker.embed(audio, SAMPLE_RATE)
    result = watermarker.detect(marked, SAMPLE_RATE)
    assert set(result) == {"detected", "score", "message"}
    assert 0.0 <= result["score"] <= 1.0
    assert result["detected"] == (result["score"] >= watermarker.threshold)
    assert len(result["message"]) == NBITS and set(result["message"]) <= {0, 1}
    assert watermarker.detect(marked, SAMPLE_RATE) == result


def test_mono_and_other_rates(watermarker: AudioSealWatermarker) -> None:
    mono = _song(0.5, 44_100)[:1]
    marked = watermarker.embed(mono, 44_100)
    assert marked.shape == mono.shape
    assert 0.0 <= watermarker.detect(marked, 44_100)["score"] <= 1.0


def test_round_trip_resampling_of_a_1khz_sine_is_accurate() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    sine = (0.5 * np.sin(2 * np.pi * 1_000 * t))[None, :].astype(np.float32)
    down = resample_audio(sine, SAMPLE_RATE, MODEL_SAMPLE_RATE)
    assert down.shape == (1, SAMPLE_RATE // 3)
    back = resample_audio(down, MODEL_SAMPLE_RATE, SAMPLE_RATE)
    inner = slice(2_000, -2_000)  # the FIR's edge transients
    # resample_poly's Kaiser FIR has ~0.02 dB of passband ripple: within 0.5 % of the amplitude.
    assert np.abs(back[0, inner] - sine[0, inner]).max() < 0.005 * 0.5
    # Through the delta path: a model whose watermark is its input returns the sine itself.
    delta = watermark_delta(sine, SAMPLE_RATE, _EchoGenerator())
    assert delta.shape == sine.shape
    assert np.abs(delta[0, inner] - sine[0, inner]).max() < 0.005 * 0.5


def test_long_audio_is_watermarked_in_crossfaded_windows() -> None:
    generator = _EchoGenerator()
    t = np.arange(25 * SAMPLE_RATE) / SAMPLE_RATE
    sine = (0.5 * np.sin(2 * np.pi * 1_000 * t))[None, :].astype(np.float32)
    delta = watermark_delta(sine, SAMPLE_RATE, generator)
    assert len(generator.calls) == 3
    # The cross-fades sum to one: no seam or gain change at the window joins.
    inner = slice(2_000, -2_000)
    assert np.abs(delta[0, inner] - sine[0, inner]).max() < 0.005 * 0.5


def test_embed_rejects_a_bad_message(watermarker: AudioSealWatermarker) -> None:
    with pytest.raises(ValueError, match="16 bits"):
        embed_watermark(_song(0.1), SAMPLE_RATE, _EchoGenerator(), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="16 bits"):
        watermarker.embed(_song(0.1), SAMPLE_RATE, np.zeros(8, dtype=np.int64))


def test_detect_watermark_averages_channels() -> None:
    class FixedDetector:
        def detect_16k(self, audio_16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            bits = np.array([[0.9, 0.2, 0.7], [0.8, 0.4, 0.1]])
            return np.array([1.0, 0.5]), bits

    score, bits = detect_watermark(_song(0.2), SAMPLE_RATE, FixedDetector())
    assert score == pytest.approx(0.75)
    assert bits.tolist() == [1, 0, 0]
    assert is_watermarked(0.75, 0.75) and not is_watermarked(0.74, 0.75)


def test_not_configured_is_none() -> None:
    assert AudioSealWatermarker.from_config(WatermarkConfig()) is None


def test_missing_generator_names_the_setting(tmp_path: Path) -> None:
    config = WatermarkConfig(generator_path=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match=rf"not found.*{GENERATOR_SETTING}.*make_tiny_audioseal"):
        AudioSealWatermarker.from_config(config)


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_broken_generator_names_the_setting(tmp_path: Path, content: bytes) -> None:
    broken = tmp_path / "broken.pth"
    broken.write_bytes(content)
    with pytest.raises(ValueError, match=GENERATOR_SETTING):
        AudioSealWatermarker.from_config(WatermarkConfig(generator_path=str(broken)))


def test_wrong_checkpoint_kind_names_the_setting(tiny_checkpoints: tuple[Path, Path]) -> None:
    _, detector_path = tiny_checkpoints
    with pytest.raises(ValueError, match=rf"msg_processor.*{GENERATOR_SETTING}"):
        AudioSealWatermarker.from_config(WatermarkConfig(generator_path=str(detector_path)))


def test_missing_detector_names_its_setting(tiny_checkpoints: tuple[Path, Path]) -> None:
    generator_path, _ = tiny_checkpoints
    config = WatermarkConfig(generator_path=str(generator_path), detector_path="/nope.pth")
    with pytest.raises(ValueError, match=r"postprocess\.watermark\.detector_path"):
        AudioSealWatermarker.from_config(config)
    only_generator = AudioSealWatermarker.from_config(
        WatermarkConfig(generator_path=str(generator_path))
    )
    assert only_generator is not None and not only_generator.can_detect
    with pytest.raises(RuntimeError, match="detector_path"):
        only_generator.detect(_song(0.1), SAMPLE_RATE)


def test_truncated_weights_name_the_setting(
    tiny_checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    import torch

    generator_path, _ = tiny_checkpoints
    checkpoint = torch.load(generator_path, weights_only=False)
    del checkpoint["model"]["decoder.model.0.conv.conv.bias"]
    damaged = tmp_path / "damaged.pth"
    torch.save(checkpoint, damaged)
    with pytest.raises(ValueError, match=rf"(?s)not loadable.*{GENERATOR_SETTING}"):
        AudioSealWatermarker.from_config(WatermarkConfig(generator_path=str(damaged)))


def test_check_health(watermarker: AudioSealWatermarker) -> None:
    watermarker.check_health()
