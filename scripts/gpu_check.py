"""The GPU check of issue 11 item 9: DiT pool through Serve vs the raw pipeline, AudioSeal and
htdemucs on CUDA, and the vLLM test, as one Markdown table. Run it through `scripts/gpu_check.sh`
(which finds a Python and the carried packages); the how-to is at the top of that file.

    python scripts/gpu_check.py [--smoke] [--budget-s 450] [--out FILE] [--workdir DIR]

Each part runs in a child process with its own time limit (a share of `--budget-s`), so a slow or
crashed part is reported in its rows and never eats the others' time. Every row of the table is
always printed: a cell that did not run says why (missing packages, timed out, error).

- DiT: an ACE-Step checkpoint of the XL's true shapes (decoder hidden 2560, 32 layers, 32 heads,
  8 kv heads, intermediate 9728, head_dim 128; condition encoder 2048; text encoder Qwen3 0.6B
  shapes; Oobleck VAE 128 channels, 64 latent channels) with random weights, built on the GPU
  and written in the real diffusers on-disk format (`save_pretrained`, safetensors), because the
  Serve path loads pools from a path (`AceStepSongModel` → `from_pretrained`). Then, for each
  duration × batch size: the raw `diffusers.AceStepPipeline` (built in memory) and the real
  `SongDecoder` pool (`serve.app.decoder_deployment`, cuda, bfloat16, one replica) through a
  DeploymentHandle, with the pool's `batching.max_batch_size` set to the batch size and that
  many concurrent `render` calls. First calls (CUDA kernels, autotuning, allocator) are warm-up
  rows, never in the timings.
- AudioSeal: its published 16-bit generator architecture (`audioseal_wm_16bits` card), random
  weights, on CUDA, `get_watermark` on a song at 16 kHz, both channels as the batch.
- htdemucs: Demucs' default HTDemucs (4 sources), random weights, `apply_model` on CUDA.
- vLLM: `pytest tests/gpu/test_lyrics_vllm.py`, outcome per test.

`--smoke` runs the same code on the CPU at toy shapes, short songs and batch 1/2, for the test
suite (tests/integration/test_gpu_check.py). Compute does not depend on weight values, so
random weights time the real models; the audio they make is noise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Settings:
    smoke: bool
    device: str
    dtype: str  # AceStepConfig.dtype
    durations: tuple[float, ...]
    batches: tuple[int, ...]
    reps: int  # timed calls per cell, after one warm-up call
    song_s: float  # AudioSeal / htdemucs song length
    budgets: dict[str, float]  # share of the total budget per part


def settings(smoke: bool) -> Settings:
    if smoke:
        return Settings(
            smoke=True,
            device="cpu",
            dtype="float32",
            durations=(1.0, 2.0),
            batches=(1, 2),
            reps=1,
            song_s=2.0,
            budgets={"env": 0.0, "dit": 0.55, "audioseal": 0.15, "demucs": 0.15, "vllm": 0.15},
        )
    return Settings(
        smoke=False,
        device="cuda",
        dtype="bfloat16",
        durations=(60.0, 180.0),
        batches=(1, 4, 8),
        reps=2,
        song_s=180.0,
        budgets={"env": 0.0, "dit": 0.70, "audioseal": 0.08, "demucs": 0.10, "vllm": 0.12},
    )


# ---------------------------------------------------------------------------------------------
# Shapes

XL_SHAPES: dict[str, dict[str, Any]] = {
    # AceStepTransformer1DModel of acestep-v15-xl-turbo: the XL's true decoder shapes.
    "transformer": {
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "in_channels": 192,
        "audio_acoustic_hidden_dim": 64,
        "patch_size": 2,
        "rope_theta": 1e6,
        "sliding_window": 128,
        "encoder_hidden_size": 2048,
        "is_turbo": True,
        "model_version": "turbo",
    },
    # The XL's condition encoder is the 2048-wide one (diffusers' defaults).
    "condition_encoder": {
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "text_hidden_dim": 1024,
        "timbre_hidden_dim": 64,
        "num_lyric_encoder_hidden_layers": 8,
        "num_timbre_encoder_hidden_layers": 4,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "rope_theta": 1e6,
        "sliding_window": 128,
    },
    # Qwen3-Embedding-0.6B's shapes (the text encoder ACE-Step 1.5 ships).
    "text_encoder": {
        "vocab_size": 151_669,
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 32_768,
    },
    # Oobleck at Stable Audio's widths, 48 kHz, 1920 samples per latent frame, 64 channels.
    "vae": {
        "encoder_hidden_size": 128,
        "downsampling_ratios": [2, 4, 4, 6, 10],
        "channel_multiples": [1, 2, 4, 8, 16],
        "decoder_channels": 128,
        "decoder_input_channels": 64,
        "audio_channels": 2,
        "sampling_rate": 48_000,
    },
}

SMOKE_SHAPES: dict[str, dict[str, Any]] = {
    "transformer": {
        **XL_SHAPES["transformer"],
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "in_channels": 24,
        "audio_acoustic_hidden_dim": 8,
        "sliding_window": 16,
        "encoder_hidden_size": 16,
    },
    "condition_encoder": {
        **XL_SHAPES["condition_encoder"],
        "hidden_size": 16,
        "intermediate_size": 32,
        "text_hidden_dim": 32,
        "timbre_hidden_dim": 8,
        "num_lyric_encoder_hidden_layers": 1,
        "num_timbre_encoder_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "sliding_window": 16,
    },
    "text_encoder": {
        "vocab_size": 300,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "max_position_embeddings": 4096,
    },
    "vae": {
        **XL_SHAPES["vae"],
        "encoder_hidden_size": 16,
        "channel_multiples": [1, 1, 1, 1, 1],
        "decoder_channels": 4,
        "decoder_input_channels": 8,
    },
}


# ---------------------------------------------------------------------------------------------
# The table: every row is known before anything runs, so every row is always printed.


def dit_cells(s: Settings) -> list[str]:
    return [
        f"{path}, {d:g} s, batch {b}"
        for d in s.durations
        for b in s.batches
        for path in ("raw pipeline", "Serve pool")
    ]


def expected_rows(s: Settings) -> list[tuple[str, str]]:
    """(part, label) of every row, in table order."""
    rows = [
        ("env", "machine"),
        ("env", "GPU"),
        ("env", "date (UTC)"),
        ("env", "versions"),
        ("dit", "checkpoint: build on device (random init)"),
        ("dit", "checkpoint: write (save_pretrained)"),
        ("dit", "checkpoint: parameters / size on disk"),
        ("dit", "raw pipeline: warm-up (first call of each cell, summed)"),
        ("dit", "Serve: ray.init + deploy + replica load"),
        ("dit", "Serve: warm-up (first call of each cell, summed)"),
    ]
    rows += [("dit", f"DiT {cell}") for cell in dit_cells(s)]
    rows += [
        ("audioseal", "AudioSeal 16-bit generator: warm-up"),
        ("audioseal", f"AudioSeal 16-bit generator, {s.song_s:g} s song"),
        ("demucs", "htdemucs: warm-up"),
        ("demucs", f"htdemucs, {s.song_s:g} s song"),
        ("vllm", "tests/gpu/test_lyrics_vllm.py"),
        ("total", "wall time of the whole check"),
    ]
    return rows


def render_table(s: Settings, cells: dict[str, str], header: str) -> str:
    lines = [header, "", "| part | measure | result |", "|---|---|---|"]
    for part, label in expected_rows(s):
        value = cells.get(label, "not run").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {part} | {label} | {value} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Parts run as children; each writes {"label": ..., "value": ...} lines to its result file.


class Results:
    def __init__(self, path: Path) -> None:
        self.path = path

    def put(self, label: str, value: str) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"label": label, "value": value}) + "\n")
        print(f"[gpu_check] {label}: {value}", flush=True)


REQUIRED = {
    "dit": ("torch", "diffusers", "transformers", "ray", "pydantic", "fastapi", "omegaconf"),
    "audioseal": ("torch", "audioseal", "omegaconf", "pydantic"),
    "demucs": ("torch", "demucs", "pydantic"),
    "vllm": ("pytest",),
}


def missing_modules(part: str) -> list[str]:
    return [m for m in REQUIRED.get(part, ()) if importlib.util.find_spec(m) is None]


def _sync(torch: Any, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _rt(song_s: float, work_s: float) -> str:
    """Speed as song seconds per second of work."""
    speed = song_s / work_s
    return f"{speed:,.0f}x real time" if speed >= 10 else f"{speed:.2f}x real time"


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _dtype(torch: Any, name: str) -> Any:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def build_acestep(out_dir: Path, shapes: dict[str, dict[str, Any]], device: str, dtype: Any) -> Any:
    """An AceStepPipeline with `shapes`, random weights, built directly on `device` in `dtype`.
    The tokenizer is the tiny checkpoint's byte-level BPE (ids < 300 fit any vocabulary)."""
    import torch
    from diffusers import (
        AceStepPipeline,
        AceStepTransformer1DModel,
        AutoencoderOobleck,
        FlowMatchEulerDiscreteScheduler,
    )
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    from pipeline.tiny.acestep import _make_decoder_audible, _tokenizer

    torch.manual_seed(0)
    tokenizer = _tokenizer()
    with torch.device(device):
        text_encoder = Qwen3Model(
            Qwen3Config(
                **shapes["text_encoder"],
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        ).to(dtype)
        transformer = AceStepTransformer1DModel(**shapes["transformer"]).to(dtype)
        condition_encoder = AceStepConditionEncoder(**shapes["condition_encoder"]).to(dtype)
        vae = AutoencoderOobleck(**shapes["vae"])
        _make_decoder_audible(vae)
        vae = vae.to(dtype)
    pipeline: Any = AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


CAPTION = "synthwave, dreamy, female vocals, 110 bpm"
LYRICS = "[verse]\nneon lights over the bay\n[chorus]\nwe drive all night"


def part_dit(s: Settings, results: Results, workdir: Path) -> None:
    import torch

    dtype = _dtype(torch, s.dtype)
    shapes = SMOKE_SHAPES if s.smoke else XL_SHAPES
    checkpoint = workdir / ("acestep-smoke" if s.smoke else "acestep-xl-random")

    started = time.perf_counter()
    pipeline = build_acestep(checkpoint, shapes, s.device, dtype)
    _sync(torch, s.device)
    results.put("checkpoint: build on device (random init)", _fmt_s(time.perf_counter() - started))

    started = time.perf_counter()
    if checkpoint.exists():
        shutil.rmtree(checkpoint)
    pipeline.save_pretrained(checkpoint, safe_serialization=True)
    written = time.perf_counter() - started
    size = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
    results.put("checkpoint: write (save_pretrained)", f"{_fmt_s(written)} ({size / 1e9:.2f} GB)")
    params = {
        name: sum(p.numel() for p in getattr(pipeline, name).parameters())
        for name in ("transformer", "condition_encoder", "text_encoder", "vae")
    }
    results.put(
        "checkpoint: parameters / size on disk",
        ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in params.items())
        + f"; {size / 1e9:.2f} GB ({s.dtype})",
    )

    # Raw pipeline: the in-memory AceStepPipeline, the same arguments AceStepSongModel passes.
    warmup = 0.0
    for duration in s.durations:
        for batch in s.batches:
            label = f"DiT raw pipeline, {duration:g} s, batch {batch}"

            def call(duration: float = duration, batch: int = batch) -> None:
                with torch.inference_mode():
                    pipeline(
                        prompt=[CAPTION] * batch,
                        lyrics=[LYRICS] * batch,
                        vocal_language=["en"] * batch,
                        audio_duration=duration,
                        bpm=110,
                        keyscale="A minor",
                        timesignature="4",
                        num_inference_steps=8,
                        shift=3.0,
                        guidance_scale=1.0,
                        generator=[torch.Generator("cpu").manual_seed(k) for k in range(batch)],
                        output_type="pt",
                    )
                _sync(torch, s.device)

            try:
                warmup += _timed(call)
                times = [_timed(call) for _ in range(s.reps)]
                results.put(label, _cell(times, batch, duration))
            # A failed cell (CUDA out of memory, say) is reported; the other cells still run.
            except Exception as exc:  # noqa: BLE001
                results.put(label, _failure(exc))
                _free(torch, s.device)
    results.put("raw pipeline: warm-up (first call of each cell, summed)", _fmt_s(warmup))
    pipeline = None  # frees the GPU memory for the Serve replica's copy
    _free(torch, s.device)

    asyncio.run(_serve_cells(s, results, checkpoint, workdir))


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _cell(times: list[float], batch: int, duration: float, extra: str = "") -> str:
    mean = statistics.mean(times)
    spread = f" (min {min(times):.2f}, max {max(times):.2f})" if len(times) > 1 else ""
    per_song = mean / batch
    return (
        f"{mean:.2f} s per call{spread}, {per_song:.2f} s per song, "
        f"{_rt(duration, per_song)}{extra}"
    )


