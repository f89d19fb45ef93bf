"""The weight-free `sketch` arranger (pipeline/sketch) behind the SongModel interface."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.song_contracts import REPAINT, SONG_MODELS

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
        return [self._render_one(request, on_progress) for request in requests]

    def _render_one(self, request: RenderRequest, on_progress: ProgressCallback) -> np.ndarray:
        """A new song; for an edit, the new song inside the edit window and the source's own
        samples outside it, bit for bit, the new audio at the source's level
        (`pipeline.editing.splice_edit`)."""
        mix = self.render_parts(request, on_progress).mix
        edit = request.edit
        if edit is None:
            return mix
        from pipeline.editing import fitted_source, splice_edit, window_samples

        if edit.task not in self.capabilities.tasks:
            raise ValueError(f"the sketch model cannot {edit.task}")
        if request.source_audio is None:
            raise ValueError(f"a {edit.task} needs its source audio (the decoder loads it)")
        if (
            edit.task == REPAINT
        ):  # exactly the source's length, whatever the rounding of its duration
            mix = fitted_source(mix, request.source_audio.shape[-1])
        n_samples = mix.shape[-1]
        start, end = window_samples(edit.start_s, edit.end_s, self.sample_rate, n_samples)
        return splice_edit(request.source_audio, mix, start, end, self.sample_rate)

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
