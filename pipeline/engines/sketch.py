"""The weight-free `sketch` arranger (pipeline/sketch) behind the SongModel interface."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.song_contracts import SONG_MODELS

if TYPE_CHECKING:
    import numpy as np

    from pipeline.progress import ProgressCallback
    from pipeline.sketch import SketchRender
    from pipeline.song_models import RenderRequest


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
