"""`SongDecoder` — one decoder pool: a song model on one kind of hardware.

The same class is deployed once per pool in `models.pools` (e.g. `Sketch`, later `DiT_CUDA` and
`DiT_MPS`); the builder names each deployment and applies its resources. `render` is a streaming
method: it yields `RenderProgress` while the model works and one `RenderedSong` at the end, so
progress reaches the song's SSE stream while the audio is still being made.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from .song_models import RenderedSong, RenderProgress, RenderRequest, load_song_model

if TYPE_CHECKING:
    from serve.config import DecoderPoolConfig


class SongDecoder:
    def __init__(self, pool: DecoderPoolConfig) -> None:
        self._pool = pool
        self._model = load_song_model(pool)
        self._replica = f"{pool.name}@{socket.gethostname()}:{os.getpid()}"

    async def render(self, request: RenderRequest) -> AsyncIterator[RenderProgress | RenderedSong]:
        """Render one variation, streaming progress and then the song.

        The model runs on a worker thread so the replica stays responsive to health checks and
        metrics while it computes.
        """
        loop = asyncio.get_running_loop()
        progress: asyncio.Queue[RenderProgress] = asyncio.Queue()

        def on_progress(step: int, steps: int) -> None:
            loop.call_soon_threadsafe(progress.put_nowait, RenderProgress(step, steps))

        started_at = time.time()
        rendering = asyncio.ensure_future(
            asyncio.to_thread(self._model.render, [request], on_progress)
        )
        while not rendering.done():
            next_progress = asyncio.ensure_future(progress.get())
            await asyncio.wait({next_progress, rendering}, return_when=asyncio.FIRST_COMPLETED)
            if next_progress.done():
                yield next_progress.result()
            else:
                next_progress.cancel()
        while not progress.empty():
            yield progress.get_nowait()
        (audio,) = rendering.result()
        yield RenderedSong(
            audio=audio,
            sample_rate=self._model.sample_rate,
            model=self._model.name,
            model_version=self._model.version,
            replica=self._replica,
            render_started_at=started_at,
            render_finished_at=time.time(),
        )

    async def check_health(self) -> None:
        self._model.check_health()
