"""`SongRouter` — picks the decoder pool for each variation and falls back when one fails.

`model: auto` tries the models of `models.auto_order` that have pools, in order; an explicit model
tries that model's pools only. Within a model the pool where the variation is expected to wait
least comes first (`serve.pool_load.order_by_wait`): a pool with a free render slot before a full
one, then the pool that drains its work soonest — its work in flight (seconds of audio) × its
speed ÷ its RUNNING replicas — so a pool twice as fast, or with twice the replicas, takes about
twice the songs. Equal pools go in rotation. A pool that is saturated (back-pressure) or fails
before it delivered the song is skipped for the next candidate; progress may then restart.

Work in flight is counted across the cluster, in the job store. Before it calls a pool the router
yields `RenderingOn(pool)`; the conductor records the pool on the running variation, so the store
counts renders per pool over every router and conductor replica (`JobStore.renders_by_pool`). One
query serves every variation routed within `LOAD_CACHE_S`, and renders this replica started since
that query are added to it. If the store cannot answer, the last counts stay in use for
`LOAD_STALE_S`, and after that only this replica's own renders count: routing never stops for it.

Why the store and not Serve: Ray Serve 2.60 has no supported cluster-wide queue length per
deployment. Handles probe replica queue lengths only inside one deployment's request router, for
that handle's routing; the controller aggregates ongoing requests only for autoscaling
deployments, behind private `_for_testing` methods; `serve_deployment_queued_queries` is a
per-handle Prometheus gauge, ~10 s late and only readable by scraping every node. The store is
already shared, cheap to ask (one indexed query over the running jobs) and also knows each
render's length in seconds, which a request count does not.

Speed is measured here: each `RenderedSong` gives render seconds per audio second (the batch's
time shared among the songs of its model call), averaged per pool from the pool's
`expected_render_s_per_audio_s` (`serve.pool_load.SpeedMeter`). Each router replica measures the
renders it routes. `pools()` reports all of it for /v1/pools, queue estimates and autoscaling.

Variations are fanned out by the Conductor, one `generate` call each, so every variation is
persisted, retried and resumed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.song_contracts import TEXT2MUSIC, candidate_models
from pipeline.song_models import RenderRequest
from serve.pool_load import PoolLoad, SpeedMeter, order_by_wait

from .failures import describe_failure
from .handles import cancelled_unless_finished
from .renders import RenderedSong, RenderProgress

if TYPE_CHECKING:
    from serve.config import DeploymentOptions, ModelsConfig, StorageConfig
    from serve.store.records import PoolRenders

logger = logging.getLogger("ray.serve")


class NoDecoderAvailable(RuntimeError):
    """Every candidate pool for a variation was saturated or failed."""


@dataclass(frozen=True)
class RenderingOn:
    """Yielded by `generate` before each pool it tries: the pool now rendering the variation."""

    pool: str


# How often the router re-checks which pools the cluster can place (nodes join and leave) and how
# many replicas each pool runs (autoscaling).
PLACEMENT_REFRESH_S = 15.0
# While a pool runs fewer replicas than it starts with (the app is starting: Serve brings pool
# replicas up after the router), counts are re-read this often, for at most STARTING_WINDOW_S
# after the router started: otherwise /v1/pools and routing would undercount for up to 15 s.
STARTING_REFRESH_S = 1.0
STARTING_WINDOW_S = 120.0
# Variations routed within this long of one store query share it.
LOAD_CACHE_S = 0.5
# How long routing waits for the store's counts before it goes on with the last ones.
LOAD_TIMEOUT_S = 1.0
# A store query that has not answered in this long is given up (the next call asks again).
LOAD_QUERY_TIMEOUT_S = 5.0
# Counts older than this are dropped (the store has not answered): own renders only.
LOAD_STALE_S = 10.0

# Deployment names → RUNNING replicas; a deployment left out is unknown. Blocking.
ReplicaCounts = Callable[[Sequence[str]], Mapping[str, int]]
# Renders in flight per pool across the cluster (`JobStore.renders_by_pool`).
ClusterLoad = Callable[[], Awaitable[Mapping[str, "PoolRenders"]]]


def _replicas_at_start(deployment: DeploymentOptions) -> int:
    """How many replicas Serve starts a pool deployment with."""
    scaling = deployment.autoscaling
    if scaling is None:
        return deployment.num_replicas
    if scaling.initial_replicas is not None:
        return scaling.initial_replicas
    return scaling.min_replicas


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


@dataclass(frozen=True)
class _Render:
    pool: str
    audio_s: float
    started: float  # time.monotonic()


class SongRouter:
    def __init__(
        self,
        models: ModelsConfig,
        pools: dict[str, Any],
        storage: StorageConfig | None = None,
        *,
        replica_counts: ReplicaCounts = running_replicas,
        cluster_load: ClusterLoad | None = None,
    ) -> None:
        """`pools` maps pool name → DeploymentHandle of that pool's SongDecoder.

        Renders in flight are counted in the job store of `storage` (or by `cluster_load`, which
        tests pass); with neither, only this replica's own. `replica_counts` tells how many
        replicas each pool deployment runs; the default asks Serve about this router's
        application.
        """
        self._models = models
        self._pools = pools
        self._replica_counts = replica_counts
        if cluster_load is None and storage is not None:
            from serve.store import open_job_store

            cluster_load = open_job_store(storage).renders_by_pool
        self._cluster_load = cluster_load
        # A pool no node can host stays DEPLOYING in Serve with no error, and a call to it would
        # wait forever: such pools are skipped, with the reason kept for /v1/pools.
        self._unplaceable: dict[str, str] = {}
        self._pools_by_model: dict[str, list[str]] = {}
        for pool in models.pools:
            self._pools_by_model.setdefault(pool.model, []).append(pool.name)
        self._tasks = {pool.name: pool.served_tasks for pool in models.pools}
        # Counts up per call; taken modulo the placeable pools, so they alternate on ties even
        # while one pool of the model is unplaceable.
        self._rotation = {model: itertools.count() for model in self._pools_by_model}
        self._max_ongoing = {
            pool.name: pool.deployment.max_ongoing_requests for pool in models.pools
        }
        self._speed = {
            pool.name: SpeedMeter(pool.expected_render_s_per_audio_s) for pool in models.pools
        }
        # RUNNING replicas per pool as last seen; absent until Serve has reported the pool.
        self._replicas: dict[str, int] = {}
        # Renders this router replica has started and not yet seen end.
        self._local: dict[int, _Render] = {}
        self._local_ids = itertools.count()
        # The store's last counts, and when the query that made them began (monotonic).
        self._cluster: Mapping[str, PoolRenders] = {}
        self._cluster_at = -float("inf")
        self._load_tried_at = -float("inf")
        self._load_query: asyncio.Task[None] | None = None
        self._placement_check = asyncio.get_running_loop().create_task(self._watch_placement())

    async def _watch_placement(self) -> None:
        from serve.placement import cluster_nodes, unplaceable_pools

        names = [pool.name for pool in self._models.pools]
        at_start = {pool.name: _replicas_at_start(pool.deployment) for pool in self._models.pools}
        started = time.monotonic()
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
            starting = time.monotonic() - started < STARTING_WINDOW_S and any(
                self._replicas.get(name, 0) < at_start[name] for name in names
            )
            await asyncio.sleep(STARTING_REFRESH_S if starting else PLACEMENT_REFRESH_S)

    # -- load ---------------------------------------------------------------------------------

    async def refresh_load(self) -> None:
        """Bring the cluster's render counts up to date, unless they were asked for within
        `LOAD_CACHE_S`. Concurrent callers share one query; none waits longer than
        `LOAD_TIMEOUT_S` (the query goes on, and later calls use its answer)."""
        if self._cluster_load is None or time.monotonic() - self._load_tried_at < LOAD_CACHE_S:
            return
        if self._load_query is None or self._load_query.done():
            self._load_tried_at = time.monotonic()
            self._load_query = asyncio.get_running_loop().create_task(self._query_load())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._load_query), LOAD_TIMEOUT_S)

    async def _query_load(self) -> None:
        assert self._cluster_load is not None
        began = time.monotonic()
        try:
            counts = await asyncio.wait_for(self._cluster_load(), LOAD_QUERY_TIMEOUT_S)
        except Exception as error:  # noqa: BLE001 - routing goes on with what it has
            logger.warning("counting renders in the job store failed: %s", describe_failure(error))
            return
        self._cluster, self._cluster_at = dict(counts), began

    def _in_flight(self, pool: str) -> tuple[int, float, str]:
        """Renders and audio seconds in flight on `pool`, and where they were counted: the
        store's last counts plus this replica's renders started since ("cluster"), or this
        replica's own while the store has no recent answer ("router")."""
        fresh = time.monotonic() - self._cluster_at < LOAD_STALE_S
        since = self._cluster_at if fresh else -float("inf")
        mine = [r for r in self._local.values() if r.pool == pool and r.started >= since]
        renders, audio_s = len(mine), sum(r.audio_s for r in mine)
        if fresh and pool in self._cluster:
            renders += self._cluster[pool].renders
            audio_s += self._cluster[pool].audio_s
        return renders, audio_s, "cluster" if fresh else "router"

    def load(self, pool: str) -> PoolLoad:
        """`pool` as the choice sees it now (see `serve.pool_load.PoolLoad`)."""
        renders, audio_s, _ = self._in_flight(pool)
        replicas = max(self._replicas.get(pool, 0), 1)
        return PoolLoad(
            replicas=replicas,
            capacity=self.capacity(pool),
            renders=renders,
            audio_s=audio_s,
            seconds_per_audio_second=self._speed[pool].value,
        )

    def capacity(self, pool: str) -> int:
        """Renders `pool` runs at once: RUNNING replicas × its `max_ongoing_requests`.

        While the count is unknown or zero (starting up, scaled to zero) the pool counts as one
        replica, so it is still tried rather than stalled behind the others.
        """
        return max(self._replicas.get(pool, 0), 1) * self._max_ongoing[pool]

    def measure(self, pool: str, song: RenderedSong) -> None:
        """Fold a finished render's timing into `pool`'s measured speed."""
        self._speed[pool].add_sample(song.seconds_per_audio_second)

    async def pools(self) -> list[dict[str, Any]]:
        """Every decoder pool with its model, whether the cluster can place it (and why not),
        its RUNNING replicas (None until Serve reported them), capacity (renders at once),
        renders and audio seconds in flight (`in_flight_source`: "cluster" from the job store,
        or "router" while the store is not answering), measured `seconds_per_audio_second`
        (the configured guess until `measured_renders` > 0) and the expected wait in seconds
        before a new variation would start there."""
        await self.refresh_load()
        listed = []
        for pool in self._models.pools:
            load = self.load(pool.name)
            renders, audio_s, source = self._in_flight(pool.name)
            listed.append(
                {
                    "name": pool.name,
                    "model": pool.model,
                    "placeable": pool.name not in self._unplaceable,
                    "reason": self._unplaceable.get(pool.name),
                    "replicas": self._replicas.get(pool.name),
                    "capacity": load.capacity,
                    "in_flight": renders,
                    "in_flight_audio_s": round(audio_s, 3),
                    "in_flight_source": source,
                    "seconds_per_audio_second": load.seconds_per_audio_second,
                    "measured_renders": self._speed[pool.name].renders,
                    "expected_wait_s": round(load.expected_wait_s, 3),
                }
            )
        return listed

    def candidates(
        self,
        model: str,
        *,
        with_lora: bool = False,
        language: str = "en",
        task: str = TEXT2MUSIC,
        reference: bool = False,
    ) -> list[str]:
        """Pool names to try for `model`, best first; only those whose model takes a LoRA
        `with_lora`, can do `task`, and takes reference audio when asked (`reference`).

        For `auto`, models come in `auto_models` order (those that prefer the song's `language`
        first, then `auto_order`); within a model the pool with the shortest expected wait
        comes first (see `order_by_wait`). Unplaceable pools are left out. Uses the load as last
        counted: `refresh_load()` first for fresh counts.
        """
        models = candidate_models(
            model,
            language=language,
            auto_order=self._models.auto_order,
            served=set(self._pools_by_model),
            with_lora=with_lora,
            reference=reference,
        )
        chosen: list[str] = []
        for name in models:
            pools = [
                p
                for p in self._pools_by_model.get(name, [])
                if p not in self._unplaceable and task in self._tasks[p]
            ]
            if pools:
                load = {pool: self.load(pool) for pool in pools}
                chosen.extend(order_by_wait(pools, load, next(self._rotation[name])))
        return chosen

    @contextlib.contextmanager
    def rendering(self, pool: str, audio_s: float = 0.0) -> Iterator[None]:
        """Counts one render of `audio_s` seconds in flight on `pool` for as long as the block
        runs (on top of the store's counts until the store has seen it)."""
        key = next(self._local_ids)
        self._local[key] = _Render(pool, audio_s, time.monotonic())
        try:
            yield
        finally:
            del self._local[key]

    async def generate(
        self, request: RenderRequest, model: str
    ) -> AsyncIterator[RenderingOn | RenderProgress | RenderedSong]:
        """Stream one variation's render from the first pool that delivers it: `RenderingOn`
        before each pool tried, then its progress and the song."""
        from ray.serve.exceptions import BackPressureError

        await self.refresh_load()
        candidates = self.candidates(
            model,
            with_lora=request.lora_id is not None,
            language=request.language,
            task=request.task,
            reference=request.reference_key is not None,
        )
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
            with self.rendering(pool_name, request.duration_s):
                yield RenderingOn(pool_name)
                stream = handle.render.remote(request)
                try:
                    async with cancelled_unless_finished(stream):
                        async for item in stream:
                            if isinstance(item, RenderedSong):
                                self.measure(pool_name, item)
                                yield item
                                return
                            yield item
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
