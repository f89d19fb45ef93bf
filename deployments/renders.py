"""What a decoder streams back while and after it renders (see deployments/decoder.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    details: dict[str, Any] = field(default_factory=dict)  # the model's own (e.g. a prediction)

    @property
    def seconds_per_audio_second(self) -> float | None:
        """Replica seconds this render took per second of its audio (see
        `serve.pool_load.seconds_per_audio_second`); None when its timing says nothing."""
        from serve.pool_load import seconds_per_audio_second

        audio_s = self.n_samples / self.sample_rate if self.sample_rate else 0.0
        render_s = self.render_finished_at - self.render_started_at
        return seconds_per_audio_second(render_s, audio_s, self.batch_size)
