"""Backlog autoscaling: decoder pools scale on the render seconds waiting for them.

Why. The conductor drives at most `jobs.max_concurrent_jobs` songs per replica, so Serve's default
autoscaler (ongoing requests per replica) never sees the songs queued behind that cap: a pool
stays small while hundreds of songs wait. With `autoscaling.policy: backlog` on a pool, the
replica count follows the work waiting for it in the job store instead.

How it fits together (Ray Serve 2.60):

1. Report. Serve calls each conductor replica's `record_autoscaling_stats()` (only on a
   deployment with an `autoscaling_config`: `resolve_config` gives the conductor a fixed one,
   min = max = its replicas, when a pool autoscales on backlog). The conductor asks the job store
   for the unrendered variations of queued and running songs, by requested model, task and
   language (`JobStore.backlog_by_request`), and turns them into per-pool figures
   (`pool_backlog_stats`):

   - a song counts only for the pools that serve its task (`served_tasks`), as the router
     routes it; `model: auto` counts for the first model of `auto_models` (the models that
     prefer its language, then `models.auto_order`) with a placeable pool that serves the task;
   - a model's work is shared among its placeable pools by capacity (RUNNING replicas ×
     `max_ongoing_requests`, from the SongRouter's `pools()`), the way the router spreads it;
   - render seconds = audio seconds × the pool's render seconds per audio second: the measured
     `seconds_per_audio_second` from the router when it has one, else the pool's
     `expected_render_s_per_audio_s`.

   Metrics (`backlog.waiting_s.<pool>`, `backlog.rendering.<pool>`,
   `backlog.rendering_s.<pool>`) reach Serve's controller every `jobs.backlog_report_interval_s`.

2. Decide. The application-level policy `backlog_autoscaling_policy` (it sees every deployment
   of the app at once, which a deployment-level policy cannot) reads them. Every conductor replica
   reads the same store, so their reports are copies of one figure, never parts of it: the policy
   takes the newest report, never a sum. For each pool with `policy: backlog`:

       busy     = min(rendering, replicas × max_ongoing_requests)        renders on a replica now
       overflow = (rendering − busy) × rendering_s / rendering           render s queued at the pool
       desired  = busy / max_ongoing_requests
                  + (waiting_s + overflow) / backlog_s_per_replica

   i.e. the replicas the renders in flight occupy, plus one replica per `backlog_s_per_replica`
   render seconds still waiting (songs behind the conductor's cap, variations not started,
   renders queued at the pool's handle). Serve then applies, per pool, `upscale_delay_s`,
   `downscale_delay_s`, the scaling factors and the min/max bounds (`min_replicas`,
   `max_replicas`), as for any policy. A pool with no report yet keeps its replica count.
   Every other autoscaling deployment of the app (an application-level policy replaces theirs)
   gets Serve's default decision (`replica_queue_length_autoscaling_policy`); deployments without
   autoscaling keep their fixed replicas.

3. Install. Ray 2.60 takes an application-level policy only from a Serve config file, as
   `autoscaling_policy: {policy_function: serve.autoscaling:backlog_autoscaling_policy}` on the
   application (`serve.run` of an `Application` cannot set one). `songserve up` adds it to the
   config it runs when a pool autoscales on backlog (`with_backlog_policy`); the checked-in
   configs that use backlog carry the line, so `serve run config/….yaml` works too. Each backlog
   pool's own `autoscaling_config.policy` is `backlog_pool_policy`, carrying its knobs as
   `policy_kwargs` for the application policy to read; if the application policy is missing,
   Serve runs that one instead: it logs an error naming the fix and scales on requests.

The policy functions run in Serve's controller, which unpickles them by value: they use only the
standard library, Ray, and this module's other functions.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.song_contracts import TEXT2MUSIC

from .pool_load import serving_pools

if TYPE_CHECKING:
    from ray.serve.config import AutoscalingContext

    from serve.config import AppConfig, DecoderPoolConfig, ModelsConfig
    from serve.store import BacklogKey, JobStore, ModelBacklog

logger = logging.getLogger("ray.serve")

APP_POLICY = "serve.autoscaling:backlog_autoscaling_policy"
"""The application-level policy a Serve config names (`autoscaling_policy.policy_function`)."""
POOL_POLICY = "serve.autoscaling:backlog_pool_policy"
"""The deployment-level policy of each backlog pool: its knobs, and the fallback."""

WAITING_S = "backlog.waiting_s."
RENDERING = "backlog.rendering."
RENDERING_S = "backlog.rendering_s."
"""Metric name prefixes, followed by the pool's deployment name."""

