"""Every checked-in Serve config builds into the graph, with its options applied from config.

Building goes through Serve's own builder path (the args dict handed to the builder, which
validates it) without starting Ray; running the graph is covered by tests/integration and tests/e2e.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

from serve.app import build_app
from serve.config import app_args_from_serve_config, load_serve_config, resolve_config

CONFIG_FILES = sorted((Path(__file__).resolve().parents[2] / "config").glob("*.yaml"))
FIXED_DEPLOYMENTS = {
    "SongAPI",
    "Conductor",
    "LyricsLLM",
    "TagNormalizer",
    "SongRouter",
    "PostProcessor",
    "StemMaker",
    "OnDemandEncoder",
    "Verifier",
}


def deployments_of(app: Application) -> dict[str, Any]:
    """Every deployment reachable from the ingress, by name."""
    found: dict[str, Any] = {}

    def visit(value: Any) -> None:
        if isinstance(value, Application):
            deployment = value._bound_deployment
            if deployment.name not in found:
                found[deployment.name] = deployment
                for arg in (*deployment.init_args, *deployment.init_kwargs.values()):
                    visit(arg)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)

    visit(app)
    return found


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_builds_with_its_options(path: Path, tmp_path: Path) -> None:
    args = app_args_from_serve_config(load_serve_config(path))
    args.setdefault("storage", {})["data_dir"] = str(tmp_path)
    app = call_user_app_builder_with_args_if_necessary(build_app, args)
    deployments = deployments_of(app)
    config = resolve_config(args)

    pools = {pool.name: pool for pool in config.models.pools}
    separator = {"StemSeparator"} if config.postprocess.stems.demucs_checkpoint else set()
    assert set(deployments) == FIXED_DEPLOYMENTS | separator | set(pools)
    expected = {
        "SongAPI": config.deployments.api,
        "Conductor": config.deployments.conductor,
        "LyricsLLM": config.deployments.lyrics,
        "TagNormalizer": config.deployments.tags,
        "SongRouter": config.deployments.router,
        "PostProcessor": config.deployments.postprocess,
        "StemMaker": config.deployments.stems,
        "OnDemandEncoder": config.deployments.encoder,
        "Verifier": config.deployments.verifier,
        **({"StemSeparator": config.deployments.separator} if separator else {}),
        **{name: pool.deployment for name, pool in pools.items()},
    }
    for name, options in expected.items():
        deployment = deployments[name]
        serve_options = options.to_serve()
        assert deployment.max_ongoing_requests == options.max_ongoing_requests, name
        assert deployment.max_queued_requests == options.max_queued_requests, name
        assert deployment.ray_actor_options == serve_options["ray_actor_options"], name
        config_of = deployment._deployment_config
        assert config_of.graceful_shutdown_timeout_s == options.graceful_shutdown_timeout_s, name
        if options.autoscaling is None:
            assert deployment.num_replicas == options.num_replicas, name


def test_bad_args_fail_the_build_with_the_setting_named() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"jobs\.lease_seconds"):
        call_user_app_builder_with_args_if_necessary(build_app, {"jobs": {"lease_seconds": 1}})


def test_every_config_file_the_docs_name_is_checked_in() -> None:
    """The parametrised build above covers whatever is in config/; this keeps the set honest."""
    names = {path.name for path in CONFIG_FILES}
    assert {"local.yaml", "dev-acestep.yaml", "gpu.yaml", "mac.yaml", "mixed.yaml"} <= names
    assert "prod.yaml" in names
