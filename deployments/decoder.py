"""`SongDecoder` — one decoder pool: a song model on one kind of hardware.

The same class is deployed once per pool in `models.pools` (e.g. `Sketch`, `DiT_CUDA`, `DiT_MPS`);
the builder names each deployment and applies its resources. `render` is a streaming method: it
yields `RenderProgress` while the model works and one `RenderedSong` at the end, so progress
reaches the song's SSE stream while the audio is still being made. The audio itself goes to the
object store (`raw_render_key`): the `RenderedSong` is a reference, a few hundred bytes.

Requests are batched across callers with `serve.batch` (size and wait live-tunable through the
pool's `batching` settings, applied in `reconfigure`), and LoRA adapters are loaded per replica
through `serve.multiplexed` (LRU of `ace_step.lora_cache_size`), from a copy on the node's disk
that the node's replicas share (`serve.loras.LoraCache`). The router sets the multiplexed
id only for LoRA requests, so Serve routes them to replicas that already hold the adapter and splits
batches by adapter; base requests stay free to balance.

Metrics (Ray's Prometheus export, tagged with deployment = pool, replica and application; Serve
adds `serve_actual_batch_size` for the requests each `serve.batch` call gathered):
- `songserve_decoder_songs_per_model_call` — how many songs each model call rendered together,
  after the model split the batch by what it cannot mix (durations, LoRAs, padding buckets);
- `songserve_decoder_songs` — songs rendered, tagged `lora` = "base" or "adapter";
- `songserve_decoder_lora_loads` — adapters loaded into this replica (multiplex cache misses);
- `songserve_decoder_renders_stopped` — model calls stopped because no caller waited any more.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pipeline.song_models import RenderFailed, RenderRequest, load_song_model, unpack_rendered
from serve.loras import LoraCache
from serve.store import RAW_RENDER_CONTENT_TYPE, open_object_store, raw_render_key

from .progress import Finished, WorkStopped, with_progress
from .renders import RenderedSong, RenderProgress

if TYPE_CHECKING:
    from pipeline.song_models import SongModel
    from serve.config import DecoderPoolConfig, StorageConfig

logger = logging.getLogger("ray.serve")


class LoadedLora:
    """A LoRA resident in one replica's model. Multiplexing evicts the least recently used one
    by calling `__del__`, which queues the unload on the replica's model thread: after any render
    already queued there, before any later load (idempotent: GC may call it again)."""

    def __init__(self, model: SongModel, lora_id: str, model_thread: ThreadPoolExecutor) -> None:
        self._model = model
        self.lora_id = lora_id
        self._model_thread = model_thread
        self._unloaded = False

    def __del__(self) -> None:
        if not self._unloaded:
            self._unloaded = True
            self._model_thread.submit(self._model.unload_lora, self.lora_id)


class _DecoderMetrics:
    """The decoder's Ray metrics (see the module docstring); created inside the replica."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        self.songs_per_model_call = Histogram(
            "songserve_decoder_songs_per_model_call",
            description="Songs rendered together by one model call (the real batch size).",
            boundaries=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32],
        )
        self.songs = Counter(
            "songserve_decoder_songs",
            description="Songs rendered, by whether a LoRA adapter was used.",
            tag_keys=("lora",),
        )
        self.renders_stopped = Counter(
            "songserve_decoder_renders_stopped",
            description="Model calls stopped part-way because every song in them was "
            "abandoned (canceled, or its job taken over).",
        )
        self.lora_loads = Counter(
            "songserve_decoder_lora_loads",
            description="LoRA adapters loaded into a replica (multiplex cache misses).",
        )


