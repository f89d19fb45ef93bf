"""`StemMaker` — makes, masters, signs and stores the stems of one variation, on demand.

Where the four stems (`pipeline.stems.STEM_NAMES`) come from depends on the model that made the
song:

- **sketch** renders each part on its own track, so its stems are exact: the variation is
  rendered again from its stored seed, tags and lyrics (checked against a fingerprint of the
  original render), and each stem gets the very gain curve that mastered the mix — so the
  mastered stems sum to the delivered song, sample for sample (before any watermark);
- **every other model** is separated by htdemucs on the `StemSeparator` replicas (GPU nodes where
  the operator put them) from the delivered master, read back losslessly when the server keeps
  wav or flac; the stems then sum to that master. The separator reads the master from the object
  store and writes raw stems there; this deployment reads them back one at a time.

Each stem then goes down the same `DeliveryChain` as a song — watermark (each stem carries its
own), every configured format, C2PA credentials naming the stem and how it was made — into the
object store under deterministic keys next to the variation's files, so a retried job overwrites.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.engines.sketch import SketchSongModel
from pipeline.song_contracts import capabilities_of
from pipeline.song_models import RenderRequest
from serve.store import VARIATION_AUDIO_PREFERENCE, open_object_store, variation_key

from .post_processor import (
    DeliveryChain,
    Provenance,
    add_elapsed,
    song_credentials,
)
from .progress import Finished, ProgressCallback, with_progress

if TYPE_CHECKING:
    import numpy as np

    from serve.config import AudioFormat, PostProcessConfig, StorageConfig


@dataclass(frozen=True)
class _StoredStem:
    """A separated stem the separator stored raw (read when it is delivered)."""

    key: str


class StemsUnavailable(ValueError):
    """This variation's stems cannot be made here; the message says why and what to change."""


@dataclass(frozen=True)
class StemsTask:
    """One variation's stems to make: what the conductor knows of the song."""

    render: RenderRequest  # how the variation was rendered
    model: str
    model_version: str
    sample_rate: int
    loudness_lufs: float  # the mastering target the song was made with
    objects: dict[str, str]  # the variation's files: format (or "peaks", "hls") → object key
    provenance: Provenance
    fingerprint: list[float] | None = None  # of the original render (exact stems check it)


@dataclass(frozen=True)
class StemsProgress:
    """Streamed while stems are made. `stage`: rendering (sketch), separating (Demucs) or
    delivering (watermark, encode, sign, store), with `step` of `steps` done."""

    stage: str
    step: int
    steps: int


@dataclass(frozen=True)
class MadeStems:
    """Streamed last: where each stem's files are and how they were made."""

    method: str  # "exact", or the separator's architecture ("htdemucs")
    objects: dict[str, dict[str, str]]  # stem → format → object key
    loudness_lufs: dict[str, float]
    provenance: dict[str, object]  # watermark and c2pa status, as a variation's
    timings_s: dict[str, float] = field(default_factory=dict)


