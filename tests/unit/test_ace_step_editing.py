"""AceStepSongModel edits on the tiny real-format checkpoint: extend, repaint, cover, reference
audio, what each call takes and what it refuses. No Ray."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")

from pipeline.editing import EDIT_CROSSFADE_S
from pipeline.engines.ace_step import AceStepSongModel
from pipeline.lyrics import LyricSection
from pipeline.song_contracts import COVER, EXTEND, REPAINT
from pipeline.song_models import RenderRequest, SongEdit
from pipeline.tags import StyleTags
from pipeline.tiny.acestep import (
    BUILDER_VERSION,
    _built_by_an_older_version,
    copy_without_cover_modules,
)
from serve.config import DecoderPoolConfig

SR = 48_000
STEPS = 3
SOURCE_S = 4.0
FADE = round(EDIT_CROSSFADE_S * SR)
TAGS = StyleTags(
    genre="indie pop",
    subgenre=None,
    family="pop",
    moods=["happy"],
    bpm=118,
    key="F# minor",
    vocal="female",
    caption="indie pop, happy, female vocals, acoustic guitar",
)
SECTIONS = [LyricSection("verse", ["Sailing home tonight", "Over the open sea"])]


def song(seconds: float, seed: int) -> np.ndarray:
    """A stand-in source song: two detuned tones and a little noise, float32 [2, n]."""
    t = np.arange(round(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    left = 0.4 * np.sin(2 * np.pi * (220 + 20 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    right = 0.4 * np.sin(2 * np.pi * (330 + 20 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


SOURCE = song(SOURCE_S, 0)


def request(
    seed: int = 7,
    duration_s: float = SOURCE_S,
    *,
    edit: SongEdit | None = None,
    source_audio: np.ndarray | None = None,
    reference_audio: np.ndarray | None = None,
) -> RenderRequest:
    return RenderRequest(
        job_id="job",
        variation=seed,
        seed=seed,
        duration_s=duration_s,
        tags=TAGS,
        sections=SECTIONS,
        instrumental=False,
        language="en",
        edit=edit,
        reference_key=None if reference_audio is None else "refs/timbre.npy",
        source_audio=source_audio,
        reference_audio=reference_audio,
    )


def extend(seed: int = 7, to_s: float = 6.0) -> RenderRequest:
    return request(
        seed,
        to_s,
        edit=SongEdit(EXTEND, "songs/src.npy", SOURCE_S),
        source_audio=SOURCE,
    )


def repaint(seed: int = 7, start_s: float = 1.0, end_s: float = 2.5) -> RenderRequest:
    return request(
        seed,
        edit=SongEdit(REPAINT, "songs/src.npy", SOURCE_S, start_s=start_s, end_s=end_s),
        source_audio=SOURCE,
    )


def cover(seed: int = 7, source: np.ndarray = SOURCE, strength: float = 0.7) -> RenderRequest:
    return request(
        seed,
        edit=SongEdit(COVER, "songs/src.npy", SOURCE_S, strength=strength),
        source_audio=source,
    )


def pool_for(path: Path, tasks: list[str] | None = None) -> DecoderPoolConfig:
    return DecoderPoolConfig.model_validate(
        {
            "name": "DiT",
            "model": "ace-step",
            "ace_step": {"path": str(path), "device": "cpu", "num_inference_steps": STEPS},
            "tasks": tasks,
        }
    )


def no_progress(step: int, steps: int) -> None:
    return None


def render_one(model: AceStepSongModel, req: RenderRequest) -> np.ndarray:
    return model.render([req], no_progress)[0]


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


@pytest.fixture(scope="module")
def model(tiny_acestep_checkpoint: Path) -> AceStepSongModel:
    return AceStepSongModel(pool_for(tiny_acestep_checkpoint))


@pytest.fixture(scope="module")
def plain(model: AceStepSongModel) -> np.ndarray:
    """The text2music render of seed 7 at the source's length."""
    return render_one(model, request())


# --------------------------------------------------------------------------------------------
# Extend, repaint, cover, reference