def _failure(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
    return f"FAILED: {name}: {text}"


def _free(torch: Any, device: str) -> None:
    import gc

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


async def _serve_cells(s: Settings, results: Results, checkpoint: Path, workdir: Path) -> None:
    import ray
    from ray import serve

    from deployments.renders import RenderedSong
    from pipeline.lyrics import parse_lyrics
    from pipeline.song_models import RenderRequest
    from pipeline.tags import normalize_style
    from serve.app import decoder_deployment
    from serve.config import DecoderPoolConfig, StorageConfig

    style = normalize_style("synthwave, dreamy, female vocals")
    sections = parse_lyrics(LYRICS)
    storage = StorageConfig(data_dir=str(workdir / "serve-data")).resolved()

    def pool(max_batch_size: int) -> DecoderPoolConfig:
        return DecoderPoolConfig.model_validate(
            {
                "name": "DiT_GPU_Check",
                "model": "ace-step",
                # Built like a turbo checkpoint: no audio tokenizer, so no covers.
                "tasks": ["text2music", "extend", "repaint"],
                "ace_step": {
                    "path": str(checkpoint),
                    "device": s.device,
                    "dtype": s.dtype,
                    "lora_cache_size": 1,
                },
                # A full batch starts at once; the wait only matters for a straggler.
                "batching": {"max_batch_size": max_batch_size, "batch_wait_timeout_s": 1.0},
                "deployment": {
                    "num_replicas": 1,
                    "max_ongoing_requests": 2 * max(s.batches),
                    "actor": {"num_cpus": 1, "num_gpus": 1 if s.device == "cuda" else 0},
                },
            }
        )

    def request(seed: int, duration: float) -> RenderRequest:
        return RenderRequest(
            job_id=f"gpu-check-{seed}",
            variation=0,
            seed=seed,
            duration_s=duration,
            tags=style,
            sections=sections,
            instrumental=False,
            language="en",
        )

    async def render(handle: Any, req: RenderRequest) -> RenderedSong:
        song = None
        async for item in handle.options(stream=True).render.remote(req):
            if isinstance(item, RenderedSong):
                song = item
        assert song is not None
        return song

    async def one_batch(handle: Any, batch: int, duration: float) -> tuple[float, list[int]]:
        started = time.perf_counter()
        songs = await asyncio.gather(*(render(handle, request(k, duration)) for k in range(batch)))
        return time.perf_counter() - started, [song.batch_size for song in songs]

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    serve_labels = [c for c in (f"DiT {cell}" for cell in dit_cells(s)) if "Serve pool" in c]
    serve_labels.append("Serve: warm-up (first call of each cell, summed)")
    started = time.perf_counter()
    try:
        ray.init(
            address="local",
            include_dashboard=False,
            num_cpus=max(2, min(os.cpu_count() or 2, 8)),
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    except Exception as exc:  # noqa: BLE001 - every Serve row says why, the parent goes on
        for label in ["Serve: ray.init + deploy + replica load", *serve_labels]:
            results.put(label, "FAILED: ray.init: " + _failure(exc).removeprefix("FAILED: "))
        return
    init_s = time.perf_counter() - started
    warmup = 0.0
    deploy_times = []
    try:
        for batch in s.batches:
            deploy_started = time.perf_counter()
            handle = serve.run(
                decoder_deployment(pool(batch), storage), name="gpu-check", route_prefix=None
            )
            deploy_times.append(time.perf_counter() - deploy_started)
            results.put(
                "Serve: ray.init + deploy + replica load",
                f"ray.init {init_s:.1f} s; serve.run so far: "
                f"{', '.join(f'{t:.1f}' for t in deploy_times)} s",
            )
            for duration in s.durations:
                label = f"DiT Serve pool, {duration:g} s, batch {batch}"
                try:
                    first, _ = await one_batch(handle, batch, duration)
                    warmup += first
                    times, sizes = [], []
                    for _ in range(s.reps):
                        seconds, batch_sizes = await one_batch(handle, batch, duration)
                        times.append(seconds)
                        sizes += batch_sizes
                    model_batch = f"; songs per model call {sorted(set(sizes))}"
                    results.put(label, _cell(times, batch, duration, model_batch))
                except Exception as exc:  # noqa: BLE001 - reported in the cell, others still run
                    results.put(label, _failure(exc))
            serve.delete("gpu-check")
        results.put(
            "Serve: ray.init + deploy + replica load",
            f"ray.init {init_s:.1f} s; serve.run per batch size (replica start + checkpoint "
            f"load): {', '.join(f'{t:.1f}' for t in deploy_times)} s",
        )
        results.put("Serve: warm-up (first call of each cell, summed)", _fmt_s(warmup))
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def part_audioseal(s: Settings, results: Results, workdir: Path) -> None:
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO / "scripts"))
    from bench_postprocess import _audioseal_generator

    from pipeline.engines.audioseal import _eager

    generator = _audioseal_generator().to(s.device)
    nbits = int(generator.msg_processor.nbits)
    rng = np.random.default_rng(0)

    def run(seconds: float) -> None:
        audio = torch.from_numpy(
            rng.standard_normal((2, 1, int(seconds * 16_000))).astype(np.float32) * 0.1
        ).to(s.device)
        bits = torch.randint(0, 2, (2, nbits), device=s.device)
        with torch.inference_mode(), _eager():
            generator.get_watermark(audio, message=bits)
        _sync(torch, s.device)

    results.put("AudioSeal 16-bit generator: warm-up", _fmt_s(_timed(lambda: run(1.0))))
    seconds = _timed(lambda: run(s.song_s))
    results.put(
        f"AudioSeal 16-bit generator, {s.song_s:g} s song",
        f"{_fmt_s(seconds)} ({_rt(s.song_s, seconds)}; stereo at 16 kHz, "
        f"{sum(p.numel() for p in generator.parameters()) / 1e6:.1f} M params, {s.device})",
    )


