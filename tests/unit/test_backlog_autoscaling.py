"""Backlog autoscaling without Ray running: the policy functions on constructed Serve
`AutoscalingContext`s (and through Serve's own wrapper, which adds delays and factors), the
conductor's per-pool figures, the config knobs, and how the policy gets into a Serve config."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve._private.common import DeploymentID, ReplicaID, TimeStampedValue
from ray.serve.autoscaling_policy import _apply_app_level_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from serve.autoscaling import (
    APP_POLICY,
    POOL_POLICY,
    RENDERING,
    RENDERING_S,
    WAITING_S,
    BacklogReporter,
    PoolView,
    backlog_autoscaling_policy,
    backlog_pool_policy,
    desired_replicas,
    pool_backlog_stats,
    with_backlog_policy,
)
from serve.cli import CliError, config_to_run
from serve.config import AppConfig, load_serve_config, resolve_config
from serve.store import BacklogKey, ModelBacklog
from serve.store.sqlite import SQLiteJobStore

APP = "songserve"
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


# -- the formula -----------------------------------------------------------------------------------


def test_desired_replicas_counts_busy_replicas_plus_waiting_render_seconds() -> None:
    knobs = {"backlog_s_per_replica": 30.0, "max_ongoing_requests": 2}
    idle = desired_replicas(replicas=3, waiting_s=0, rendering=0, rendering_s=0, **knobs)
    assert idle == 0  # Serve raises it to min_replicas
    # 4 renders fill 2 replicas; 90 render seconds waiting need 3 more.
    assert desired_replicas(replicas=2, waiting_s=90, rendering=4, rendering_s=40, **knobs) == 5
    # 1 replica holds 2 of the 6 renders in flight; the 4 queued at the pool (10 s each) wait.
    overflowing = desired_replicas(replicas=1, waiting_s=0, rendering=6, rendering_s=60, **knobs)
    assert overflowing == pytest.approx(1 + 40 / 30, abs=1e-6)
    # Fractions stay exact enough that Serve's ceil does not add a replica.
    shared = desired_replicas(replicas=1, waiting_s=0.1 + 0.2, rendering=0, rendering_s=0, **knobs)
    assert shared == 0.01


# -- the application-level policy on constructed contexts ------------------------------------------


def _config(**overrides: Any) -> AutoscalingConfig:
    settings: dict[str, Any] = {
        "min_replicas": 1,
        "max_replicas": 3,
        "upscale_delay_s": 0,
        "downscale_delay_s": 0,
        "target_ongoing_requests": 1,
    }
    return AutoscalingConfig(**{**settings, **overrides})


def _backlog_config(**overrides: Any) -> AutoscalingConfig:
    policy = {
        "policy_function": POOL_POLICY,
        "policy_kwargs": {"backlog_s_per_replica": 10.0, "max_ongoing_requests": 1},
    }
    return _config(policy=policy, **overrides)


def _context(
    name: str,
    config: AutoscalingConfig,
    *,
    replicas: int = 1,
    target: int | None = None,
    requests: float = 0.0,
    reports: dict[str, list[tuple[float, dict[str, float]]]] | None = None,
    policy_state: dict[str, Any] | None = None,
) -> AutoscalingContext:
    """A deployment's context as Serve's controller builds it; `reports` are, per replica id,
    the (time, metrics) points its `record_autoscaling_stats` pushed."""
    deployment = DeploymentID(name=name, app_name=APP)
    running = [ReplicaID(f"{name}-{k}", deployment) for k in range(replicas)]
    raw: dict[str, dict[ReplicaID, list[TimeStampedValue]]] = {}
    for replica_name, points in (reports or {}).items():
        replica = ReplicaID(replica_name, deployment)
        for at, metrics in points:
            for metric, value in metrics.items():
                raw.setdefault(metric, {}).setdefault(replica, []).append(
                    TimeStampedValue(at, value)
                )
    return AutoscalingContext(
        deployment_id=deployment,
        deployment_name=name,
        app_name=APP,
        current_num_replicas=replicas,
        target_num_replicas=replicas if target is None else target,
        running_replicas=running,
        total_num_requests=requests,
        total_queued_requests=0.0,
        aggregated_metrics={},
        raw_metrics=raw,
        capacity_adjusted_min_replicas=config.min_replicas,
        capacity_adjusted_max_replicas=config.max_replicas,
        policy_state=policy_state or {},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=1000.0,
        config=config,
    )


def _report(pool: str, waiting_s: float, rendering: float = 0, rendering_s: float = 0) -> dict:
    return {
        WAITING_S + pool: waiting_s,
        RENDERING + pool: rendering,
        RENDERING_S + pool: rendering_s,
    }


def _contexts(*contexts: AutoscalingContext) -> dict[DeploymentID, AutoscalingContext]:
    return {ctx.deployment_id: ctx for ctx in contexts}


def test_pools_scale_on_the_newest_report_never_the_sum_of_conductor_replicas() -> None:
    # Two conductor replicas read the same store: each report is the whole backlog.
    conductor = _context(
        "Conductor",
        _config(min_replicas=2, max_replicas=2),
        replicas=2,
        reports={
            "c1": [(10.0, _report("Sketch", 5.0)), (12.0, _report("Sketch", 25.0, 1, 2.0))],
            "c2": [(11.0, _report("Sketch", 25.0, 1, 2.0) | _report("DiT", 0.0))],
        },
    )
    sketch = _context("Sketch", _backlog_config(), replicas=1)
    decisions, _ = backlog_autoscaling_policy(_contexts(conductor, sketch))
    # 1 replica busy with the render in flight + 25 waiting render s / 10 per replica.
    assert decisions[sketch.deployment_id] == 1 + 2.5
    assert decisions[conductor.deployment_id] == 0  # Serve's default: no requests (bounded to 2)


def test_backlog_gone_asks_for_the_minimum_and_unreported_pools_keep_their_target() -> None:
    conductor = _context("Conductor", _config(), reports={"c1": [(20.0, _report("Sketch", 0.0))]})
    sketch = _context("Sketch", _backlog_config(), replicas=3)
    dit = _context("DiT", _backlog_config(), replicas=2)  # not in the report (yet)
    decisions, _ = backlog_autoscaling_policy(_contexts(conductor, sketch, dit))
    assert decisions[sketch.deployment_id] == 0
    assert dit.deployment_id not in decisions


def test_other_autoscaling_deployments_get_serves_default_decision() -> None:
    postprocess = _context("PostProcessor", _config(max_replicas=12), replicas=2, requests=6.0)
    decisions, _ = backlog_autoscaling_policy(_contexts(postprocess))
    assert decisions[postprocess.deployment_id] == 6  # 6 ongoing ÷ target 1 per replica


def test_serves_wrapper_applies_each_pools_upscale_delay_to_the_decision() -> None:
    """What Serve's controller runs: the policy wrapped with delays and factors."""
    wrapped = _apply_app_level_autoscaling_config(backlog_autoscaling_policy)
    report = {"c1": [(30.0, _report("Sketch", 40.0))]}
    conductor = _context("Conductor", _config(), reports=report)

    sketch = _context("Sketch", _backlog_config(upscale_delay_s=3600), replicas=1)
    decisions, _ = wrapped(_contexts(conductor, sketch))
    assert decisions[sketch.deployment_id] == 1  # waiting for the delay: target kept

    prompt = _context("Sketch", _backlog_config(upscale_delay_s=0), replicas=1)
    decisions, _ = wrapped(_contexts(conductor, prompt))
    assert decisions[prompt.deployment_id] == 4  # 40 s ÷ 10 s per replica (bounds come after)