def test_extension_keeps_the_source_exactly_and_renders_in_a_batch(model: AceStepSongModel) -> None:
    progress: list[tuple[int, int]] = []
    plain_request = request(seed=3, duration_s=5.0)
    rendered_plain, extended = model.render(
        [plain_request, extend()], lambda s, n: progress.append((s, n))
    )
    assert rendered_plain.shape == (2, 5 * SR)
    assert extended.shape == (2, 6 * SR) and extended.dtype == np.float32
    assert np.array_equal(extended[:, : SOURCE.shape[-1]], SOURCE)
    tail = extended[:, SOURCE.shape[-1] :]
    assert np.isfinite(tail).all() and np.sqrt(np.mean(tail**2)) > 1e-3  # new music, not silence
    # Two calls (the extension has its own), progress counted across both.
    assert progress == [(step, 2 * STEPS) for step in range(1, 2 * STEPS + 1)]


def test_repaint_keeps_everything_outside_the_window_and_remakes_it(
    model: AceStepSongModel,
) -> None:
    start, end = SR, round(2.5 * SR)
    out = render_one(model, repaint())
    assert out.shape == SOURCE.shape
    assert np.array_equal(out[:, :start], SOURCE[:, :start])
    assert np.array_equal(out[:, end:], SOURCE[:, end:])
    inner = slice(start + FADE, end - FADE)
    assert relative_difference(out[:, inner], SOURCE[:, inner]) > 0.5
    # Deterministic: the VAE's posterior samples of the source come from the request's seed.
    assert np.array_equal(render_one(model, repaint()), out)


def test_a_repaint_window_reaching_the_end_has_no_source_after_it(model: AceStepSongModel) -> None:
    out = render_one(model, repaint(start_s=3.0, end_s=SOURCE_S))
    assert np.array_equal(out[:, : 3 * SR], SOURCE[:, : 3 * SR])
    assert relative_difference(out[:, 3 * SR + FADE :], SOURCE[:, 3 * SR + FADE :]) > 0.5


def test_cover_follows_its_source(model: AceStepSongModel, plain: np.ndarray) -> None:
    covered = render_one(model, cover())
    assert covered.shape == SOURCE.shape and np.isfinite(covered).all()
    assert relative_difference(covered, plain) > 0.05  # not the text2music render of the seed
    other_source = render_one(model, cover(source=song(SOURCE_S, 1)))
    assert relative_difference(other_source, covered) > 0.01  # the source conditions it


def test_reference_audio_conditions_any_task(model: AceStepSongModel, plain: np.ndarray) -> None:
    referenced = render_one(model, request(reference_audio=song(3.0, 2)))
    assert referenced.shape == plain.shape
    # The tiny timbre encoder is weak, but the change is far above float noise (the same seed
    # without a reference renders bit-identically).
    assert relative_difference(referenced, plain) > 1e-3


# --------------------------------------------------------------------------------------------
# Batching


def test_edits_and_references_never_share_a_call(model: AceStepSongModel) -> None:
    batch = [
        request(seed=1),
        extend(seed=1),
        request(seed=2),
        repaint(seed=1),
        repaint(seed=1),  # even an identical edit renders alone
        request(seed=3, reference_audio=SOURCE),
        cover(seed=1),
        request(seed=4),
    ]
    assert model.model_calls(batch) == [[0, 2, 7], [1], [3], [4], [5], [6]]


# --------------------------------------------------------------------------------------------
# Refusals (all before any rendering)


def test_an_edit_without_its_source_audio_is_refused(model: AceStepSongModel) -> None:
    for edit_request in (extend(), repaint(), cover()):
        missing = dataclasses.replace(edit_request, source_audio=None)
        with pytest.raises(ValueError, match=r"source_audio.*songs/src\.npy"):
            model.render([request(), missing], no_progress)