class SongDecoder:
    def __init__(self, pool: DecoderPoolConfig, storage: StorageConfig) -> None:
        from ray import serve

        from serve.services.replicate_webhooks import delivered_prediction_lookup

        self._pool = pool
        self._objects = open_object_store(storage)
        # A Replicate pool with delivery: webhook finds its results where the ingress left them.
        self._model = load_song_model(pool, delivered=delivered_prediction_lookup(self._objects))
        self._replica = f"{pool.name}@{socket.gethostname()}:{os.getpid()}"
        # One copy of each LoRA per node, shared with the node's other replicas (and kept
        # across evictions), instead of a download per replica and load.
        self._loras = LoraCache(self._objects)
        # Every call into the model (renders, adapter loads and unloads) runs on this one thread,
        # in order: an adapter can never change under a render, and the event loop never blocks.
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{pool.name}-model")
        self._counters = {"batches": 0, "requests": 0, "lora_loads": 0, "renders_stopped": 0}
        # id() of each request whose caller still waits for it. Serve cancels the request of a
        # caller that went away (a canceled song); the model, on its own thread, is stopped at
        # its next step once no request of its batch is waited for. (The batch holds the request
        # objects, so their ids cannot be reused while it runs.)
        self._waited_for: set[int] = set()
        self._metrics = _DecoderMetrics()

        # serve.batch and serve.multiplexed keep per-wrapper state, so they wrap closures made
        # here (with sizes from config) rather than decorating the class with constants.
        async def render_batch(
            requests: list[RenderRequest],
        ) -> AsyncIterator[list[RenderProgress | RenderedSong | RenderFailed]]:
            async for items in self._render_batch(requests):
                yield items

        async def load_lora(lora_id: str) -> LoadedLora:
            return await self._load_lora(lora_id)

        # Ray's stubs do not describe generator batch functions; the wrapper is typed as Any.
        batch: Any = serve.batch(
            max_batch_size=pool.batching.max_batch_size,
            batch_wait_timeout_s=pool.batching.batch_wait_timeout_s,
        )
        self._batched_render: Any = batch(render_batch)
        cache_size = pool.ace_step.lora_cache_size if pool.ace_step else 1
        self._lora = serve.multiplexed(max_num_models_per_replica=cache_size)(load_lora)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batching changes from the pool's `batching` settings (Serve `user_config`)."""
        from serve.config import BatchingConfig

        batching = BatchingConfig.model_validate(user_config)
        self._batched_render.set_max_batch_size(batching.max_batch_size)
        self._batched_render.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)

    async def render(self, request: RenderRequest) -> AsyncIterator[RenderProgress | RenderedSong]:
        """Render one variation (batched with concurrent requests), streaming progress then the
        song. A caller that goes away stops the render when no one else in its batch waits."""
        self._waited_for.add(id(request))
        try:
            async for item in self._batched_render(request):
                if isinstance(item, RenderFailed):
                    raise item  # this request's own failure; the batch's others go on
                yield item
        finally:
            self._waited_for.discard(id(request))

    async def _render_batch(
        self, requests: list[RenderRequest]
    ) -> AsyncIterator[list[RenderProgress | RenderedSong | RenderFailed]]:
        """One model call for a batch; every yield holds one item per request, as serve.batch
        wants. The model runs on a worker thread so the replica keeps answering health checks."""
        # Resolve adapters right before rendering: an LRU eviction between routing and now is
        # undone by reloading. (Batches run one at a time, so none is evicted before this render.)
        for lora_id in sorted({r.lora_id for r in requests if r.lora_id}):
            await self._lora(lora_id)
        # Edits and references get their audio here, on this replica, from the object store.
        prepared = list(await asyncio.gather(*(self._with_audio(r) for r in requests)))
        loop = asyncio.get_running_loop()
        started_at = time.time()
        self._counters["batches"] += 1
        self._counters["requests"] += len(requests)
        # On the model thread: planning calls may use the model's tokenizer, which must not run
        # on two threads at once.
        calls = await loop.run_in_executor(self._model_thread, self._model.model_calls, prepared)
        call_size = [0] * len(requests)
        for call in calls:
            self._metrics.songs_per_model_call.observe(len(call))
            for index in call:
                call_size[index] = len(call)
        audios: Sequence[Any] = []
        waited_for = self._waited_for
        rendering = with_progress(
            lambda on_progress: self._model.render(prepared, on_progress),
            self._model_thread,
            stop_when=lambda: not any(id(r) in waited_for for r in requests),
        )
        try:
            async for item in rendering:
                if isinstance(item, Finished):
                    audios = item.value
                else:
                    yield [RenderProgress(*item)] * len(requests)
        except WorkStopped:
            self._counters["renders_stopped"] += 1
            self._metrics.renders_stopped.inc()
            logger.info(
                "stopped rendering %s: no caller waits for it any more",
                ", ".join(f"{r.job_id}/{r.variation}" for r in requests),
            )
            raise
        finished_at = time.time()
        # Stored before anything else can fail, so a failed master is redone from these bytes
        # instead of a new render; what is yielded is only the reference.
        keys = [raw_render_key(r.job_id, r.variation) for r in requests]
        results: list[RenderedSong | RenderFailed] = []
        for key, item, size in zip(keys, audios, call_size, strict=True):
            if isinstance(item, RenderFailed):
                results.append(item)  # that request alone fails (see `render`)
                continue
            audio, details = unpack_rendered(item)
            await self._store_render(key, audio)
            results.append(
                RenderedSong(
                    render_key=key,
                    n_samples=int(audio.shape[-1]),
                    sample_rate=self._model.sample_rate,
                    model=self._model.name,
                    model_version=self._model.version,
                    replica=self._replica,
                    render_started_at=started_at,
                    render_finished_at=finished_at,
                    batch_size=size,
                    pool=self._pool.name,
                    details=details,
                )
            )
        yield list(results)
        for request, result in zip(requests, results, strict=True):
            if isinstance(result, RenderedSong):
                self._metrics.songs.inc(tags={"lora": "adapter" if request.lora_id else "base"})

    async def _with_audio(self, request: RenderRequest) -> RenderRequest:
        """`request` with the source and reference audio it names, at the pool's rate."""
        if request.edit is None and request.reference_key is None:
            return request
        from pipeline.audio import audio_from_file

        async def load(key: str) -> Any:
            data = await self._objects.get(key)  # KeyError: deleted since it was accepted
            return await asyncio.to_thread(audio_from_file, data, self._model.sample_rate)

        source = await load(request.edit.source_key) if request.edit is not None else None
        reference = await load(request.reference_key) if request.reference_key else None
        return replace(request, source_audio=source, reference_audio=reference)

    async def _store_render(self, key: str, audio: Any) -> None:
        from pipeline.audio import raw_render_bytes

        data = await asyncio.to_thread(raw_render_bytes, audio)
        await self._objects.put(key, data, RAW_RENDER_CONTENT_TYPE)

    async def _load_lora(self, lora_id: str) -> LoadedLora:
        """Load a registered LoRA into the model from this node's LoRA cache, which fetches it
        from the object store only when the node has no intact copy (KeyError: unregistered)."""
        path = await self._loras.path(lora_id)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._model_thread, self._model.load_lora, lora_id, path)
        self._counters["lora_loads"] += 1
        self._metrics.lora_loads.inc()
        return LoadedLora(self._model, lora_id, self._model_thread)

    async def stats(self) -> dict[str, Any]:
        """This replica's counters: model calls, requests rendered, LoRA loads (cache misses),
        model calls stopped part-way (abandoned)."""
        return {"replica": self._replica, **self._counters}

    async def check_health(self) -> None:
        self._model.check_health()