def test_the_pool_policy_says_the_application_policy_is_missing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Serve runs a backlog pool's own policy only without the application-level one."""
    ctx = _context("Sketch", _backlog_config(), replicas=2, requests=6.0)
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        desired, state = backlog_pool_policy(ctx)
    assert desired == 6  # scales on requests instead
    assert f"autoscaling_policy: {{policy_function: {APP_POLICY}}}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        backlog_pool_policy(_context("Sketch", _backlog_config(), policy_state=state))
    assert caplog.text == ""  # said once per ten minutes, not every tick


# -- the conductor's figures -----------------------------------------------------------------------


def test_pool_figures_share_a_models_work_by_capacity_in_each_pools_render_seconds() -> None:
    pools = [
        PoolView("DiT_A", "ace-step", True, True, capacity=16, render_s_per_audio_s=0.02),
        PoolView("DiT_B", "ace-step", True, True, capacity=8, render_s_per_audio_s=0.05),
        PoolView("DiT_C", "ace-step", True, False, capacity=8, render_s_per_audio_s=0.05),
        PoolView("Sketch", "sketch", False, True, capacity=2, render_s_per_audio_s=0.01),
    ]
    backlog = {
        BacklogKey("ace-step"): ModelBacklog(10, 600.0, 3, 90.0),
        # auto_order's first placeable model: ace-step
        BacklogKey("auto"): ModelBacklog(2, 300.0, 0, 0.0),
        BacklogKey("sketch"): ModelBacklog(4, 100.0, 0, 0.0),  # Sketch does not autoscale
        BacklogKey("gone"): ModelBacklog(1, 60.0, 0, 0.0),  # no pool serves it any more
    }
    stats = pool_backlog_stats(backlog, pools, ["ace-step", "sketch"])
    assert stats == {
        # DiT_C cannot be placed: the 900 audio s are shared 2:1 by DiT_A and DiT_B.
        WAITING_S + "DiT_A": 600 * 0.02,
        RENDERING + "DiT_A": 2.0,
        RENDERING_S + "DiT_A": 60 * 0.02,
        WAITING_S + "DiT_B": 300 * 0.05,
        RENDERING + "DiT_B": 1.0,
        RENDERING_S + "DiT_B": 30 * 0.05,
        WAITING_S + "DiT_C": 0.0,
        RENDERING + "DiT_C": 0.0,
        RENDERING_S + "DiT_C": 0.0,
    }


