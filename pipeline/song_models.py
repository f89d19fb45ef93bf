"""The `SongModel` interface every decoder pool serves, and `load_song_model`, which builds the
engine a pool names (pipeline/engines/).

A song model turns render requests into stereo audio. It is synchronous and compute-bound: the
decoder deployment runs it on a worker thread and relays its progress. It takes a *list* of
requests so models that batch across requests (ACE-Step) and models that do not (sketch) share one
seam; progress is reported per model step for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.lyrics import LyricSection
from pipeline.progress import ProgressCallback  # (step, steps), step counting from 1 to steps
from pipeline.song_contracts import TEXT2MUSIC, SongModelCapabilities
from pipeline.tags import StyleTags

if TYPE_CHECKING:
    import numpy as np

    from pipeline.engines.replicate import DeliveredLookup
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
    edit: SongEdit | None = None
    """What to do to an existing song instead of writing a new one (None: text2music)."""
    reference_key: str | None = None
    """Object key of a timbre reference (raw float32 `.npy` `[2, n]` at the pool's rate)."""
    # Filled in by the decoder from `edit.source_key` / `reference_key` right before the model
    # runs, on the decoder's own replica: audio never travels in requests between deployments.
    source_audio: np.ndarray | None = field(default=None, compare=False, repr=False)
    reference_audio: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def task(self) -> str:
        return self.edit.task if self.edit is not None else TEXT2MUSIC


@dataclass(frozen=True)
class SongEdit:
    """An edit of a source song (`pipeline.editing` has the sample arithmetic).

    - extend: the source, then new music up to the request's `duration_s`; the window is
      [source length, duration_s).
    - repaint: the window [start_s, end_s) is made anew (new lyrics or style for that span);
      outside it the samples are the source's.
    - cover: the whole source re-rendered in the request's style; `strength` (0–1) is how much
      of the source's structure is kept.
    """

    task: str  # EXTEND, REPAINT or COVER (pipeline.song_contracts)
    source_key: str  # raw float32 `.npy` `[2, n]` at the pool's rate, in the object store
    source_duration_s: float
    start_s: float = 0.0
    end_s: float = 0.0
    strength: float = 1.0


@dataclass(frozen=True)
class RenderedAudio:
    """One request's audio, with what the model reports about making it."""

    audio: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)
    """Recorded with the variation, e.g. a hosted prediction's id and predict time."""


class RenderFailed(RuntimeError):
    """One request of a batch could not be rendered (the others may have been); the message is
    the model's own."""


def unpack_rendered(item: np.ndarray | RenderedAudio) -> tuple[np.ndarray, dict[str, Any]]:
    """The audio and details of one `SongModel.render` result that is not a failure."""
    if isinstance(item, RenderedAudio):
        return item.audio, item.details
    return item, {}


class SongModel(Protocol):
    """What a decoder pool needs from a song model."""

    name: str
    version: str
    sample_rate: int
    capabilities: SongModelCapabilities  # the same object as SONG_MODELS[name]

    def render(
        self, requests: list[RenderRequest], on_progress: ProgressCallback
    ) -> Sequence[np.ndarray | RenderedAudio | RenderFailed]:
        """Render every request; returns float32 `[2, round(duration_s * sample_rate)]` arrays
        (or `RenderedAudio` with details) in request order. Deterministic for a request's seed
        where the model takes one. A model whose requests fail independently (a hosted API)
        puts a `RenderFailed` in a failed request's place; raising fails the whole batch."""
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


def load_song_model(
    pool: DecoderPoolConfig, *, delivered: DeliveredLookup | None = None
) -> SongModel:
    """Build the model a pool serves; raises with the setting to fix when it cannot load.
    `delivered`: where a Replicate pool with `delivery: webhook` finds its deliveries."""
    if pool.model == "sketch":
        from pipeline.engines.sketch import SketchSongModel

        return SketchSongModel(sample_rate=pool.sample_rate)
    if pool.model == "ace-step":
        from pipeline.engines.ace_step import AceStepSongModel

        return AceStepSongModel(pool)
    if pool.replicate is not None:
        from pipeline.engines.replicate import ReplicateSongModel

        return ReplicateSongModel(pool, delivered=delivered)
    raise ValueError(f"models.pools[{pool.name}].model: unknown song model {pool.model!r}")
