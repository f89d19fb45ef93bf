"""`SongRouter` — picks the decoder pool for each variation and falls back when one fails.

`model: auto` tries the models of `models.auto_order` that have pools, in order; an explicit model
tries that model's pools only. Within a model, pools share the load by capacity: each pool's
capacity is its RUNNING replicas (from Serve, refreshed every `PLACEMENT_REFRESH_S`) times its
`max_ongoing_requests`, and the pool with the lowest share of it in use (renders this router has
in flight there ÷ capacity) is tried first, so a pool with twice the capacity takes about twice
the songs. Equal shares go in rotation. A pool that is saturated (back-pressure) or fails before it
delivered the song is skipped for the next candidate; progress may then restart from step 1.

Each router replica counts only its own renders; with several router replicas each spreads its
part by capacity, so the sum is spread the same way.

Variations are fanned out by the Conductor, one `generate` call each, so every variation is
persisted, retried and resumed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from serve.config import LORA_MODELS

from .failures import describe_failure
from .song_models import RenderedSong, RenderProgress, RenderRequest

if TYPE_CHECKING:
    from serve.config import ModelsConfig

logger = logging.getLogger("ray.serve")


class NoDecoderAvailable(RuntimeError):
    """Every candidate pool for a variation was saturated or failed."""


# How often the router re-checks which pools the cluster can place (nodes join and leave) and how
# many replicas each pool runs (autoscaling).
PLACEMENT_REFRESH_S = 15.0

# Deployment names → RUNNING replicas; a deployment left out is unknown. Blocking.
ReplicaCounts = Callable[[Sequence[str]], Mapping[str, int]]


def running_replicas(deployments: Sequence[str]) -> dict[str, int]:
    """RUNNING replicas of each named deployment of the caller's Serve application.

    Call it inside a Serve replica: the application is the replica's own. Deployments Serve does
    not list are left out. Blocks on the Serve controller (`serve.status()`), so keep it off the
    event loop.
    """
    from ray import serve

    app = serve.status().applications.get(serve.get_replica_context().app_name)
    if app is None:
        return {}
    return {
        # Keys are ReplicaState, a str enum (at run time Serve fills in the plain state names).
        name: sum(
            count
            for state, count in app.deployments[name].replica_states.items()
            if state == "RUNNING"
        )
        for name in deployments
        if name in app.deployments
    }


def order_by_load(
    pools: Sequence[str],
    in_flight: Mapping[str, int],
    capacity: Mapping[str, int],
    rotation_start: int,
) -> list[str]:
    """`pools` from the lowest share of capacity in use (in_flight / capacity) to the highest.

    Equal shares keep the rotated order `pools[rotation_start:] + pools[:rotation_start]`, so equal
    pools alternate. A pool missing from `in_flight` has none; every pool needs a capacity ≥ 1.
    """
    start = rotation_start % len(pools) if pools else 0
    rotated = [*pools[start:], *pools[:start]]
    # sorted() is stable, and equal fractions divide to the same float: ties keep the rotation.
    return sorted(rotated, key=lambda pool: in_flight.get(pool, 0) / capacity[pool])


class SongRouter:
    def __init__(
        self,
        models: ModelsConfig,
        pools: dict[str, Any],
        replica_counts: ReplicaCounts = running_replicas,
    ) -> None:
        """`pools` maps pool name → DeploymentHandle of that pool's SongDecoder.

        `replica_counts` tells how many replicas each pool deployment runs; the default asks Serve
        about this router's application (tests pass their own).
        """
        self._models = models
        self._pools = pools
        self._replica_counts = replica_counts
        # A pool no node can host stays DEPLOYING in Serve with no error, and a call to it would
        # wait forever: such pools are skipped, with the reason kept for /v1/pools.
        self._unplaceable: dict[str, str] = {}
        self._pools_by_model: dict[str, list[str]] = {}
        for pool in models.pools:
            self._pools_by_model.setdefault(pool.model, []).append(pool.name)
        # Counts up per call; taken modulo the placeable pools, so they alternate on ties even
        # while one pool of the model is unplaceable.
        self._rotation = {model: itertools.count() for model in self._pools_by_model}
        self._max_ongoing = {
            pool.name: pool.deployment.max_ongoing_requests for pool in models.pools
        }
        # RUNNING replicas per pool as last seen; absent until Serve has reported the pool.
        self._replicas: dict[str, int] = {}
        # Renders this router replica has started on each pool and not yet seen end.
        self._in_flight = dict.fromkeys(self._max_ongoing, 0)
        self._placement_check = asyncio.get_running_loop().create_task(self._watch_placement())

    async def _watch_placement(self) -> None:
        from serve.placement import cluster_nodes, unplaceable_pools

        names = [pool.name for pool in self._models.pools]
        while True:
            try:
                nodes = await asyncio.to_thread(cluster_nodes)
                unplaceable = unplaceable_pools(self._models.pools, nodes)
                for name in sorted(set(unplaceable) - set(self._unplaceable)):
                    logger.error("decoder pool %s cannot be placed: %s", name, unplaceable[name])
                self._unplaceable = unplaceable
            except Exception:
                logger.exception("checking pool placement failed")
            try:
                # On failure the last counts stay: stale capacities still spread the load.
                self._replicas = dict(await asyncio.to_thread(self._replica_counts, names))
            except Exception:
                logger.exception("counting decoder pool replicas failed")
            await asyncio.sleep(PLACEMENT_REFRESH_S)

    def capacity(self, pool: str) -> int:
        """Renders `pool` runs at once: RUNNING replicas × its `max_ongoing_requests`.

        While the count is unknown or zero (starting up, scaled to zero) the pool counts as one
        replica, so it is still tried rather than stalled behind the others.
        """
        return max(self._replicas.get(pool, 0), 1) * self._max_ongoing[pool]

    async def pools(self) -> list[dict[str, Any]]:
        """Every decoder pool with its model, whether the cluster can place it (and why not), its
        RUNNING replicas (None until Serve reported them), its capacity and this router's renders
        in flight on it."""
        return [
            {
                "name": pool.name,
                "model": pool.model,
                "placeable": pool.name not in self._unplaceable,
                "reason": self._unplaceable.get(pool.name),
                "replicas": self._replicas.get(pool.name),
                "capacity": self.capacity(pool.name),
                "in_flight": self._in_flight[pool.name],
            }
            for pool in self._models.pools
        ]

    def candidates(self, model: str, *, with_lora: bool = False) -> list[str]:
        """Pool names to try for `model`, best first; only LoRA-capable ones `with_lora`.

        Models keep their `auto_order`; within a model the least loaded pool comes first (see
        `order_by_load`). Unplaceable pools are left out.
        """
        if model == "auto":
            models = [m for m in self._models.auto_order if m in self._pools_by_model]
        else:
            models = [model]
        if with_lora:
            models = [m for m in models if m in LORA_MODELS]
        chosen: list[str] = []
        for name in models:
            pools = [p for p in self._pools_by_model.get(name, []) if p not in self._unplaceable]
            if pools:
                capacity = {pool: self.capacity(pool) for pool in pools}
                chosen.extend(
                    order_by_load(pools, self._in_flight, capacity, next(self._rotation[name]))
                )
        return chosen

    @contextlib.contextmanager
    def rendering(self, pool: str) -> Iterator[None]:
        """Counts one render in flight on `pool` for as long as the block runs."""
        self._in_flight[pool] += 1
        try:
            yield
        finally:
            self._in_flight[pool] -= 1

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
            # Counted before the first await, so concurrent variations see each other's picks.
            with self.rendering(pool_name):
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