_MISSING_APP_POLICY_LOG_EVERY_S = 600.0
REPORT_TIMEOUT_S = 4.0
"""Longest a store query (or the router's figures) may take within one report."""


# -- configuration ---------------------------------------------------------------------------------


def backlog_pools(models: ModelsConfig) -> list[DecoderPoolConfig]:
    """The pools that autoscale on backlog."""
    return [
        pool
        for pool in models.pools
        if pool.deployment.autoscaling is not None
        and pool.deployment.autoscaling.policy == "backlog"
    ]


def pool_policy(backlog_s_per_replica: float, max_ongoing_requests: int) -> dict[str, Any]:
    """A backlog pool's `autoscaling_config.policy`: the fallback, and the knobs the application
    policy reads from `ctx.config.policy.policy_kwargs`."""
    return {
        "policy_function": POOL_POLICY,
        "policy_kwargs": {
            "backlog_s_per_replica": backlog_s_per_replica,
            "max_ongoing_requests": max_ongoing_requests,
        },
    }


def with_backlog_reporting(config: AppConfig) -> AppConfig:
    """`config` with the conductor reporting to Serve's autoscaler when a pool autoscales on
    backlog: Serve collects `record_autoscaling_stats` only from deployments that autoscale, so a
    conductor with a fixed replica count gets min = max = that count."""
    conductor = config.deployments.conductor
    if not backlog_pools(config.models) or conductor.autoscaling is not None:
        return config
    from serve.config import AutoscalingOptions

    fixed = AutoscalingOptions(
        min_replicas=conductor.num_replicas,
        max_replicas=conductor.num_replicas,
        initial_replicas=conductor.num_replicas,
    )
    deployments = config.deployments.model_copy(
        update={"conductor": conductor.model_copy(update={"autoscaling": fixed})}
    )
    return config.model_copy(update={"deployments": deployments})


def report_settings(config: AppConfig) -> dict[str, float]:
    """Serve `autoscaling_config` settings that make the conductor's replicas report every
    `jobs.backlog_report_interval_s` (Serve records at min(metrics_interval_s,
    look_back_period_s / 5) and pushes every metrics_interval_s)."""
    interval = config.jobs.backlog_report_interval_s
    return {"metrics_interval_s": interval, "look_back_period_s": 5 * interval}