def part_demucs(s: Settings, results: Results, workdir: Path) -> None:
    import torch
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    if s.smoke:
        from pipeline.tiny.htdemucs import TINY_KWARGS

        model = HTDemucs(**TINY_KWARGS)
        what = "tiny htdemucs (smoke)"
    else:
        model = HTDemucs(sources=["drums", "bass", "other", "vocals"])
        what = "default htdemucs"
    model = model.eval().to(s.device)
    generator = torch.Generator().manual_seed(0)

    def run(seconds: float) -> None:
        mix = torch.randn(1, 2, int(seconds * model.samplerate), generator=generator) * 0.1
        with torch.no_grad():
            apply_model(
                model, mix, shifts=0, split=True, overlap=0.25, device=s.device, progress=False
            )
        _sync(torch, s.device)

    results.put("htdemucs: warm-up", _fmt_s(_timed(lambda: run(min(10.0, s.song_s / 2)))))
    seconds = _timed(lambda: run(s.song_s))
    results.put(
        f"htdemucs, {s.song_s:g} s song",
        f"{_fmt_s(seconds)} ({_rt(s.song_s, seconds)}; {what}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, stereo 44.1 kHz, "
        f"split, overlap 0.25, {s.device})",
    )


PARTS = {"dit": part_dit, "audioseal": part_audioseal, "demucs": part_demucs}


