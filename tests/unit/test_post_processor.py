"""The PostProcessor masters one variation at a time per replica, however many it admits; a
second admitted request fetches its render meanwhile and starts as soon as the first is done."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from deployments.post_processor import PostProcessor, Provenance
from deployments.renders import RenderedSong
from pipeline.audio import raw_render_bytes
from pipeline.provenance import prompt_sha256
from serve.certs import ensure_dev_chain
from serve.config import resolve_config
from serve.store import RAW_RENDER_CONTENT_TYPE, open_object_store, raw_render_key

SR = 48_000


def _render(seconds: float, frequency: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.3 * np.sin(2 * np.pi * frequency * t)
    return np.stack([tone, 0.8 * tone]).astype(np.float32)


def test_two_admitted_requests_are_mastered_one_after_the_other(tmp_path: Path) -> None:
    config = resolve_config({"storage": {"data_dir": str(tmp_path)}})
    ensure_dev_chain(config.postprocess.c2pa)
    processor = PostProcessor(config.postprocess, config.storage)
    spans: list[tuple[int, float, float, str]] = []
    master_and_encode = processor._master_and_encode

    def timed(*args: Any) -> Any:
        started = time.monotonic()
        try:
            return master_and_encode(*args)
        finally:
            spans.append((args[5], started, time.monotonic(), threading.current_thread().name))

    processor._master_and_encode = timed  # type: ignore[method-assign]

    async def run() -> list[Any]:
        objects = open_object_store(config.storage)
        rendered = []
        for index, frequency in enumerate((220.0, 330.0)):
            audio = _render(4.0, frequency)
            key = raw_render_key("song_lane", index)
            await objects.put(key, raw_render_bytes(audio), RAW_RENDER_CONTENT_TYPE)
            rendered.append(RenderedSong(key, audio.shape[1], SR, "sketch", "1", "r", 0.0, 1.0))
        provenance = Provenance(
            title="lane", seed=1, prompt_sha256=prompt_sha256("x"), created="2026-01-01T00:00:00Z"
        )
        return await asyncio.gather(
            *(
                processor.process(
                    song, job_id="song_lane", index=index, target_lufs=-14.0, provenance=provenance
                )
                for index, song in enumerate(rendered)
            )
        )

    done = asyncio.run(run())
    assert [sorted(d.objects) for d in done] == [["hls", "m4a", "master", "peaks"]] * 2
    assert all(abs(d.loudness_lufs + 14.0) < 1.0 for d in done)
    (first, _, a1, thread_a), (second, b0, _, thread_b) = sorted(spans, key=lambda s: s[1])
    assert {first, second} == {0, 1}
    assert a1 <= b0, f"masterings overlapped: {spans}"  # one at a time
    assert thread_a == thread_b and thread_a.startswith("mastering")
