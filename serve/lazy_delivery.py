"""Lazy formats: a format that is served but not encoded while mastering (mp3, flac, wav by
default; `postprocess.eager_formats`) is made from the variation's kept master on its first
request, by the `OnDemandEncoder`, then signed and stored once. One requester — on any API
replica — claims the file in the job store and has it made; the others wait for its key to be
recorded on the variation."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

from .http.errors import ApiError

if TYPE_CHECKING:
    from .config import AppConfig
    from .services.graph import Graph
    from .store import JobRecord, JobStore, VariationRecord


class LazyDelivery:
    def __init__(self, config: AppConfig, jobs: JobStore, graph: Graph) -> None:
        """`graph.deliver` reaches the OnDemandEncoder."""
        self._config = config
        self._jobs = jobs
        self._graph = graph
        self._worker = f"api-{secrets.token_hex(6)}"  # who holds this replica's delivery claims

    async def key(self, job: JobRecord, variation: VariationRecord, fmt: str) -> str:
        """The key of a lazy format's file, made from the variation's kept master on its first
        request: one requester (on any replica) claims it in the job store and has the
        OnDemandEncoder make it; the others wait for it to be recorded. 503 with Retry-After
        when it takes longer than `postprocess.lazy_encode_wait_s`."""
        post = self._config.postprocess
        if fmt not in post.formats or "master" not in variation.objects:
            raise ApiError(
                404,
                "not_found",
                f"this server does not produce {fmt} files (postprocess.formats)"
                if fmt not in post.formats
                else f"variation {variation.index} has no {fmt} file, and no master to make one "
                f"from (it was made before {fmt} was served)",
                "fmt",
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + post.lazy_encode_wait_s
        index, making = variation.index, None
        while True:
            if making is None:
                token = await self._jobs.claim_delivery(
                    job.id, index, fmt, self._worker, lease_s=post.lazy_encode_lease_s
                )
                if token is not None:
                    making = asyncio.ensure_future(self._deliver(job.id, index, fmt, token))
            if making is not None and making.done():
                return self._made(making, fmt, index)
            current = await self._jobs.get_job(job.id)
            recorded = current.variations[index].objects if current else {}
            if fmt in recorded:
                return recorded[fmt]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ApiError(
                    503,
                    "encoding",
                    f"the {fmt} file of variation {index} is being encoded on its first "
                    "request; retry shortly",
                    "fmt",
                    {"Retry-After": str(max(1, round(post.lazy_encode_wait_s / 6)))},
                )
            poll_s = min(self._config.storage.poll_interval_s, remaining)
            if making is not None:
                await asyncio.wait([making], timeout=poll_s)
            else:
                await asyncio.sleep(poll_s)

    @staticmethod
    def _made(making: asyncio.Future[str], fmt: str, index: int) -> str:
        """The key a finished delivery returned; its failure as an error the client can act on."""
        try:
            return making.result()
        except ApiError:
            raise
        except Exception as error:
            raise ApiError(
                500,
                "encoding_failed",
                f"the {fmt} file of variation {index} could not be made "
                f"({type(error).__name__}); retry, or use another format",
                "fmt",
            ) from error

    async def _deliver(self, job_id: str, index: int, fmt: str, token: str) -> str:
        """Have the OnDemandEncoder make a claimed file; the claim goes back when the call does
        not reach it (the encoder hands it back itself when it fails)."""
        try:
            key: str = await self._graph.deliver(job_id, index, fmt, token)
        except ApiError:  # back-pressure: the encoder never saw the claim
            await self._jobs.finish_delivery(job_id, index, fmt, token, delivered=False)
            raise
        return key