# ---------------------------------------------------------------------------------------------
# The parent


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def env_cells(s: Settings) -> dict[str, str]:
    cells = {
        "machine": (
            f"{platform.node()}, {platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.system()} {platform.release()}"
        ),
        "date (UTC)": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
    }
    gpu = "none (CPU smoke run)" if s.smoke else "torch missing"
    torch_version = "missing"
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_version = f"{torch.__version__} (CUDA {torch.version.cuda})"
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            gpu = (
                f"{torch.cuda.get_device_name(0)}, {props.total_memory / 2**30:.0f} GiB, "
                f"{props.multi_processor_count} SMs"
            )
            with contextlib.suppress(Exception):
                driver = subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
                if driver:
                    gpu += f", driver {driver}"
        elif not s.smoke:
            gpu = "NO CUDA GPU visible to torch"
    names = ("diffusers", "transformers", "ray", "demucs", "audioseal", "vllm", "pydantic")
    cells["GPU"] = gpu
    cells["versions"] = f"Python {platform.python_version()}, torch {torch_version}, " + ", ".join(
        f"{n} {_version(n)}" for n in names
    )
    return cells


def run_child(part: str, s: Settings, workdir: Path, timeout: float) -> dict[str, str]:
    """Run one part in a child process group; its rows, or why it has none."""
    result_file = workdir / f"{part}.jsonl"
    result_file.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--part", part, "--result", str(result_file)]
    command += ["--workdir", str(workdir)] + (["--smoke"] if s.smoke else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with subprocess.Popen(command, env=env, start_new_session=True) as child:
        try:
            code = child.wait(timeout=max(timeout, 1.0))
            problem = None if code == 0 else f"FAILED: the {part} child exited with code {code}"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            problem = f"TIMED OUT: part budget {timeout:.0f} s spent"
    cells: dict[str, str] = {}
    if result_file.exists():
        for line in result_file.read_text().splitlines():
            row = json.loads(line)
            cells[row["label"]] = row["value"]
    if problem:
        print(f"[gpu_check] {part}: {problem} after {time.perf_counter() - started:.0f} s")
        for p, label in expected_rows(s):
            if p == part and label not in cells:
                cells[label] = problem
    return cells


def run_vllm_test(s: Settings, timeout: float) -> str:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rA",
        "-p",
        "no:cacheprovider",
        "tests/gpu/test_lyrics_vllm.py",
    ]
    try:
        done = subprocess.run(
            command,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=max(timeout, 1.0),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except subprocess.TimeoutExpired:
        return f"TIMED OUT: part budget {timeout:.0f} s spent"
    lines = [
        line.strip()
        for line in done.stdout.splitlines()
        if line.startswith(("PASSED", "FAILED", "SKIPPED", "ERROR"))
    ]
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    detail = "; ".join(lines)
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    return f"exit {done.returncode}: {summary.strip('= ')}" + (f" — {detail}" if detail else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, toy shapes, short, batch 1/2")
    parser.add_argument("--budget-s", type=float, default=None, help="total (default 450; 120)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    s = settings(options.smoke)

    if options.part:  # a child
        import warnings

        warnings.simplefilter("ignore")
        PARTS[options.part](s, Results(options.result), options.workdir)
        return 0

    started = time.perf_counter()
    budget = options.budget_s or (120.0 if s.smoke else 450.0)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cells = env_cells(s)
    if not s.smoke and "NO CUDA" in cells["GPU"]:
        print("[gpu_check] no CUDA GPU: the GPU rows will fail; use --smoke on a CPU machine")

    order = ("dit", "audioseal", "demucs", "vllm")
    for index, part in enumerate(order):
        # This part's share of what is left (unused time of earlier parts goes to later ones),
        # keeping 5 s to print the table.
        remaining = budget - (time.perf_counter() - started) - 5
        shares = sum(s.budgets[p] for p in order[index:])
        timeout = remaining * s.budgets[part] / shares
        missing = missing_modules(part)
        if missing:
            why = (
                f"SKIPPED: Python packages missing: {', '.join(missing)} (stage them with "
                "`python scripts/gpu_stage.py` and carry var/gpu; see scripts/gpu_check.sh)"
            )
            for p, label in expected_rows(s):
                if p == part:
                    cells[label] = why
            continue
        if timeout <= 1:
            for p, label in expected_rows(s):
                if p == part:
                    cells[label] = "SKIPPED: the check's total budget was spent"
            continue
        print(f"[gpu_check] {part}: budget {timeout:.0f} s", flush=True)
        if part == "vllm":
            cells["tests/gpu/test_lyrics_vllm.py"] = run_vllm_test(s, timeout)
        else:
            cells.update(run_child(part, s, workdir, timeout))

    cells["wall time of the whole check"] = (
        f"{_fmt_s(time.perf_counter() - started)} (budget {budget:.0f} s)"
    )
    mode = "smoke (CPU, toy shapes)" if s.smoke else "full (CUDA, XL shapes, bf16)"
    header = f"# gpu_check — {mode} — {cells['GPU']} — {cells['date (UTC)']}"
    table = render_table(s, cells, header)
    print("\n" + table)
    targets = [options.out] if options.out else []
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / "gpu_check.md")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(table)
        print(f"[gpu_check] table written to {target}")
    if options.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
