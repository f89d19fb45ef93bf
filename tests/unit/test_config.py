"""AppConfig: the one configuration tree — validation, env overrides, Serve options."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serve.config import (
    AppConfig,
    app_args_from_serve_config,
    apply_env_overrides,
    load_serve_config,
    resolve_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def _error_locations(error: ValidationError) -> list[str]:
    return [".".join(str(part) for part in e["loc"]) for e in error.errors()]


def test_defaults_are_the_embedded_default() -> None:
    config = AppConfig()
    assert config.models.served_models == ["sketch"]
    assert config.lyrics.engine == "template"
    assert config.tags.engine == "auto"  # semantic where the `tags` extra is installed
    assert config.storage.database_url.startswith("sqlite://")
    assert config.storage.storage_url.startswith("file://")


def test_unknown_keys_are_rejected_with_their_path() -> None:
    with pytest.raises(ValidationError) as caught:
        AppConfig.model_validate({"jobs": {"lease_seconds": 3}})
    assert "jobs.lease_seconds" in _error_locations(caught.value)


@pytest.mark.parametrize(
    ("args", "location"),
    [
        ({"jobs": {"lease_s": 0}}, "jobs.lease_s"),
        ({"jobs": {"lease_s": 5, "heartbeat_s": 10}}, "jobs"),
        ({"models": {"pools": []}}, "models"),
        (
            {
                "models": {
                    "pools": [{"name": "A", "model": "sketch"}, {"name": "A", "model": "sketch"}]
                }
            },
            "models",
        ),
        ({"models": {"auto_order": ["ace-step"]}}, "models"),
        ({"models": {"pools": [{"name": "9bad", "model": "sketch"}]}}, "models.pools.0.name"),
        ({"postprocess": {"formats": ["ogg"]}}, "postprocess.formats.0"),
        ({"postprocess": {"formats": []}}, "postprocess.formats"),
        ({"postprocess": {"aac_coder": "slow"}}, "postprocess.aac_coder"),
        ({"storage": {"database_url": "mysql://x"}}, "storage.database_url"),
        (
            {"deployments": {"api": {"max_ongoing_requests": 0}}},
            "deployments.api.max_ongoing_requests",
        ),
    ],
)
def test_invalid_values_name_the_setting(args: dict, location: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AppConfig.model_validate(args)
    assert location in _error_locations(caught.value)


def test_heartbeat_error_says_how_to_fix_it() -> None:
    with pytest.raises(ValidationError, match=r"heartbeat_s .* must be shorter than jobs\.lease_s"):
        AppConfig.model_validate({"jobs": {"lease_s": 5, "heartbeat_s": 10}})


def test_every_field_is_documented() -> None:
    def walk(model: type) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(f"{model.__name__}.{name}")
            annotation = field.annotation
            for candidate in getattr(annotation, "__args__", (annotation,)):
                if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                    missing.extend(walk(candidate))
        return missing

    assert walk(AppConfig) == []


def test_env_overrides_flat_names_and_nested_paths() -> None:
    merged = apply_env_overrides(
        {"jobs": {"lease_s": 30}},
        {
            "SONGSERVE_DATABASE_URL": "sqlite:///tmp/x.db",
            "SONGSERVE_API_KEYS": "k1, k2",
            "SONGSERVE_JOBS__LEASE_S": "12.5",
            "SONGSERVE_POSTPROCESS__FORMATS": '["m4a"]',
            "SONGSERVE_URL": "http://ignored-by-the-app",
            "OTHER": "x",
        },
    )
    assert merged["storage"]["database_url"] == "sqlite:///tmp/x.db"
    assert merged["auth"]["api_keys"] == ["k1", "k2"]
    assert merged["jobs"]["lease_s"] == 12.5
    assert merged["postprocess"]["formats"] == ["m4a"]
    assert "url" not in merged


def test_env_wins_over_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SONGSERVE_JOBS__MAX_ATTEMPTS", "7")
    monkeypatch.setenv("SONGSERVE_API_KEYS", "secret-key")
    config = resolve_config({"jobs": {"max_attempts": 2}, "storage": {"data_dir": str(tmp_path)}})
    assert config.jobs.max_attempts == 7
    assert [k.get_secret_value() for k in config.auth.api_keys] == ["secret-key"]
    assert "secret-key" not in repr(config)


def test_resolve_makes_local_paths_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    config = resolve_config({"storage": {"data_dir": "state"}})
    assert config.storage.database_path == tmp_path / "state" / "jobs.db"
    assert config.storage.storage_path == tmp_path / "state" / "objects"
    # Resolving twice changes nothing (the builder may receive an already resolved config).
    assert resolve_config(config).storage == config.storage


def test_deployment_options_become_serve_options() -> None:
    config = AppConfig.model_validate(
        {
            "models": {
                "pools": [
                    {
                        "name": "DiT_CUDA",
                        "model": "sketch",
                        "deployment": {
                            "autoscaling": {"min_replicas": 1, "max_replicas": 4},
                            "max_ongoing_requests": 16,
                            "max_queued_requests": 100,
                            "graceful_shutdown_timeout_s": 300,
                            "actor": {
                                "num_gpus": 1,
                                "accelerator_type": "A100",
                                "label_selector": {"pool": "gpu"},
                                "env_vars": {"X": "1"},
                            },
                        },
                    }
                ]
            }
        }
    )
    options = config.models.pools[0].deployment.to_serve()
    assert "num_replicas" not in options
    assert options["autoscaling_config"]["max_replicas"] == 4
    assert options["max_ongoing_requests"] == 16
    assert options["max_queued_requests"] == 100
    assert options["graceful_shutdown_timeout_s"] == 300
    assert options["ray_actor_options"] == {
        "num_cpus": 0.5,  # unset: the pool default, not the generic one
        "num_gpus": 1,
        "accelerator_type": "A100",
        "label_selector": {"pool": "gpu"},
        "runtime_env": {"env_vars": {"X": "1"}},
    }


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_validates(path: Path) -> None:
    serve_config = load_serve_config(path)
    config = resolve_config(app_args_from_serve_config(serve_config))
    assert config.models.pools


def test_style_rewrite_needs_an_llm_engine() -> None:
    with pytest.raises(ValidationError, match=r"tags\.llm_rewrite needs an LLM"):
        AppConfig.model_validate({"tags": {"llm_rewrite": True}})
    config = AppConfig.model_validate(
        {
            "tags": {"llm_rewrite": True},
            "lyrics": {"engine": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"},
        }
    )
    assert config.tags.llm_rewrite


def test_the_lyrics_api_key_is_secret_but_survives_resolution() -> None:
    config = AppConfig.model_validate(
        {
            "lyrics": {
                "engine": "openai",
                "model": "m",
                "base_url": "http://127.0.0.1:1/v1",
                "api_key": "sk-secret-123",
            }
        }
    )
    assert "sk-secret-123" not in repr(config) and "sk-secret-123" not in config.model_dump_json()
    resolved = resolve_config(config)
    assert resolved.lyrics.api_key is not None
    assert resolved.lyrics.api_key.get_secret_value() == "sk-secret-123"


def test_setting_one_deployment_option_keeps_the_roles_other_defaults() -> None:
    config = AppConfig.model_validate(
        {
            "deployments": {
                "api": {"actor": {"label_selector": {"role": "head"}}},
                "postprocess": {"actor": {"num_gpus": 0}, "num_replicas": 3},
            },
            "models": {
                "pools": [
                    {"name": "S", "model": "sketch", "deployment": {"actor": {"num_gpus": 0}}}
                ]
            },
        }
    )
    api = config.deployments.api
    assert (api.max_ongoing_requests, api.max_queued_requests) == (256, 1024)
    assert api.actor.label_selector == {"role": "head"}
    postprocess = config.deployments.postprocess
    assert postprocess.num_replicas == 3 and postprocess.max_ongoing_requests == 2
    assert postprocess.actor.num_cpus == 0.25
    pool = config.models.pools[0].deployment
    assert (pool.num_replicas, pool.max_ongoing_requests, pool.actor.num_cpus) == (2, 1, 0.5)
    assert config.deployments.conductor.max_ongoing_requests == 64  # untouched: its default
