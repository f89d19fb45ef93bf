"""Stems: exact sketch stems, the resampling around htdemucs, and a real-format tiny htdemucs.

The Demucs tests build a tiny random-weight checkpoint with `scripts/make_tiny_htdemucs.py` and
load it through Demucs' own loader, so they run the real loading and `apply_model` code; the
stems are noise-like, so they check the contract (names, shapes, rate, sum), not quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deployments.post_processor import Provenance
from deployments.stem_maker import StemMaker, StemsTask, StemsUnavailable
from pipeline.engines.demucs import DemucsSeparator, pick_device
from pipeline.loudness import normalize_loudness
from pipeline.lyrics import LyricSection
from pipeline.sketch import SKETCH_VERSION, SketchRender, render_sketch
from pipeline.song_models import RenderRequest
from pipeline.stems import (
    MODEL_SAMPLE_RATE,
    STEM_NAMES,
    complete_to_mix,
    from_model_rate,
    render_fingerprint,
    resampled_length,
    same_render,
    sketch_stems,
    to_model_rate,
)
from pipeline.tags import StyleTags
from pipeline.tiny.htdemucs import build_tiny_htdemucs
from pipeline.tiny.htdemucs import main as builder_main
from serve.config import PostProcessConfig, StemsConfig, StorageConfig

SAMPLE_RATE = 48_000
LYRICS = [
    LyricSection("verse", [
        "I walked along the river in the morning light",
        "every shadow whispered that you'd be alright",
    ]),
    LyricSection("chorus", ["Hold on, hold on to me", "we are the fire in the sea"]),
]  # fmt: skip


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _render(instrumental: bool = False) -> SketchRender:
    tags = StyleTags(genre="pop", subgenre=None, family="pop", bpm=110, key="C major")
    return render_sketch(tags, LYRICS, 8.0, 3, instrumental=instrumental)


@pytest.fixture(scope="module")
def sung() -> SketchRender:
    return _render()


# --- sketch stems ------------------------------------------------------------------------------


def test_sketch_stems_sum_to_the_mix(sung: SketchRender) -> None:
    stems = sketch_stems(sung)
    assert tuple(stems) == STEM_NAMES
    for stem in stems.values():
        assert stem.shape == sung.mix.shape and stem.dtype == np.float32
    total = stems["drums"] + stems["bass"] + stems["other"] + stems["vocals"]
    assert float(np.max(np.abs(total - sung.mix))) <= 1e-6
    np.testing.assert_array_equal(stems["vocals"], sung.stems["lead"])  # the mapping, exactly
    np.testing.assert_array_equal(stems["other"], sung.stems["harmony"])


def test_sketch_stems_are_audible_and_distinct(sung: SketchRender) -> None:
    stems = sketch_stems(sung)
    for name, stem in stems.items():
        assert _rms(stem) > 0.01, name
    names = list(stems)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            difference = _rms(stems[a] - stems[b])
            assert difference > 0.5 * max(_rms(stems[a]), _rms(stems[b])), (a, b)


def test_sketch_stems_are_copies(sung: SketchRender) -> None:
    before = sung.mix.copy()
    stems = sketch_stems(sung)
    stems["drums"][:] = 0.0
    np.testing.assert_array_equal(sung.mix, before)
    assert _rms(sung.stems["drums"]) > 0.01


def test_instrumental_lead_goes_to_other() -> None:
    render = _render(instrumental=True)
    stems = sketch_stems(render, instrumental=True)
    assert not stems["vocals"].any()
    np.testing.assert_allclose(
        stems["other"], render.stems["harmony"] + render.stems["lead"], atol=1e-7
    )
    total = sum(stems.values(), np.zeros_like(render.mix))
    assert float(np.max(np.abs(total - render.mix))) <= 1e-6


def test_sketch_stems_need_the_sketch_tracks(sung: SketchRender) -> None:
    partial = SketchRender(sung.sample_rate, sung.mix, {"drums": sung.stems["drums"]})
    with pytest.raises(ValueError, match="harmony"):
        sketch_stems(partial)


# --- render fingerprints and the StemMaker's exact stems ----------------------------------------


def test_fingerprints_tell_renders_apart_but_not_rounding(sung: SketchRender) -> None:
    fingerprint = render_fingerprint(sung.mix, SAMPLE_RATE)
    assert len(fingerprint) == 8  # one block a second
    assert same_render(fingerprint, render_fingerprint(_render().mix, SAMPLE_RATE))
    rounding = sung.mix + np.float32(3e-7) * np.sign(sung.mix)  # what another CPU might give
    assert same_render(fingerprint, render_fingerprint(rounding, SAMPLE_RATE))
    other_seed = render_sketch(
        StyleTags(genre="pop", subgenre=None, family="pop", bpm=110, key="C major"),
        LYRICS, 8.0, 4,
    )  # fmt: skip
    assert not same_render(fingerprint, render_fingerprint(other_seed.mix, SAMPLE_RATE))
    assert not same_render(fingerprint, fingerprint[:-1])


def _stem_maker(tmp_path: Path) -> StemMaker:
    config = PostProcessConfig.model_validate({"c2pa": {"enabled": False}})
    storage = StorageConfig(storage_url=f"file://{tmp_path}/objects")
    return StemMaker(config, storage)


def _task(render: SketchRender, seed: int = 3, **changes: object) -> StemsTask:
    request = RenderRequest(
        job_id="song_x",
        variation=0,
        seed=seed,
        duration_s=8.0,
        tags=StyleTags(genre="pop", subgenre=None, family="pop", bpm=110, key="C major"),
        sections=LYRICS,
        instrumental=False,
        language="en",
    )
    fields: dict[str, object] = {
        "render": request,
        "model": "sketch",
        "model_version": SKETCH_VERSION,
        "sample_rate": SAMPLE_RATE,
        "loudness_lufs": -9.0,  # loud: the limiter shapes the gain curve
        "objects": {},
        "provenance": Provenance("t", 3, "0" * 64, "2026-11-21T00:00:00+00:00"),
        "fingerprint": render_fingerprint(render.mix, SAMPLE_RATE),
    }
    return StemsTask(**{**fields, **changes})  # type: ignore[arg-type]


def test_exact_stems_are_mastered_with_the_song_s_gain_curve(
    sung: SketchRender, tmp_path: Path
) -> None:
    stems = _stem_maker(tmp_path)._exact_stems(_task(sung), lambda step, steps: None)
    assert tuple(stems) == STEM_NAMES
    mastered = normalize_loudness(sung.mix, SAMPLE_RATE, target_lufs=-9.0)
    assert float(mastered.gain.max() - mastered.gain.min()) > 0.01  # not a plain scale
    total = sum(stems.values(), np.zeros_like(sung.mix))
    assert float(np.max(np.abs(total - mastered.audio))) <= 1e-6


def test_exact_stems_refuse_a_render_that_changed(sung: SketchRender, tmp_path: Path) -> None:
    maker = _stem_maker(tmp_path)
    with pytest.raises(StemsUnavailable, match="did not reproduce"):
        maker._exact_stems(_task(sung, seed=4), lambda step, steps: None)
    with pytest.raises(StemsUnavailable, match=r"sketch 0\.9"):
        maker._exact_stems(_task(sung, model_version="0.9"), lambda step, steps: None)


# --- resampling and the residual ---------------------------------------------------------------


def _tones(sample_rate: int, n: int) -> np.ndarray:
    t = np.arange(n) / sample_rate
    left = 0.4 * np.sin(2 * np.pi * 220.0 * t) + 0.2 * np.sin(2 * np.pi * 5_000.0 * t)
    right = 0.3 * np.sin(2 * np.pi * 1_000.0 * t + 0.5) + 0.1 * np.sin(2 * np.pi * 15_000.0 * t)
    return np.stack([left, right]).astype(np.float32)


def test_resampling_round_trip_is_accurate() -> None:
    n = 2 * SAMPLE_RATE + 7
    audio = _tones(SAMPLE_RATE, n)
    at_model = to_model_rate(audio, SAMPLE_RATE)
    assert at_model.dtype == np.float32
    assert at_model.shape == (2, resampled_length(n, SAMPLE_RATE, MODEL_SAMPLE_RATE))
    assert at_model.shape[1] == -(-n * 147 // 160)
    # The tones themselves at 44.1 kHz (away from the filter's edge transients).
    inner = slice(2_000, at_model.shape[1] - 2_000)
    expected = _tones(MODEL_SAMPLE_RATE, at_model.shape[1])
    assert float(np.max(np.abs(at_model[:, inner] - expected[:, inner]))) < 2e-3

    back = from_model_rate(at_model, SAMPLE_RATE, n)
    assert back.shape == audio.shape and back.dtype == np.float32
    inner = slice(2_000, n - 2_000)
    error = back[:, inner] - audio[:, inner]
    assert float(np.max(np.abs(error))) < 2e-3
    assert _rms(error) < 1e-3 * _rms(audio)  # better than -60 dB


def test_from_model_rate_keeps_leading_axes_and_pads() -> None:
    stems = np.ones((4, 2, 441), dtype=np.float32)
    back = from_model_rate(stems, SAMPLE_RATE, 500)
    assert back.shape == (4, 2, 500)
    assert not back[..., 481:].any()  # 441 samples at 44.1 kHz are 480 at 48 kHz, then zeros
    np.testing.assert_array_equal(to_model_rate(stems, MODEL_SAMPLE_RATE), stems)


def test_complete_to_mix_puts_the_residual_in_other() -> None:
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((2, 1000)).astype(np.float32)
    stems = {name: 0.2 * mix for name in STEM_NAMES}
    completed = complete_to_mix(stems, mix)
    for name in ("drums", "bass", "vocals"):
        np.testing.assert_array_equal(completed[name], stems[name])
    np.testing.assert_allclose(completed["other"], 0.4 * mix, atol=1e-6)
    total = sum(completed.values(), np.zeros_like(mix))
    assert float(np.max(np.abs(total - mix))) < 1e-5
    with pytest.raises(ValueError, match="shape"):
        complete_to_mix({**stems, "bass": mix[:, :10]}, mix)
    with pytest.raises(ValueError, match="other"):
        complete_to_mix({"drums": mix}, mix)


# --- tiny htdemucs through Demucs' own loader --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_htdemucs(tmp_path_factory.mktemp("demucs") / "tiny.th")


def test_tiny_checkpoint_is_a_real_demucs_package(tiny_checkpoint: Path) -> None:
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import load_model

    package = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    assert set(package) >= {"klass", "args", "kwargs", "state", "training_args"}
    assert package["klass"] is HTDemucs
    model = load_model(tiny_checkpoint)
    assert isinstance(model, HTDemucs)
    assert model.sources == list(STEM_NAMES) and model.samplerate == MODEL_SAMPLE_RATE
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_tiny_builder_is_idempotent(tiny_checkpoint: Path, tmp_path: Path) -> None:
    modified = tiny_checkpoint.stat().st_mtime_ns
    assert build_tiny_htdemucs(tiny_checkpoint) == tiny_checkpoint
    assert tiny_checkpoint.stat().st_mtime_ns == modified
    foreign = tmp_path / "notes.th"
    foreign.write_text("not a checkpoint")
    with pytest.raises(FileExistsError):
        build_tiny_htdemucs(foreign)
    assert builder_main([str(foreign)]) == 2


@pytest.fixture(scope="module")
def separator(tiny_checkpoint: Path) -> DemucsSeparator:
    separator = DemucsSeparator.from_config(
        StemsConfig(demucs_checkpoint=str(tiny_checkpoint), device="cpu")
    )
    assert separator is not None
    return separator


def test_separate_gives_exact_length_48k_stems_summing_to_input(separator: DemucsSeparator) -> None:
    n = 5 * SAMPLE_RATE + 11
    rng = np.random.default_rng(1)
    audio = (_tones(SAMPLE_RATE, n) + 0.05 * rng.standard_normal((2, n))).astype(np.float32)
    reports: list[tuple[int, int]] = []
    stems = separator.separate(audio, SAMPLE_RATE, on_progress=lambda d, t: reports.append((d, t)))
    assert tuple(stems) == STEM_NAMES == separator.sources
    for stem in stems.values():
        assert stem.shape == (2, n) and stem.dtype == np.float32
        assert np.isfinite(stem).all() and _rms(stem) > 1e-4
    assert _rms(stems["drums"] - stems["bass"]) > 1e-4
    total = sum(stems.values(), np.zeros_like(audio))
    assert float(np.max(np.abs(total - audio))) < 1e-5
    assert reports and reports[-1][0] == reports[-1][1]
    separator.check_health()


def test_separate_mono_and_empty(separator: DemucsSeparator) -> None:
    mono = _tones(SAMPLE_RATE, SAMPLE_RATE)[:1]
    stems = separator.separate(mono, SAMPLE_RATE)
    assert all(stem.shape == (1, SAMPLE_RATE) for stem in stems.values())
    assert float(np.max(np.abs(sum(stems.values(), np.zeros_like(mono)) - mono))) < 1e-5
    empty = separator.separate(np.zeros((2, 0), dtype=np.float32), SAMPLE_RATE)
    assert all(stem.shape == (2, 0) for stem in empty.values())
    with pytest.raises(ValueError, match="channels"):
        separator.separate(np.zeros((3, 10), dtype=np.float32), SAMPLE_RATE)


# --- configuration errors ----------------------------------------------------------------------


def test_unset_checkpoint_means_no_separator() -> None:
    assert DemucsSeparator.from_config(StemsConfig()) is None
    with pytest.raises(ValueError, match=r"postprocess\.stems\.demucs_checkpoint"):
        DemucsSeparator(None)


def test_missing_checkpoint_names_the_setting(tmp_path: Path) -> None:
    config = StemsConfig(demucs_checkpoint=str(tmp_path / "absent.th"), device="cpu")
    with pytest.raises(ValueError, match=r"not found.*postprocess\.stems\.demucs_checkpoint") as e:
        DemucsSeparator.from_config(config)
    assert "make_tiny_htdemucs.py" in str(e.value)


def test_broken_checkpoint_names_the_setting(tmp_path: Path) -> None:
    import torch

    garbage = tmp_path / "garbage.th"
    garbage.write_bytes(b"\x00not a torch file")
    not_a_package = tmp_path / "state_only.th"
    torch.save({"weight": torch.zeros(3)}, not_a_package)
    for path in (garbage, not_a_package):
        config = StemsConfig(demucs_checkpoint=str(path), device="cpu")
        with pytest.raises(
            ValueError, match=r"not a loadable.*postprocess\.stems\.demucs_checkpoint"
        ):
            DemucsSeparator.from_config(config)


def test_unavailable_device_names_the_setting() -> None:
    import torch

    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"postprocess\.stems\.device"):
            pick_device("cuda")
