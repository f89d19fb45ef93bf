"""`Verifier` — checks an uploaded file's content credentials and watermark (POST /v1/verify).

Light, interactive work (≈ 30 ms for a song-length file) with a deployment of its own
(`deployments.verifier`, concurrent by default): it used to run on the PostProcessor, whose
replicas master one song at a time, so verify calls queued behind whole masterings and were
refused (503) or timed out under load. Each call reads the C2PA manifest and, when a detector
is configured, runs AudioSeal on at most `max_seconds` of audio, on a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve.config import AudioFormat, WatermarkConfig


class Verifier:
    def __init__(self, watermark: WatermarkConfig) -> None:
        """Loads the watermark detector when `watermark.detector_path` is set."""
        from pipeline.engines.audioseal import AudioSealWatermarker

        # None without weights: reports then say "not configured".
        self._watermarker = AudioSealWatermarker.from_config(watermark)

    async def verify(self, data: bytes, fmt: AudioFormat, max_seconds: float) -> dict[str, object]:
        """C2PA credentials of a file (`fmt` already sniffed by the API) and, when a watermark
        detector is configured, its watermark in the first `max_seconds` of audio."""
        return await asyncio.to_thread(self._verify, data, fmt, max_seconds)

    def _verify(self, data: bytes, fmt: AudioFormat, max_seconds: float) -> dict[str, object]:
        from pipeline.encode import decode_audio
        from pipeline.provenance import read_credentials

        credentials = read_credentials(data, fmt)
        c2pa = {
            key: credentials.get(key)
            for key in ("present", "valid", "trusted", "manifest", "errors")
        }
        watermark: object = "not configured"
        watermarker = self._watermarker
        if watermarker is not None and watermarker.can_detect:
            audio, sample_rate = decode_audio(data, max_duration_s=max_seconds)
            found = watermarker.detect(audio, sample_rate)
            watermark = {"detected": found["detected"], "score": found["score"]}
        return {"format": fmt, "c2pa": c2pa, "watermark": watermark}

    async def check_health(self) -> None:
        return None