def with_backlog_policy(serve_config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A Serve config (as read from YAML) with the application-level backlog policy on every
    songserve application one of whose pools autoscales on backlog; also the names of the
    applications it was added to. Raises ValueError, naming the setting and the fix, when such an
    application already names another application-level policy."""
    from serve.config import AppConfig

    added: list[str] = []
    applications = []
    for app in serve_config.get("applications") or []:
        app = dict(app)
        if app.get("import_path") == "serve.app:build_app":
            args = AppConfig.model_validate(app.get("args") or {})
            if backlog_pools(args.models):
                current = app.get("autoscaling_policy")
                function = current.get("policy_function") if isinstance(current, dict) else None
                if current is None:
                    app["autoscaling_policy"] = {"policy_function": APP_POLICY}
                    added.append(str(app.get("name", "default")))
                elif function != APP_POLICY:
                    pools = ", ".join(p.name for p in backlog_pools(args.models))
                    raise ValueError(
                        f"applications[{app.get('name', 'default')}].autoscaling_policy is "
                        f"{function!r}, but pools {pools} autoscale on backlog, which needs "
                        f"{APP_POLICY!r} there: set autoscaling_policy.policy_function to it "
                        "(it scales the app's other autoscaling deployments on requests, as "
                        "Serve's default does), or set those pools' autoscaling.policy to requests"
                    )
        applications.append(app)
    return {**serve_config, "applications": applications}, added


# -- the conductor's report ------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolView:
    """What the backlog of one pool is computed from."""

    name: str
    model: str
    backlog: bool  # autoscales on backlog (only those are reported)
    placeable: bool
    capacity: float  # renders it runs at once now (RUNNING replicas × max_ongoing_requests)
    render_s_per_audio_s: float
    tasks: frozenset[str] = frozenset({TEXT2MUSIC})  # what requests may bring it (served_tasks)


def pool_backlog_stats(
    backlog: Mapping[BacklogKey, ModelBacklog],
    pools: Sequence[PoolView],
    auto_order: Sequence[str],
) -> dict[str, float]:
    """The metrics `record_autoscaling_stats` reports for the backlog pools (see the module
    docstring): the work of each requested model, task and language shared among the placeable
    pools that would render it, by capacity, in render seconds of each pool. Work no placeable
    pool serves is left out (nothing can render it); a backlog pool with none gets zeros."""
    placeable = [pool for pool in pools if pool.placeable]
    stats: dict[str, float] = {}
    for pool in pools:
        if pool.backlog:
            stats.update({WAITING_S + pool.name: 0.0, RENDERING + pool.name: 0.0})
            stats[RENDERING_S + pool.name] = 0.0
    for key, work in backlog.items():
        serving = serving_pools(
            placeable,
            model=key.model,
            task=key.task,
            language=key.language,
            auto_order=auto_order,
            model_of=lambda pool: pool.model,
            tasks_of=lambda pool: pool.tasks,
            with_lora=key.lora,
            reference=key.reference,
        )
        total_capacity = sum(max(pool.capacity, 1.0) for pool in serving)
        for pool in serving:
            if not pool.backlog:
                continue
            share = max(pool.capacity, 1.0) / total_capacity
            speed = pool.render_s_per_audio_s
            stats[WAITING_S + pool.name] += share * work.waiting_audio_s * speed
            stats[RENDERING + pool.name] += share * work.rendering
            stats[RENDERING_S + pool.name] += share * work.rendering_audio_s * speed
    return {name: round(value, 6) for name, value in stats.items()}


class BacklogReporter:
    """The conductor's side: `stats()` is what its `record_autoscaling_stats` returns."""

    def __init__(
        self,
        models: ModelsConfig,
        store: JobStore,
        router_pools: Callable[[], Awaitable[list[dict[str, Any]]]],
    ) -> None:
        """`router_pools` returns the SongRouter's `pools()` (replicas, capacity, placeability
        and, once measured, `seconds_per_audio_second` of each pool)."""
        self._models = models
        self._store = store
        self._router_pools = router_pools
        self._backlog_pools = {pool.name for pool in backlog_pools(models)}

    async def stats(self) -> dict[str, float]:
        if not self._backlog_pools:
            return {}
        # Within Serve's deadline for this call (10 s), so a slow store fails this report
        # instead of timing it out; the policy then uses the previous one.
        async with asyncio.timeout(REPORT_TIMEOUT_S):
            backlog = await self._store.backlog_by_request()
        try:
            async with asyncio.timeout(REPORT_TIMEOUT_S):
                seen = {entry["name"]: entry for entry in await self._router_pools()}
        except Exception:  # noqa: BLE001 - the router is restarting: configured figures
            logger.warning("backlog autoscaling: the router's pool figures are unavailable")
            seen = {}
        return pool_backlog_stats(backlog, self._views(seen), self._models.auto_order)

    def _views(self, seen: Mapping[str, Mapping[str, Any]]) -> list[PoolView]:
        views = []
        for pool in self._models.pools:
            entry = seen.get(pool.name, {})
            measured = entry.get("seconds_per_audio_second")
            speed = measured if measured else pool.expected_render_s_per_audio_s
            views.append(
                PoolView(
                    name=pool.name,
                    model=pool.model,
                    backlog=pool.name in self._backlog_pools,
                    placeable=bool(entry.get("placeable", True)),
                    capacity=float(entry.get("capacity") or pool.deployment.max_ongoing_requests),
                    render_s_per_audio_s=float(speed),
                    tasks=pool.served_tasks,
                )
            )
        return views


# -- the policies (run in Serve's controller) ------------------------------------------------------


def desired_replicas(
    *,
    replicas: int,
    waiting_s: float,
    rendering: float,
    rendering_s: float,
    backlog_s_per_replica: float,
    max_ongoing_requests: int,
) -> float:
    """Replicas a pool needs for its backlog (the formula of the module docstring); Serve
    rounds up and bounds it."""
    busy = min(rendering, replicas * max_ongoing_requests)
    overflow_s = (rendering - busy) * rendering_s / rendering if rendering > 0 else 0.0
    desired = busy / max_ongoing_requests + (waiting_s + overflow_s) / backlog_s_per_replica
    return round(desired, 6)  # 2.0000000001 must not become 3 replicas


def _newest_report(contexts: Iterable[AutoscalingContext]) -> dict[str, float] | None:
    """The latest backlog report of any conductor replica: they all read one store, so the
    newest supersedes the others (adding them up would count the backlog once per replica)."""
    newest: dict[str, float] | None = None
    newest_at = -math.inf
    for ctx in contexts:
        raw = ctx.raw_metrics or {}
        reports: dict[Any, tuple[float, dict[str, float]]] = {}
        for name, by_replica in raw.items():
            if not name.startswith("backlog."):
                continue
            for replica, series in by_replica.items():
                if not series:
                    continue
                point = max(series, key=lambda p: p.timestamp)
                at, values = reports.get(replica, (point.timestamp, {}))
                values[name] = float(point.value)
                reports[replica] = (min(at, point.timestamp), values)
        for at, values in reports.values():
            if at > newest_at:
                newest, newest_at = values, at
    return newest


def _backlog_knobs(ctx: AutoscalingContext) -> dict[str, Any] | None:
    """A backlog pool's knobs, or None for any other deployment."""
    policy = getattr(ctx.config, "policy", None)
    if policy is None or policy.policy_function != POOL_POLICY:
        return None
    return dict(policy.policy_kwargs or {})


def backlog_autoscaling_policy(
    contexts: dict[Any, AutoscalingContext],
) -> tuple[dict[Any, float], dict[Any, dict[str, Any]]]:
    """Ray Serve application-level policy: backlog pools on the conductor's report, every other
    autoscaling deployment as Serve's default policy would. Serve applies delays, factors and
    bounds per deployment to what this returns."""
    from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

    report = _newest_report(contexts.values())
    decisions: dict[Any, float] = {}
    for deployment_id, ctx in contexts.items():
        knobs = _backlog_knobs(ctx)
        if knobs is None:
            decisions[deployment_id] = replica_queue_length_autoscaling_policy(ctx)[0]
            continue
        name = ctx.deployment_name
        if report is None or WAITING_S + name not in report:
            continue  # nothing reported yet: keep the current target
        decisions[deployment_id] = desired_replicas(
            replicas=ctx.current_num_replicas,
            waiting_s=report.get(WAITING_S + name, 0.0),
            rendering=report.get(RENDERING + name, 0.0),
            rendering_s=report.get(RENDERING_S + name, 0.0),
            backlog_s_per_replica=float(knobs["backlog_s_per_replica"]),
            max_ongoing_requests=int(knobs["max_ongoing_requests"]),
        )
    return decisions, {}


def backlog_pool_policy(
    ctx: AutoscalingContext,
) -> tuple[float, dict[str, Any]]:
    """Deployment-level policy of a backlog pool. The application-level policy overrides it;
    Serve runs it only when that one is missing: it says so (every ten minutes) and scales the
    pool on ongoing requests, as Serve's default does."""
    from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

    state = dict(ctx.policy_state or {})
    now = time.time()
    if now - state.get("missing_app_policy_logged_at", -math.inf) >= (
        _MISSING_APP_POLICY_LOG_EVERY_S
    ):
        logger.error(
            "decoder pool %s has autoscaling.policy backlog, but application %s has no "
            "application-level policy, so it scales on ongoing requests: add "
            "`autoscaling_policy: {policy_function: %s}` to the application in the Serve "
            "config (songserve up adds it), or set the pool's autoscaling.policy to requests",
            ctx.deployment_name,
            ctx.app_name,
            APP_POLICY,
        )
        state["missing_app_policy_logged_at"] = now
    desired, _ = replica_queue_length_autoscaling_policy(ctx)
    return desired, state