def test_a_songs_work_counts_for_the_pools_that_serve_its_task() -> None:
    """As the router routes: a pool serves only its tasks, and `auto` falls through the auto
    order to the first model with a placeable pool for the song's task."""
    cover = frozenset({"text2music", "cover"})
    pools = [
        PoolView("Sketch", "sketch", True, True, capacity=2, render_s_per_audio_s=0.01),
        PoolView("DiT", "ace-step", True, True, 4, render_s_per_audio_s=0.1, tasks=cover),
    ]
    backlog = {
        BacklogKey("auto"): ModelBacklog(2, 100.0, 0, 0.0),  # sketch first in auto_order
        BacklogKey("auto", "cover"): ModelBacklog(1, 200.0, 1, 30.0),  # the sketch cannot
        BacklogKey("sketch", "cover"): ModelBacklog(1, 50.0, 0, 0.0),  # nothing can render it
    }
    stats = pool_backlog_stats(backlog, pools, ["sketch", "ace-step"])
    assert stats[WAITING_S + "Sketch"] == 100 * 0.01
    assert stats[RENDERING + "Sketch"] == 0.0
    assert stats[WAITING_S + "DiT"] == 200 * 0.1
    assert stats[RENDERING + "DiT"] == 1.0
    assert stats[RENDERING_S + "DiT"] == 30 * 0.1


def test_a_songs_lora_or_reference_counts_for_the_pools_whose_model_takes_it() -> None:
    """The sketch is first in auto_order but takes neither a LoRA nor a timbre reference: such
    songs go to the DiT pool, as the router routes them; an explicit sketch song with a LoRA
    can be rendered by no pool."""
    pools = [
        PoolView("Sketch", "sketch", True, True, capacity=2, render_s_per_audio_s=0.01),
        PoolView("DiT", "ace-step", True, True, 4, render_s_per_audio_s=0.1),
    ]
    backlog = {
        BacklogKey("auto"): ModelBacklog(2, 100.0, 0, 0.0),
        BacklogKey("auto", lora=True): ModelBacklog(1, 200.0, 1, 30.0),
        BacklogKey("auto", reference=True): ModelBacklog(1, 40.0, 0, 0.0),
        BacklogKey("sketch", lora=True): ModelBacklog(1, 50.0, 0, 0.0),
    }
    stats = pool_backlog_stats(backlog, pools, ["sketch", "ace-step"])
    assert stats[WAITING_S + "Sketch"] == 100 * 0.01
    assert stats[WAITING_S + "DiT"] == (200 + 40) * 0.1
    assert stats[RENDERING + "DiT"] == 1.0
    assert stats[RENDERING_S + "DiT"] == 30 * 0.1


def _app_config(tmp_path: Path, **backlog_knobs: Any) -> AppConfig:
    autoscaling = {"min_replicas": 1, "max_replicas": 3, "policy": "backlog", **backlog_knobs}
    return resolve_config(
        {
            "storage": {"data_dir": str(tmp_path)},
            "models": {
                "auto_order": ["sketch"],
                "pools": [
                    {
                        "name": "Sketch",
                        "model": "sketch",
                        "expected_render_s_per_audio_s": 0.1,
                        "deployment": {"max_ongoing_requests": 2, "autoscaling": autoscaling},
                    },
                ],
            },
        }
    )