def test_a_reference_key_without_its_audio_is_refused(model: AceStepSongModel) -> None:
    with pytest.raises(ValueError, match=r"refs/timbre\.npy.*not loaded"):
        model.render([dataclasses.replace(request(), reference_key="refs/timbre.npy")], no_progress)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (dataclasses.replace(extend(), duration_s=SOURCE_S), "must exceed the source"),
        (repaint(start_s=2.0, end_s=2.0), "window .* is empty"),
        (repaint(start_s=5.0, end_s=6.0), "window .* is empty"),
        (cover(strength=1.5), r"strength must be in \[0, 1\]"),
        (dataclasses.replace(repaint(), source_audio=SOURCE[0]), r"\[2, n\]"),
        (dataclasses.replace(repaint(), source_audio=SOURCE * np.nan), "NaN"),
        (request(reference_audio=np.zeros((2, 0), np.float32)), r"\[2, n\]"),
        (
            dataclasses.replace(request(), edit=SongEdit("remix", "songs/src.npy", 4.0)),
            "cannot 'remix'",
        ),
    ],
)
def test_malformed_edits_are_refused(
    model: AceStepSongModel, bad: RenderRequest, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        model.render([bad], no_progress)


def test_a_checkpoint_without_the_audio_tokenizer_refuses_covers(
    tiny_acestep_checkpoint: Path, tmp_path: Path
) -> None:
    """Like the official turbo checkpoints: text2music, repaint and extend, but no cover. A pool
    that says it serves covers from one fails at start-up, naming the setting; a pool that
    serves the rest starts, and a cover that reaches it anyway is refused before rendering."""
    turbo_like = copy_without_cover_modules(tiny_acestep_checkpoint, tmp_path / "turbo-like")
    assert not {"audio_tokenizer", "audio_token_detokenizer"} & set(
        json.loads((turbo_like / "model_index.json").read_text())
    )
    with pytest.raises(ValueError, match=r"models\.pools\[DiT\]\.tasks") as error:
        AceStepSongModel(pool_for(turbo_like))
    assert str(turbo_like) in str(error.value) and "audio_tokenizer" in str(error.value)
    without = AceStepSongModel(pool_for(turbo_like, ["text2music", "extend", "repaint"]))
    with pytest.raises(ValueError, match="audio_tokenizer and audio_token_detokenizer") as error:
        without.render([request(), cover()], no_progress)
    assert str(turbo_like) in str(error.value)


def test_older_builds_of_the_tiny_checkpoint_are_rebuilt(tmp_path: Path) -> None:
    """A version-1 build (no cover modules) is the builder's own to replace; a directory with
    foreign files is not."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "TINY_MODEL.json").write_text(
        json.dumps({"builder": "scripts/make_tiny_acestep.py", "seed": 1234})
    )
    assert _built_by_an_older_version(old)
    (old / "TINY_MODEL.json").write_text(
        json.dumps({"builder": "scripts/make_tiny_acestep.py", "version": BUILDER_VERSION})
    )
    assert not _built_by_an_older_version(old)
    assert not _built_by_an_older_version(tmp_path / "missing")


# --------------------------------------------------------------------------------------------
# The seeded VAE encoding is the pipeline's own


def test_seeded_encoding_is_the_pipelines_own(model: AceStepSongModel) -> None:
    """With `encode_generator` the subclass draws exactly what AceStepPipeline draws from the
    global RNG seeded alike (CPU), for source audio (repaint, cover) and reference audio."""
    import torch

    pipeline = model._pipeline
    source = torch.from_numpy(song(1.0, 0))
    reference = torch.from_numpy(song(3.0, 2))

    @torch.no_grad()  # as in the pipeline's __call__
    def both(prepare: str, **kwargs: Any) -> tuple[Any, Any]:
        pipeline.encode_generator = torch.Generator("cpu").manual_seed(11)
        try:
            seeded = getattr(pipeline, prepare)(**kwargs)
        finally:
            pipeline.encode_generator = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(11)
            return seeded, getattr(pipeline, prepare)(**kwargs)

    common = {"device": torch.device("cpu"), "dtype": torch.float32, "batch_size": 1}
    for task in ("repaint", "cover"):
        (ours, frames), (theirs, their_frames) = both(
            "prepare_src_latents", src_audio=source, task_type=task, **common
        )
        assert frames == their_frames and torch.equal(ours, theirs)
    # A reference is cut to 30 s (3 × 10 s) at the pipeline's sample rate; a lower rate makes
    # that 3 s here, the same arithmetic for both classes at a tenth of the encoding time.
    pipeline.sample_rate = SR // 10
    try:
        (ours_ref, order), (theirs_ref, their_order) = both(
            "prepare_reference_audio_latents", reference_audio=reference, **common
        )
    finally:
        pipeline.sample_rate = SR
    assert torch.equal(ours_ref, theirs_ref) and torch.equal(order, their_order)
