"""`OnDemandEncoder` — makes a lazy format of a finished variation on its first request.

The PostProcessor encodes only `postprocess.eager_formats` (m4a, with HLS and peaks) and keeps
the delivered master (24-bit FLAC) and its content credentials. When a client first asks for
another served format (mp3, flac, wav), the API claims the file in the job store (a short lease
on (song, variation, format), so concurrent first requests on any API replica encode it once)
and calls `deliver` here with the claim's token: decode the master, encode, sign exactly as the
eager files were signed, store, record the key on the variation, end the claim.

Why a deployment of its own: an encode is seconds of CPU (a 180 s mp3 ≈ 3 s here). The
PostProcessor masters one variation at a time per replica, so a first download would wait
behind whole masterings; the Verifier's work is ≈ 30 ms and interactive, so encodes there
would queue verify calls behind seconds of work. `deployments.encoder` sizes this on its own.

A delivery, once started, finishes even if the requester goes away (it is shielded from
cancellation): the next request then finds the file. If this replica dies mid-way, the claim's
lease runs out and the next request claims the file again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from serve.store import (
    master_info_key,
    master_key,
    open_job_store,
    open_object_store,
    variation_audio_key,
)

from .post_processor import DeliveryChain, deliver_from_master, source_ingredient

if TYPE_CHECKING:
    from pipeline.provenance import SourceIngredient
    from serve.config import AudioFormat, PostProcessConfig, StorageConfig

logger = logging.getLogger("ray.serve")


class OnDemandEncoder:
    def __init__(self, config: PostProcessConfig, storage: StorageConfig) -> None:
        """Raises ValueError naming the setting when signing is on but the chain is missing."""
        self._objects = open_object_store(storage)
        self._jobs = open_job_store(storage)
        # The master carries its watermark already: no watermarker to load.
        self._delivery = DeliveryChain(config, watermark=False)

    async def deliver(self, job_id: str, index: int, fmt: AudioFormat, token: str) -> str:
        """Make file `fmt` of variation `index` from its master under the claim `token`; returns
        its object key, once stored and recorded on the variation. On failure the claim is
        handed back and the error raised (KeyError when the master is missing)."""
        return await asyncio.shield(asyncio.ensure_future(self._deliver(job_id, index, fmt, token)))

    async def _source(self, info: bytes) -> SourceIngredient | None:
        """An edit's source file, named in its lazy files' manifests as in its eager ones."""
        import json

        described = json.loads(info)
        key = described.get("source_key")
        if key is None or not self._delivery.config.c2pa.enabled:
            return None
        try:
            data = await self._objects.get(key)
        except KeyError:  # the source was deleted since
            return None
        return source_ingredient(described.get("source_title"), data)

    async def _deliver(self, job_id: str, index: int, fmt: AudioFormat, token: str) -> str:
        key = variation_audio_key(job_id, index, fmt)
        try:
            # An earlier claim may have stored it and died before recording it (puts are
            # atomic: a stored file is whole).
            if await self._objects.stat(key) is None:
                from pipeline.encode import CONTENT_TYPES

                master = await self._objects.get(master_key(job_id, index))
                info = await self._objects.get(master_info_key(job_id, index))
                source = await self._source(info)
                started = time.perf_counter()
                data, timings = await asyncio.to_thread(
                    deliver_from_master, self._delivery, master, info, fmt, source
                )
                from serve.metrics import song_metrics, stage_tags

                for name, seconds in timings.items():  # e.g. decode, encode_mp3, c2pa
                    song_metrics().stage_seconds.observe(seconds, tags=stage_tags(name))
                logger.info(
                    "made %s of %s v%d on its first request in %.2f s (%s)",
                    fmt,
                    job_id,
                    index,
                    time.perf_counter() - started,
                    ", ".join(f"{name} {s:.2f}" for name, s in timings.items()),
                )
                await self._objects.put(key, data, CONTENT_TYPES[fmt])
            await self._jobs.add_variation_object(job_id, index, fmt, key)
        except BaseException:
            await self._jobs.finish_delivery(job_id, index, fmt, token, delivered=False)
            raise
        await self._jobs.finish_delivery(job_id, index, fmt, token, delivered=True)
        return key

    async def check_health(self) -> None:
        return None
