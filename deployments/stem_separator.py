"""`StemSeparator` — the Demucs replicas: htdemucs stems for songs of models that have no exact
stems of their own (`DemucsSeparator` is the model behind it).

The deployment reads the delivered song from the object store and writes the raw stems back, so
audio never travels in messages; operators place it on GPU nodes (`deployments.separator.actor`).

The model, its checkpoint format and its speed: pipeline/engines/demucs.py. Sketch songs never
come here: their stems are exact (`pipeline.stems.sketch_stems`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.engines.demucs import FIX as _FIX
from pipeline.engines.demucs import DemucsSeparator
from serve.store import RAW_RENDER_CONTENT_TYPE, open_object_store

from .progress import Finished, ProgressCallback, with_progress

if TYPE_CHECKING:
    from serve.config import StemsConfig, StorageConfig


@dataclass(frozen=True)
class SeparatedStems:
    """What `StemSeparator.separate` streams last: where it stored each raw stem."""

    separator: str  # the model's architecture, e.g. "htdemucs"
    stems: dict[str, str]  # stem name → object key of its float32 `.npy` audio


class StemSeparator:
    """Serve deployment: one `DemucsSeparator` per replica, one song at a time on it. It reads
    the song from the object store and writes the stems there: audio never passes through the
    StemMaker's or the conductor's messages."""

    def __init__(self, config: StemsConfig, storage: StorageConfig) -> None:
        separator = DemucsSeparator.from_config(config)
        if separator is None:
            raise ValueError(
                f"the StemSeparator deployment needs a model: {_FIX} (without one, only sketch "
                "songs have stems and the deployment is left out)"
            )
        self._separator = separator
        self._objects = open_object_store(storage)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demucs")

    async def separate(
        self, source_key: str, sample_rate: int, stems_prefix: str
    ) -> AsyncIterator[tuple[int, int] | SeparatedStems]:
        """Separate the audio file at `source_key` (any format `decode_audio` reads, expected at
        `sample_rate` Hz): stream (segment, segments) progress, then store each stem raw under
        `stems_prefix` + NAME.npy and yield their keys. KeyError when the source is missing."""
        from pipeline.audio import raw_render_bytes
        from pipeline.encode import decode_audio

        data = await self._objects.get(source_key)
        audio, decoded_rate = await asyncio.get_running_loop().run_in_executor(
            self._thread, decode_audio, data
        )
        del data
        if decoded_rate != sample_rate:
            raise RuntimeError(f"{source_key} is {decoded_rate} Hz, expected {sample_rate} Hz")

        def work(on_progress: ProgressCallback) -> dict[str, np.ndarray]:
            return self._separator.separate(audio, sample_rate, on_progress=on_progress)

        stems: dict[str, np.ndarray] = {}
        async for item in with_progress(work, self._thread):
            if isinstance(item, Finished):
                stems = item.value
            else:
                yield item
        keys: dict[str, str] = {}
        for name in list(stems):
            raw = await asyncio.to_thread(raw_render_bytes, stems.pop(name))
            keys[name] = f"{stems_prefix}{name}.npy"
            await self._objects.put(keys[name], raw, RAW_RENDER_CONTENT_TYPE)
        yield SeparatedStems(self._separator.name, keys)

    async def check_health(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._separator.check_health)