def test_the_reporter_prefers_measured_speeds_and_survives_a_missing_router(
    tmp_path: Path,
) -> None:
    config = _app_config(tmp_path)

    async def scenario() -> list[dict[str, float]]:
        store = SQLiteJobStore(tmp_path / "jobs.db")
        try:
            for model in ("sketch", "auto"):
                await store.create_job(
                    owner="a", request={"model": model, "duration_s": 50}, seed=1, variations=2
                )

            async def measured() -> list[dict[str, Any]]:
                entry = {"name": "Sketch", "placeable": True, "capacity": 4}
                return [entry | {"seconds_per_audio_second": 0.2}]

            async def unmeasured() -> list[dict[str, Any]]:
                return [{"name": "Sketch", "placeable": True, "capacity": 4}]

            async def down() -> list[dict[str, Any]]:
                raise RuntimeError("the router is restarting")

            return [
                await BacklogReporter(config.models, store, pools).stats()
                for pools in (measured, unmeasured, down)
            ]
        finally:
            await store.close()

    measured, configured, fallback = asyncio.run(scenario())
    assert measured[WAITING_S + "Sketch"] == pytest.approx(200 * 0.2)  # 4 variations × 50 s
    assert configured[WAITING_S + "Sketch"] == pytest.approx(200 * 0.1)
    assert fallback == configured


# -- configuration and installation ----------------------------------------------------------------


def test_a_backlog_pool_carries_its_knobs_and_the_conductor_reports(tmp_path: Path) -> None:
    config = _app_config(tmp_path, backlog_s_per_replica=45)
    serve_options = config.models.pools[0].deployment.to_serve()["autoscaling_config"]
    assert serve_options["policy"] == {
        "policy_function": POOL_POLICY,
        "policy_kwargs": {"backlog_s_per_replica": 45.0, "max_ongoing_requests": 2},
    }
    assert "backlog_s_per_replica" not in serve_options  # not a Serve setting
    AutoscalingConfig(**serve_options)  # Serve accepts it as it is
    # Serve collects custom metrics only from autoscaling deployments: a fixed conductor becomes
    # one of the same size.
    conductor = config.deployments.conductor.autoscaling
    assert conductor is not None
    assert (conductor.min_replicas, conductor.max_replicas) == (1, 1)


def test_backlog_on_a_fixed_deployment_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match=r"deployments\.postprocess\.autoscaling\.policy"):
        AppConfig.model_validate(
            {"deployments": {"postprocess": {"autoscaling": {"policy": "backlog"}}}}
        )


def _serve_config(pool_autoscaling: dict[str, Any], **app: Any) -> dict[str, Any]:
    pool = {"name": "Sketch", "model": "sketch", "deployment": {"autoscaling": pool_autoscaling}}
    args = {"models": {"pools": [pool]}}
    entry = {"name": APP, "import_path": "serve.app:build_app", "args": args, **app}
    return {"applications": [entry]}


def test_the_application_policy_is_added_only_where_a_pool_needs_it() -> None:
    backlog = {"max_replicas": 3, "policy": "backlog"}
    updated, added = with_backlog_policy(_serve_config(backlog))
    assert added == [APP]
    assert updated["applications"][0]["autoscaling_policy"] == {"policy_function": APP_POLICY}

    present = _serve_config(backlog, autoscaling_policy={"policy_function": APP_POLICY})
    assert with_backlog_policy(present) == (present, [])
    requests = _serve_config({"max_replicas": 3})
    assert with_backlog_policy(requests) == (requests, [])

    other = _serve_config(backlog, autoscaling_policy={"policy_function": "mine:policy"})
    with pytest.raises(ValueError, match=r"applications\[songserve\]\.autoscaling_policy"):
        with_backlog_policy(other)


def test_songserve_up_runs_a_copy_with_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "backlog.yaml"
    path.write_text(yaml.safe_dump(_serve_config({"max_replicas": 3, "policy": "backlog"})))
    run = config_to_run(path)
    try:
        assert run != path
        entry = load_serve_config(run)["applications"][0]
        assert entry["autoscaling_policy"] == {"policy_function": APP_POLICY}
    finally:
        run.unlink()
    local = CONFIG_DIR / "local.yaml"
    assert config_to_run(local) == local  # nothing to add: the file itself
    clash = _serve_config(
        {"max_replicas": 3, "policy": "backlog"}, autoscaling_policy={"policy_function": "a:b"}
    )
    path.write_text(yaml.safe_dump(clash))
    with pytest.raises(CliError, match="autoscaling_policy"):
        config_to_run(path)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_checked_in_configs_that_autoscale_on_backlog_name_the_policy(path: Path) -> None:
    """So `serve run config/….yaml` installs it, not only `songserve up`."""
    serve_config = load_serve_config(path)
    assert with_backlog_policy(serve_config)[1] == []
