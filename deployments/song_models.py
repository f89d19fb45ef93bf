"""The `SongModel` interface every decoder pool serves, and the weight-free `sketch` model.

A song model turns render requests into stereo audio. It is synchronous and compute-bound: the
decoder deployment runs it on a worker thread and relays its progress. It takes a *list* of
requests so models that batch across requests (ACE-Step) and models that do not (sketch) share one
seam; progress is reported per model step for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.lyrics import LyricSection
from pipeline.song_contracts import SONG_MODELS, SongModelCapabilities
from pipeline.tags import StyleTags

from .progress import ProgressCallback  # (step, steps), step counting from 1 to steps

if TYPE_CHECKING:
    import numpy as np

    from pipeline.sketch import SketchRender
    from serve.config import DecoderPoolConfig


@dataclass(frozen=True)
class RenderRequest:
    """One variation to render. `seed` is the variation's own seed (job seed + index);
    `lora_id` names a registered LoRA by its ref (`<scope>/<id>`, see serve.loras), unique
    across owners: it is the multiplexed model id decoders load it by."""

    job_id: str
    variation: int
    seed: int
    duration_s: float
    tags: StyleTags
    sections: list[LyricSection]
    instrumental: bool
    language: str
    lora_id: str | None = None
    lora_scale: float = 1.0


@dataclass(frozen=True)
class RenderProgress:
    """Streamed by a decoder while it renders."""

    step: int
    steps: int


@dataclass(frozen=True)
class RenderedSong:
    """Streamed by a decoder last: where it stored the raw (un-mastered) render, and who made it.
    The audio itself never travels through the router or the conductor."""

    render_key: str  # object-store key of the float32 `.npy` [2, n_samples] render
    n_samples: int
    sample_rate: int
    model: str
    model_version: str
    replica: str
    render_started_at: float
    render_finished_at: float
    batch_size: int = 1  # requests rendered in the same model call
    pool: str = ""  # the decoder pool (deployment) that rendered it; "" from older records

    @property
    def seconds_per_audio_second(self) -> float | None:
        """Replica seconds this render took per second of its audio (see
        `serve.pool_load.seconds_per_audio_second`); None when its timing says nothing."""
        from serve.pool_load import seconds_per_audio_second

        audio_s = self.n_samples / self.sample_rate if self.sample_rate else 0.0
        render_s = self.render_finished_at - self.render_started_at
        return seconds_per_audio_second(render_s, audio_s, self.batch_size)


class SongModel(Protocol):
    """What a decoder pool needs from a song model."""

    name: str
    version: str
    sample_rate: int
    capabilities: SongModelCapabilities  # the same object as SONG_MODELS[name]

    def render(
        self, requests: list[RenderRequest], on_progress: ProgressCallback
    ) -> list[np.ndarray]:
        """Render every request; returns float32 `[2, round(duration_s * sample_rate)]` arrays in
        request order. Deterministic for a request's seed."""
        ...

    def model_calls(self, requests: list[RenderRequest]) -> list[list[int]]:
        """How `render` splits `requests` into model calls: the request indices of each call, in
        call order (what batching achieved, for diagnostics and metrics)."""
        ...

    def check_health(self) -> None:
        """Raise if the model cannot render (e.g. a lost device)."""
        ...

    def load_lora(self, lora_id: str, weights_path: Path) -> None:
        """Make a LoRA available to requests naming `lora_id`; raises for models without LoRA."""
        ...

    def unload_lora(self, lora_id: str) -> None:
        """Forget a LoRA; a no-op for one that is not loaded."""
        ...


class SketchSongModel:
    """The procedural `sketch` arranger (pipeline/sketch) behind the SongModel interface.

    Not an AI model: a weight-free placeholder so the whole cluster runs with no checkpoints.
    """

    name = "sketch"
    capabilities = SONG_MODELS["sketch"]  # exact stems: `render_parts`

    def __init__(self, sample_rate: int = 48_000) -> None:
        from pipeline.sketch import SKETCH_VERSION

        self.version = SKETCH_VERSION
        self.sample_rate = sample_rate

    def render(
        self, requests: list[RenderRequest], on_progress: ProgressCallback
    ) -> list[np.ndarray]:
        return [self.render_parts(request, on_progress).mix for request in requests]

    def render_parts(self, request: RenderRequest, on_progress: ProgressCallback) -> SketchRender:
        """One song with each part on its own track: what its exact stems are made of."""
        from pipeline.sketch import render_sketch

        return render_sketch(
            request.tags,
            request.sections,
            request.duration_s,
            request.seed,
            instrumental=request.instrumental,
            sample_rate=self.sample_rate,
            on_progress=on_progress,
        )

    def model_calls(self, requests: list[RenderRequest]) -> list[list[int]]:
        return [[index] for index in range(len(requests))]  # one song per call

    def check_health(self) -> None:
        return None

    def load_lora(self, lora_id: str, weights_path: Path) -> None:
        raise ValueError("the sketch model does not take LoRAs")

    def unload_lora(self, lora_id: str) -> None:
        return None


def load_song_model(pool: DecoderPoolConfig) -> SongModel:
    """Build the model a pool serves; raises with the setting to fix when it cannot load."""
    if pool.model == "sketch":
        return SketchSongModel(sample_rate=pool.sample_rate)
    if pool.model == "ace-step":
        from .ace_step import AceStepSongModel

        return AceStepSongModel(pool)
    raise ValueError(f"models.pools[{pool.name}].model: unknown song model {pool.model!r}")
