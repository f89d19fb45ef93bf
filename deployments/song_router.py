"""`SongRouter` — picks the decoder pool for each variation and falls back when one fails.

`model: auto` tries the models of `models.auto_order` that have pools, in order; an explicit model
tries that model's pools only. Within a model, pools are tried in rotation so several pools (a CUDA
pool and a Mac pool) share the load. A pool that is saturated (back-pressure) or fails before it
delivered the song is skipped for the next candidate; progress may then restart from step 1.

Variations are fanned out by the Conductor, one `generate` call each, so every variation is
persisted, retried and resumed on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from serve.config import LORA_MODELS

from .failures import describe_failure
from .song_models import RenderedSong, RenderProgress, RenderRequest

if TYPE_CHECKING:
    from serve.config import ModelsConfig

logger = logging.getLogger("ray.serve")


class NoDecoderAvailable(RuntimeError):
    """Every candidate pool for a variation was saturated or failed."""


# How often the router re-checks which pools the cluster can place (nodes join and leave).
PLACEMENT_REFRESH_S = 15.0


class SongRouter:
    def __init__(self, models: ModelsConfig, pools: dict[str, Any]) -> None:
        """`pools` maps pool name → DeploymentHandle of that pool's SongDecoder."""
        self._models = models
        self._pools = pools
        # A pool no node can host stays DEPLOYING in Serve with no error, and a call to it would
        # wait forever: such pools are skipped, with the reason kept for /v1/pools.
        self._unplaceable: dict[str, str] = {}
        self._placement_check = asyncio.get_running_loop().create_task(self._watch_placement())
        self._pools_by_model: dict[str, list[str]] = {}
        for pool in models.pools:
            self._pools_by_model.setdefault(pool.model, []).append(pool.name)
        self._rotation = {
            model: itertools.cycle(range(len(names)))
            for model, names in self._pools_by_model.items()
        }

    async def _watch_placement(self) -> None:
        from serve.placement import cluster_nodes, unplaceable_pools

        while True:
            try:
                nodes = await asyncio.to_thread(cluster_nodes)
                unplaceable = unplaceable_pools(self._models.pools, nodes)
                for name in sorted(set(unplaceable) - set(self._unplaceable)):
                    logger.error("decoder pool %s cannot be placed: %s", name, unplaceable[name])
                self._unplaceable = unplaceable
            except Exception:
                logger.exception("checking pool placement failed")
            await asyncio.sleep(PLACEMENT_REFRESH_S)

    async def pools(self) -> list[dict[str, Any]]:
        """Every decoder pool with its model and whether the cluster can place it (and why not)."""
        return [
            {
                "name": pool.name,
                "model": pool.model,
                "placeable": pool.name not in self._unplaceable,
                "reason": self._unplaceable.get(pool.name),
            }
            for pool in self._models.pools
        ]

    def candidates(self, model: str, *, with_lora: bool = False) -> list[str]:
        """Pool names to try for `model`, best first; only LoRA-capable ones `with_lora`."""
        if model == "auto":
            models = [m for m in self._models.auto_order if m in self._pools_by_model]
        else:
            models = [model]
        if with_lora:
            models = [m for m in models if m in LORA_MODELS]
        chosen: list[str] = []
        for name in models:
            pools = self._pools_by_model.get(name, [])
            if pools:
                start = next(self._rotation[name])
                chosen.extend(pools[start:] + pools[:start])
        return [name for name in chosen if name not in self._unplaceable]

    async def generate(
        self, request: RenderRequest, model: str
    ) -> AsyncIterator[RenderProgress | RenderedSong]:
        """Stream one variation's render from the first pool that delivers it."""
        from ray.serve.exceptions import BackPressureError

        candidates = self.candidates(model, with_lora=request.lora_id is not None)
        if not candidates:
            reasons = "; ".join(f"{name}: {why}" for name, why in self._unplaceable.items())
            raise NoDecoderAvailable(
                f"no placeable decoder pool serves model {model!r}"
                + (f" (unplaceable: {reasons})" if reasons else "")
            )
        failures: list[str] = []
        for pool_name in candidates:
            handle = self._pools[pool_name].options(stream=True)
            if request.lora_id:
                # Only adapter requests carry a multiplexed id, so base traffic stays balanced
                # and adapter traffic goes to replicas that already hold the adapter.
                handle = handle.options(multiplexed_model_id=request.lora_id)
            stream = handle.render.remote(request)
            try:
                async for item in stream:
                    yield item
                    if isinstance(item, RenderedSong):
                        return
                failures.append(f"{pool_name}: ended without a song")
            except BackPressureError:
                failures.append(f"{pool_name}: saturated")
            except Exception as error:  # noqa: BLE001 - any pool failure means: try the next pool
                logger.warning(
                    "decoder pool %s failed on %s/%s: %s",
                    pool_name,
                    request.job_id,
                    request.variation,
                    describe_failure(error),
                )
                failures.append(f"{pool_name}: {describe_failure(error)}")
        raise NoDecoderAvailable("; ".join(failures))

    async def check_health(self) -> None:
        return None
