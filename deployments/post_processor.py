"""`PostProcessor` — masters, encodes and stores one variation.

Wraps the pure functions of `pipeline/` (loudness, encoders, peaks) and writes every artefact to the
object store under deterministic keys, so a re-run after a crash overwrites rather than duplicates.
The work is CPU-bound and runs on a worker thread; one variation per replica at a time is the
intended setting (`max_ongoing_requests: 1`), scale with replicas.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from serve.objects import open_object_store, variation_key

if TYPE_CHECKING:
    from serve.config import PostProcessConfig, StorageConfig

    from .song_models import RenderedSong


@dataclass(frozen=True)
class ProcessedVariation:
    duration_s: float
    sample_rate: int
    loudness_lufs: float
    true_peak_dbtp: float
    objects: dict[str, str]  # format / "peaks" → object key
    timings_s: dict[str, float] = field(default_factory=dict)


class PostProcessor:
    def __init__(self, config: PostProcessConfig, storage: StorageConfig) -> None:
        self._config = config
        self._objects = open_object_store(storage.storage_url)

    def _master_and_encode(
        self, rendered: RenderedSong, target_lufs: float
    ) -> tuple[dict[str, tuple[bytes, str]], ProcessedVariation]:
        from pipeline.encode import CONTENT_TYPES, encode_audio
        from pipeline.loudness import normalize_loudness
        from pipeline.peaks import peaks_document

        timings: dict[str, float] = {}
        started = time.perf_counter()
        mastered = normalize_loudness(
            rendered.audio,
            rendered.sample_rate,
            target_lufs=target_lufs,
            ceiling_dbtp=self._config.ceiling_dbtp,
        )
        timings["loudness"] = time.perf_counter() - started
        artefacts: dict[str, tuple[bytes, str]] = {}
        for fmt in self._config.formats:
            started = time.perf_counter()
            data = encode_audio(
                mastered.audio, rendered.sample_rate, fmt, bitrate_kbps=self._config.bitrate_kbps
            )
            artefacts[f"audio.{fmt}"] = (data, CONTENT_TYPES[fmt])
            timings[f"encode_{fmt}"] = time.perf_counter() - started
        if "audio.m4a" in artefacts:
            # HLS from the m4a's own AAC frames: no second encode, same audio as the download.
            from pipeline.hls import hls_content_type, hls_from_m4a

            started = time.perf_counter()
            hls = hls_from_m4a(artefacts["audio.m4a"][0], segment_s=self._config.hls_segment_s)
            for name, data in hls.items():
                artefacts[f"hls/{name}"] = (data, hls_content_type(name))
            timings["hls"] = time.perf_counter() - started
        started = time.perf_counter()
        peaks = peaks_document(mastered.audio, rendered.sample_rate, self._config.samples_per_peak)
        artefacts["peaks.json"] = (
            json.dumps(peaks, separators=(",", ":")).encode(),
            "application/json",
        )
        timings["peaks"] = time.perf_counter() - started
        summary = ProcessedVariation(
            duration_s=mastered.audio.shape[-1] / rendered.sample_rate,
            sample_rate=rendered.sample_rate,
            loudness_lufs=round(float(mastered.loudness_lufs), 2),
            true_peak_dbtp=round(float(mastered.true_peak_dbtp), 2),
            objects={},
            timings_s=timings,
        )
        return artefacts, summary

    async def process(
        self, rendered: RenderedSong, *, job_id: str, index: int, target_lufs: float
    ) -> ProcessedVariation:
        """Master to `target_lufs` (true peak ≤ the ceiling), encode every configured format and
        the waveform peaks, store them, and return the measurements and object keys."""
        artefacts, summary = await asyncio.to_thread(self._master_and_encode, rendered, target_lufs)
        started = time.perf_counter()
        objects: dict[str, str] = {}
        for name, (data, content_type) in artefacts.items():
            key = variation_key(job_id, index, name)
            await self._objects.put(key, data, content_type)
            if name.startswith("hls/"):
                if name == "hls/index.m3u8":  # segments sit next to their playlist
                    objects["hls"] = key
                continue
            objects[name.removeprefix("audio.").removesuffix(".json")] = key
        timings = {**summary.timings_s, "store": time.perf_counter() - started}
        return replace(summary, objects=objects, timings_s=timings)

    async def check_health(self) -> None:
        return None