class StemMaker:
    def __init__(
        self, config: PostProcessConfig, storage: StorageConfig, separator: Any = None
    ) -> None:
        """`separator` is the StemSeparator DeploymentHandle, None when no Demucs checkpoint is
        configured (then only sketch songs have stems)."""
        self._config = config
        self._objects = open_object_store(storage)
        self._delivery = DeliveryChain(config)
        self._separator = separator.options(stream=True) if separator is not None else None
        # One stem job's CPU work at a time per replica; scale with replicas.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stems")

    async def make(self, task: StemsTask) -> AsyncIterator[StemsProgress | MadeStems]:
        """Stream progress, then the stored stems. Raises StemsUnavailable when the variation's
        stems cannot be made on this server."""
        timings: dict[str, float] = {}
        stems: dict[str, np.ndarray | _StoredStem] = {}
        started = time.perf_counter()
        # An edit's audio is partly its source's: rendering its parts again would not sum to it.
        if capabilities_of(task.model).exact_stems and task.render.edit is None:
            method = "exact"
            async for item in with_progress(
                lambda on_progress: self._exact_stems(task, on_progress), self._thread
            ):
                if isinstance(item, Finished):
                    stems = dict(item.value)
                else:
                    yield StemsProgress("rendering", *item)
            timings["render"] = time.perf_counter() - started
        else:
            if self._separator is None:
                raise StemsUnavailable(
                    f"variation {task.render.variation} was made by {task.model}, which has no "
                    "exact stems, and this server separates none: set "
                    "postprocess.stems.demucs_checkpoint to an htdemucs checkpoint"
                )
            source_key = self._separation_source(task)
            stems_prefix = variation_key(task.render.job_id, task.render.variation, "stems/raw/")
            method = ""
            raw_keys: dict[str, str] = {}
            async for part in self._separator.separate.remote(
                source_key, task.sample_rate, stems_prefix
            ):
                if isinstance(part, tuple):
                    yield StemsProgress("separating", *part)
                else:
                    method, raw_keys = part.separator, part.stems
            timings["separate"] = time.perf_counter() - started
            if not raw_keys:
                raise RuntimeError("the stem separator finished without stems")
            stems = {name: _StoredStem(key) for name, key in raw_keys.items()}

        from pipeline.encode import CONTENT_TYPES

        loop = asyncio.get_running_loop()
        objects: dict[str, dict[str, str]] = {}
        loudness: dict[str, float] = {}
        provenance: dict[str, object] = {}
        names = list(stems)
        for done, name in enumerate(names):
            yield StemsProgress("delivering", done, len(names))
            stem = stems.pop(name)
            if isinstance(stem, _StoredStem):  # read one at a time: a long song's are large
                from pipeline.audio import raw_render_from_bytes

                stem = raw_render_from_bytes(await self._objects.get(stem.key))
            files, loudness[name], provenance = await loop.run_in_executor(
                self._thread, self._deliver, task, name, stem, method, timings
            )
            # Stored one stem at a time: a long song's files are hundreds of MB for all four.
            started = time.perf_counter()
            objects[name] = {}
            for fmt, data in files.items():
                key = variation_key(
                    task.render.job_id, task.render.variation, f"stems/{name}.{fmt}"
                )
                await self._objects.put(key, data, CONTENT_TYPES[fmt])
                objects[name][fmt] = key
            add_elapsed(timings, "store", started)
        yield StemsProgress("delivering", len(names), len(names))
        yield MadeStems(
            method=method,
            objects=objects,
            loudness_lufs=loudness,
            provenance=provenance,
            timings_s={name: round(seconds, 3) for name, seconds in timings.items()},
        )

    def _exact_stems(self, task: StemsTask, on_progress: ProgressCallback) -> dict[str, np.ndarray]:
        """The sketch variation rendered again, split into stems, mastered as the song was."""
        import numpy as np

        from pipeline.loudness import normalize_loudness
        from pipeline.stems import render_fingerprint, same_render, sketch_stems

        model = SketchSongModel(sample_rate=task.sample_rate)
        if task.model_version != model.version:
            raise StemsUnavailable(
                f"variation {task.render.variation} was made by sketch {task.model_version} and "
                f"this server runs sketch {model.version}, which renders it differently: its "
                "exact stems can only be made by a server running that version"
            )
        render = model.render_parts(task.render, on_progress)
        if task.fingerprint and not same_render(
            render_fingerprint(render.mix, task.sample_rate), task.fingerprint
        ):
            raise StemsUnavailable(
                f"rendering variation {task.render.variation} again did not reproduce its audio "
                "(the sketch model's output changed without a version bump), so its exact stems "
                "are lost"
            )
        # The same deterministic mastering as the song's: its per-sample gain is the song's.
        mastered = normalize_loudness(
            render.mix,
            task.sample_rate,
            target_lufs=task.loudness_lufs,
            ceiling_dbtp=self._config.ceiling_dbtp,
        )
        return {
            name: np.multiply(stem, mastered.gain, dtype=np.float32)
            for name, stem in sketch_stems(render, instrumental=task.render.instrumental).items()
        }

    @staticmethod
    def _separation_source(task: StemsTask) -> str:
        """The key of the variation's best file to separate (mastered, watermarked)."""
        # Lossless gives the separator exactly the master; lossy adds the codec's error.
        fmt = next((f for f in VARIATION_AUDIO_PREFERENCE if f in task.objects), None)
        if fmt is None:
            raise StemsUnavailable(
                f"variation {task.render.variation} has no audio file to separate "
                "(postprocess.formats)"
            )
        return task.objects[fmt]

    def _deliver(
        self,
        task: StemsTask,
        name: str,
        stem: np.ndarray,
        method: str,
        timings: dict[str, float],
    ) -> tuple[dict[AudioFormat, bytes], float, dict[str, object]]:
        """One stem watermarked, encoded and signed: (files, loudness, provenance status)."""
        from pipeline.loudness import measure_loudness_lufs

        started = time.perf_counter()
        marked, watermark = self._delivery.watermark(stem, task.sample_rate)
        if self._delivery.watermarker is not None:
            add_elapsed(timings, "watermark", started)
        lufs = round(measure_loudness_lufs(marked, task.sample_rate), 2)
        encoded = self._delivery.encode(marked, task.sample_rate, timings)
        started = time.perf_counter()
        credentials = song_credentials(
            task.provenance,
            model=task.model,
            model_version=task.model_version,
            loudness_lufs=lufs,
            stem=name,
            stem_method=method,
        )
        files, signed = self._delivery.sign(encoded, credentials)
        if signed["signed"]:
            add_elapsed(timings, "c2pa", started)
        return files, lufs, {"watermark": watermark, "c2pa": signed}

    async def check_health(self) -> None:
        return None
