"""AceStepSongModel on a real (tiny, random-weight) diffusers checkpoint: loading, rendering,
determinism, progress, LoRA switching and LoRA file validation. No Ray."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from pipeline.engines.ace_step import AceStepSongModel
from pipeline.engines.ace_step_lora import lora_target_modules, lora_validator, validate_lora_file
from pipeline.lyrics import LyricSection
from pipeline.song_models import RenderRequest, load_song_model
from pipeline.tags import StyleTags
from pipeline.tiny.acestep import LORA_FILE, build_tiny_acestep, is_complete
from serve.config import DecoderPoolConfig

SR = 48_000
STEPS = 4
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
SECTIONS = [
    LyricSection("verse", ["Sailing home tonight", "Over the open sea"]),
    LyricSection("chorus", ["Sing with me", "Never let go"]),
]


def request(
    seed: int,
    duration_s: float = 5.0,
    *,
    lora_id: str | None = None,
    lora_scale: float = 1.0,
    tags: StyleTags = TAGS,
    instrumental: bool = False,
) -> RenderRequest:
    return RenderRequest(
        job_id="job",
        variation=seed,
        seed=seed,
        duration_s=duration_s,
        tags=tags,
        sections=[] if instrumental else SECTIONS,
        instrumental=instrumental,
        language="en",
        lora_id=lora_id,
        lora_scale=lora_scale,
    )


def pool_for(path: Path | str, steps: int = STEPS) -> DecoderPoolConfig:
    return DecoderPoolConfig(
        name="DiT",
        model="ace-step",
        ace_step={"path": str(path), "device": "cpu", "num_inference_steps": steps},
    )


def no_progress(step: int, steps: int) -> None:
    return None


def render_one(model: AceStepSongModel, req: RenderRequest) -> np.ndarray:
    return model.render([req], no_progress)[0]


@pytest.fixture(scope="module")
def checkpoint(tiny_acestep_checkpoint: Path) -> Path:
    return tiny_acestep_checkpoint


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> Iterator[AceStepSongModel]:
    loaded = load_song_model(pool_for(checkpoint))
    assert isinstance(loaded, AceStepSongModel)
    yield loaded


@pytest.fixture(scope="module")
def lora_model(checkpoint: Path) -> AceStepSongModel:
    """A second instance with both LoRAs loaded, so LoRA tests never disturb `model`."""
    instance = AceStepSongModel(pool_for(checkpoint))
    instance.load_lora("tiny-a", checkpoint / "loras" / "tiny-a" / LORA_FILE)
    instance.load_lora("tiny-b", checkpoint / "loras" / "tiny-b")  # a directory works too
    return instance


# --------------------------------------------------------------------------------------------
# Checkpoint builder


def test_builder_is_idempotent_and_complete(checkpoint: Path) -> None:
    assert is_complete(checkpoint)
    before = {p: p.stat().st_mtime_ns for p in checkpoint.rglob("*") if p.is_file()}
    build_tiny_acestep(checkpoint)
    after = {p: p.stat().st_mtime_ns for p in checkpoint.rglob("*") if p.is_file()}
    assert before == after
    assert sum(p.stat().st_size for p in before) < 5_000_000


# --------------------------------------------------------------------------------------------
# Loading


def test_model_identity(model: AceStepSongModel) -> None:
    assert model.name == "ace-step"
    assert model.sample_rate == SR
    assert model.version == "tiny:turbo"
    assert model.device == "cpu"
    model.check_health()


def test_missing_checkpoint_names_path_and_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError) as error:
        AceStepSongModel(pool_for(missing))
    message = str(error.value)
    assert str(missing) in message
    assert "models.pools[DiT].ace_step.path" in message
    assert "scripts/make_tiny_acestep.py" in message


def test_directory_without_model_index_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "transformer").mkdir()
    with pytest.raises(ValueError, match=r"no model_index\.json.*make_tiny_acestep"):
        AceStepSongModel(pool_for(tmp_path))


def test_broken_component_is_rejected(checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in checkpoint.iterdir():
        if item.name != "transformer":
            (broken / item.name).symlink_to(item)
    (broken / "transformer").mkdir()
    (broken / "transformer" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="could not be loaded") as error:
        AceStepSongModel(pool_for(broken))
    assert str(broken) in str(error.value)


# --------------------------------------------------------------------------------------------
# Rendering


def test_mixed_durations_shapes_and_order(model: AceStepSongModel) -> None:
    durations = [5.0, 7.3, 5.0, 6.0]
    requests = [request(seed, duration) for seed, duration in enumerate(durations)]
    outputs = model.render(requests, no_progress)
    assert [o.shape for o in outputs] == [(2, round(d * SR)) for d in durations]
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in outputs)
    assert all(0.1 < np.abs(o).max() <= 1.0 for o in outputs)
    # Request order is kept across groups: each output is its own request's solo render.
    for req, output in zip(requests, outputs, strict=True):
        np.testing.assert_allclose(output, render_one(model, req), atol=1e-5)


def test_same_seed_same_audio_and_seeds_differ(model: AceStepSongModel) -> None:
    first = render_one(model, request(7))
    again = render_one(model, request(7))
    other = render_one(model, request(8))
    assert np.array_equal(first, again)
    assert np.abs(first - other).max() > 0.1


def test_batch_of_three_in_one_call_matches_solo(model: AceStepSongModel) -> None:
    steps_seen: list[tuple[int, int]] = []
    batch = model.render(
        [request(1), request(2), request(3)], lambda s, n: steps_seen.append((s, n))
    )
    # One pipeline call: STEPS progress reports, not 3 × STEPS.
    assert steps_seen == [(s, STEPS) for s in range(1, STEPS + 1)]
    assert len(batch) == 3
    for seed, output in zip((1, 2, 3), batch, strict=True):
        # Batched kernels round differently from single-row ones; nothing else differs.
        np.testing.assert_allclose(output, render_one(model, request(seed)), atol=1e-5)


OTHER_TAGS = dataclasses.replace(
    TAGS,
    genre="techno",
    caption="dark techno, hypnotic, analog synth, deep bass",
    bpm=130,
    key="A minor",
)
OTHER_SECTIONS = [LyricSection("chorus", ["Lights go down", "Into the night we run"])]


def other_song(seed: int) -> RenderRequest:
    """A request of another song: caption, bpm, key, lyrics and language all differ."""
    return dataclasses.replace(
        request(seed), tags=OTHER_TAGS, sections=OTHER_SECTIONS, language="es"
    )


def test_bucketed_encoding_is_the_pipelines_own(model: AceStepSongModel) -> None:
    # With multiples of 1 and one bpm/key for the call, the subclass must encode exactly as
    # diffusers' AceStepPipeline does: same formatting, tokens, hidden states and masks.
    from diffusers import AceStepPipeline

    pipeline = model._pipeline
    arguments = {
        "prompt": [TAGS.caption, OTHER_TAGS.caption],
        "lyrics": ["[verse]\nSailing home tonight", "[chorus]\nLights go down low"],
        "device": "cpu",
        "vocal_language": ["en", "es"],
        "audio_duration": 5.0,
        "bpm": 118,
        "keyscale": "F# minor",
        "timesignature": "4",
    }
    saved = pipeline.text_pad_multiple, pipeline.lyrics_pad_multiple
    pipeline.text_pad_multiple = pipeline.lyrics_pad_multiple = 1
    try:
        mine = pipeline.encode_prompt(**arguments)
    finally:
        pipeline.text_pad_multiple, pipeline.lyrics_pad_multiple = saved
    theirs = AceStepPipeline.encode_prompt(pipeline, **arguments)
    for my_tensor, their_tensor in zip(mine, theirs, strict=True):
        assert my_tensor.shape == their_tensor.shape
        assert bool((my_tensor == their_tensor).all())


def test_different_songs_share_a_call_and_render_as_alone(model: AceStepSongModel) -> None:
    mine, theirs = request(5), other_song(9)
    assert model.model_calls([mine, theirs]) == [[0, 1]]
    steps_seen: list[tuple[int, int]] = []
    batch = model.render([mine, theirs], lambda s, n: steps_seen.append((s, n)))
    assert steps_seen == [(s, STEPS) for s in range(1, STEPS + 1)]  # one pipeline call
    np.testing.assert_allclose(batch[0], render_one(model, mine), atol=1e-5)
    np.testing.assert_allclose(batch[1], render_one(model, theirs), atol=1e-5)
    assert np.abs(batch[0] - batch[1]).max() > 0.1


def test_padding_to_the_longest_row_would_leak_between_requests(model: AceStepSongModel) -> None:
    # Why rows are padded to buckets: padded only to the batch's longest row (the base
    # pipeline's behaviour), a request's audio depends on its batch mate's text length.
    pipeline = model._pipeline
    longer = dataclasses.replace(
        other_song(9), tags=dataclasses.replace(OTHER_TAGS, caption=OTHER_TAGS.caption * 3)
    )
    saved = pipeline.text_pad_multiple, pipeline.lyrics_pad_multiple
    pipeline.text_pad_multiple = pipeline.lyrics_pad_multiple = 1
    try:
        alone = render_one(model, request(5))
        beside_longer = model._call_pipeline(
            model._group_key(request(5)),
            [request(5), longer],
            no_progress,
            steps_before=0,
            total_steps=STEPS,
        )
    finally:
        pipeline.text_pad_multiple, pipeline.lyrics_pad_multiple = saved
    leaked = model._to_numpy(beside_longer[0], alone.shape[-1])
    assert np.abs(leaked - alone).max() > 1e-3


def test_rows_of_different_buckets_get_separate_calls(model: AceStepSongModel) -> None:
    long_caption = dataclasses.replace(TAGS, caption=", ".join([TAGS.caption] * 8))
    requests = [request(1), request(2, tags=long_caption), other_song(3)]
    assert model.model_calls(requests) == [[0, 2], [1]]
    outputs = model.render(requests, no_progress)
    np.testing.assert_allclose(outputs[1], render_one(model, requests[1]), atol=1e-5)


def test_progress_counts_across_groups(model: AceStepSongModel) -> None:
    steps_seen: list[tuple[int, int]] = []
    model.render([request(1, 5.0), request(2, 6.0)], lambda s, n: steps_seen.append((s, n)))
    assert steps_seen == [(s, 2 * STEPS) for s in range(1, 2 * STEPS + 1)]


def test_conditioning_changes_audio(model: AceStepSongModel) -> None:
    base = render_one(model, request(3))
    other_key = dataclasses.replace(TAGS, key="C major", bpm=90)
    assert np.abs(render_one(model, request(3, tags=other_key)) - base).max() > 1e-3
    assert np.abs(render_one(model, request(3, instrumental=True)) - base).max() > 1e-3


def test_invalid_duration_is_rejected(model: AceStepSongModel) -> None:
    with pytest.raises(ValueError, match="duration_s"):
        model.render([request(1, 0.0)], no_progress)
    assert model.render([], no_progress) == []


# --------------------------------------------------------------------------------------------
# LoRA


def test_lora_switching_is_exact(model: AceStepSongModel, lora_model: AceStepSongModel) -> None:
    base = render_one(model, request(5))
    assert np.array_equal(render_one(lora_model, request(5)), base)  # loading leaves base alone

    lora_a = render_one(lora_model, request(5, lora_id="tiny-a"))
    lora_b = render_one(lora_model, request(5, lora_id="tiny-b"))
    lora_a_again = render_one(lora_model, request(5, lora_id="tiny-a"))
    base_after = render_one(lora_model, request(5))
    scale_zero = render_one(lora_model, request(5, lora_id="tiny-a", lora_scale=0.0))
    half = render_one(lora_model, request(5, lora_id="tiny-a", lora_scale=0.5))

    def rms_change(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.sqrt(np.mean((x - y) ** 2)) / np.sqrt(np.mean(y**2)))

    assert rms_change(lora_a, base) > 0.2
    assert rms_change(lora_a, lora_b) > 0.2
    assert rms_change(half, base) > 0.01 and rms_change(half, lora_a) > 0.01
    assert np.array_equal(lora_a_again, lora_a)
    assert np.array_equal(base_after, base)
    assert np.array_equal(scale_zero, base)


def test_mixed_lora_batch_matches_separate_renders(lora_model: AceStepSongModel) -> None:
    requests = [request(6, lora_id="tiny-b"), request(6), request(6, lora_id="tiny-a")]
    mixed = lora_model.render(requests, no_progress)
    for req, output in zip(requests, mixed, strict=True):
        assert np.array_equal(output, render_one(lora_model, req))


def test_failed_lora_render_restores_base(
    model: AceStepSongModel, lora_model: AceStepSongModel
) -> None:
    def fail(step: int, steps: int) -> None:
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        lora_model.render([request(5, lora_id="tiny-a")], fail)
    assert np.array_equal(render_one(lora_model, request(5)), render_one(model, request(5)))


def test_an_abandoned_render_stops_at_the_next_denoising_step(
    model: AceStepSongModel, lora_model: AceStepSongModel
) -> None:
    """What a canceled song does to its decoder: the step callback ends the pipeline call at the
    next step, and the model (its LoRA state too) renders as before afterwards."""
    from deployments.progress import WorkStopped, with_progress

    requests = [request(8, 5.0, lora_id="tiny-a"), request(9, 6.0)]  # two pipeline calls
    reports: list[object] = []

    async def render() -> None:
        rendering = with_progress(
            lambda on_progress: lora_model.render(requests, on_progress),
            stop_when=lambda: len(reports) >= 2,
        )
        async for item in rendering:
            reports.append(item)

    with pytest.raises(WorkStopped):
        asyncio.run(render())
    assert reports == [(1, 2 * STEPS), (2, 2 * STEPS)]  # of the first call's steps
    assert np.array_equal(
        render_one(lora_model, request(9, 6.0)), render_one(model, request(9, 6.0))
    )


def test_unknown_lora_is_a_key_error(lora_model: AceStepSongModel) -> None:
    with pytest.raises(KeyError, match=r"'nope' is not loaded") as refused:
        lora_model.render([request(1), request(1, lora_id="nope")], no_progress)
    # The loaded ones are other owners' LoRAs: never named in an error a song may show.
    assert "tiny-a" not in str(refused.value)


def test_lora_refs_with_slashes_and_dots_load_and_render(
    checkpoint: Path, lora_model: AceStepSongModel
) -> None:
    """Refs are `<scope>/<id>` and ids may hold dots; PEFT refuses both in adapter names."""
    instance = AceStepSongModel(pool_for(checkpoint))
    instance.load_lora("own_abc/my.style-v1.2", checkpoint / "loras" / "tiny-a" / LORA_FILE)
    assert instance.loaded_loras() == ["own_abc/my.style-v1.2"]
    rendered = render_one(instance, request(4, lora_id="own_abc/my.style-v1.2"))
    assert np.array_equal(rendered, render_one(lora_model, request(4, lora_id="tiny-a")))
    instance.unload_lora("own_abc/my.style-v1.2")
    assert instance.loaded_loras() == []


def test_concurrent_renders_never_share_adapters(lora_model: AceStepSongModel) -> None:
    loras: list[str | None] = ["tiny-a", "tiny-b", None]
    expected = {lora: render_one(lora_model, request(9, lora_id=lora)) for lora in loras}
    failures: list[str | None] = []

    def worker(lora: str | None) -> None:
        for _ in range(3):
            output = render_one(lora_model, request(9, lora_id=lora))
            if not np.array_equal(output, expected[lora]):
                failures.append(lora)

    threads = [threading.Thread(target=worker, args=(lora,)) for lora in loras]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_load_unload_and_reload(checkpoint: Path) -> None:
    instance = AceStepSongModel(pool_for(checkpoint))
    base = render_one(instance, request(4))
    lora_path = checkpoint / "loras" / "tiny-a" / LORA_FILE
    instance.load_lora("a", lora_path)
    instance.load_lora("b", checkpoint / "loras" / "tiny-b" / LORA_FILE)
    assert instance.loaded_loras() == ["a", "b"]
    with_a = render_one(instance, request(4, lora_id="a"))

    instance.unload_lora("a")
    instance.unload_lora("a")  # not loaded: a no-op
    assert instance.loaded_loras() == ["b"]
    with pytest.raises(KeyError):
        render_one(instance, request(4, lora_id="a"))
    assert np.array_equal(render_one(instance, request(4)), base)

    instance.load_lora("a", lora_path)
    assert np.array_equal(render_one(instance, request(4, lora_id="a")), with_a)
    instance.load_lora("a", lora_path)  # replacing an id keeps one adapter
    assert instance.loaded_loras() == ["b", "a"]

    with pytest.raises(ValueError, match="rank 4"):
        instance.load_lora("c", lora_path, max_rank=2)
    assert instance.loaded_loras() == ["b", "a"]


# --------------------------------------------------------------------------------------------
# LoRA file validation


@pytest.fixture(scope="module")
def targets(checkpoint: Path) -> dict[str, tuple[int, int]]:
    return lora_target_modules(checkpoint)


def write_lora(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors, str(path))
    return path


def test_validate_accepts_the_tiny_loras(
    checkpoint: Path, targets: dict[str, tuple[int, int]], model: AceStepSongModel
) -> None:
    assert targets == model.lora_target_modules()
    assert len(targets) == 2 * 2 * 4  # 2 layers × (self, cross) attention × q, k, v, out
    info = validate_lora_file(
        checkpoint / "loras" / "tiny-a" / LORA_FILE, max_rank=64, expected_modules=targets
    )
    assert info["rank"] == 4
    assert info["keys"] == 2 * len(targets)
    assert info["modules"] == sorted(targets)
    # A plain set of names works too (no shape checks).
    assert (
        validate_lora_file(
            checkpoint / "loras" / "tiny-b", max_rank=4, expected_modules=set(targets)
        )["rank"]
        == 4
    )


def test_validate_rejects_pickles_and_other_formats(
    tmp_path: Path, targets: dict[str, tuple[int, int]]
) -> None:
    import torch

    pickled = tmp_path / "lora.bin"
    torch.save({"transformer.layers.0.self_attn.to_q.lora_A.weight": torch.zeros(4, 32)}, pickled)
    with pytest.raises(ValueError, match="pickle"):
        validate_lora_file(pickled, max_rank=64, expected_modules=targets)

    text = tmp_path / "lora.safetensors"
    text.write_text("definitely not a tensor file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        validate_lora_file(text, max_rank=64, expected_modules=targets)

    lying = tmp_path / "lying.safetensors"
    header = json.dumps(
        {"x.lora_A.weight": {"dtype": "F32", "shape": [4, 32], "data_offsets": [0, 512]}}
    )
    lying.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0" * 8)
    with pytest.raises(ValueError, match="inconsistent offsets"):
        validate_lora_file(lying, max_rank=64, expected_modules=targets)

    with pytest.raises(ValueError, match=r"the limit is 10$"):
        validate_lora_file(
            tmp_path / "lying.safetensors", max_rank=64, expected_modules=targets, max_bytes=10
        )


def test_validate_rejects_foreign_keys_and_shapes(
    tmp_path: Path, targets: dict[str, tuple[int, int]]
) -> None:
    module = "layers.0.self_attn.to_q"
    in_features, out_features = targets[module]
    rank_a = np.zeros((4, in_features), np.float32)
    rank_b = np.zeros((out_features, 4), np.float32)

    foreign = write_lora(
        tmp_path / "foreign.safetensors",
        {
            "transformer.layers.7.self_attn.to_q.lora_A.weight": rank_a,
            "transformer.layers.7.self_attn.to_q.lora_B.weight": rank_b,
        },
    )
    with pytest.raises(ValueError, match=r"layers\.7\.self_attn\.to_q.*not an attention"):
        validate_lora_file(foreign, max_rank=64, expected_modules=targets)

    unet = write_lora(tmp_path / "unet.safetensors", {"unet.down.lora.weight": rank_a})
    with pytest.raises(ValueError, match="not a diffusers LoRA key"):
        validate_lora_file(unet, max_rank=64, expected_modules=targets)

    half = write_lora(
        tmp_path / "half.safetensors", {f"transformer.{module}.lora_A.weight": rank_a}
    )
    with pytest.raises(ValueError, match="lacks its lora_A or lora_B"):
        validate_lora_file(half, max_rank=64, expected_modules=targets)

    wide = write_lora(
        tmp_path / "wide.safetensors",
        {
            f"transformer.{module}.lora_A.weight": np.zeros((4, in_features * 2), np.float32),
            f"transformer.{module}.lora_B.weight": rank_b,
        },
    )
    with pytest.raises(ValueError, match="another model size"):
        validate_lora_file(wide, max_rank=64, expected_modules=targets)


def test_validate_rejects_rank_above_limit(
    tmp_path: Path, targets: dict[str, tuple[int, int]]
) -> None:
    module = "layers.1.cross_attn.to_out.0"
    in_features, out_features = targets[module]
    big = write_lora(
        tmp_path / "big.safetensors",
        {
            f"transformer.{module}.lora_A.weight": np.zeros((16, in_features), np.float32),
            f"transformer.{module}.lora_B.weight": np.zeros((out_features, 16), np.float32),
        },
    )
    with pytest.raises(ValueError, match=r"rank 16 .* exceeds the limit 8"):
        validate_lora_file(big, max_rank=8, expected_modules=targets)
    assert validate_lora_file(big, max_rank=16, expected_modules=targets)["rank"] == 16


def test_lora_validator_checks_uploaded_bytes(checkpoint: Path) -> None:
    validate = lora_validator(checkpoint, max_rank=4)
    weights = (checkpoint / "loras" / "tiny-a" / LORA_FILE).read_bytes()
    assert validate(weights)["rank"] == 4
    with pytest.raises(ValueError, match="exceeds the limit 2"):
        lora_validator(checkpoint, max_rank=2)(weights)
    with pytest.raises(ValueError, match="pickle"):
        validate(b"\x80\x04\x95" + b"\0" * 64)
    with pytest.raises(ValueError, match=r"cannot read the transformer config"):
        lora_validator(checkpoint / "missing", max_rank=4)


def test_one_at_a_time_decode_equals_the_pipelines_batched_decode(model: AceStepSongModel) -> None:
    # CPU pools take latents from the pipeline and decode each song alone; that must give what
    # the pipeline's own decode and normalisation give for the whole batch.
    requests = [request(seed=s, duration_s=5.0) for s in (1, 2, 3)]
    assert model._decode_one_at_a_time  # this machine has no GPU
    one_at_a_time = model.render(requests, no_progress)
    model._decode_one_at_a_time = False
    try:
        batched = model.render(requests, no_progress)
    finally:
        model._decode_one_at_a_time = True
    for mine, theirs in zip(one_at_a_time, batched, strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-5)


def test_a_missing_accelerator_names_the_pool_setting(checkpoint: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    pool = DecoderPoolConfig(
        name="DiT_CUDA", model="ace-step", ace_step={"path": str(checkpoint), "device": "cuda"}
    )
    with pytest.raises(ValueError, match=r"models\.pools\[DiT_CUDA\]\.ace_step\.device"):
        AceStepSongModel(pool)
