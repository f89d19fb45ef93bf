"""Secrets never ride in a Serve config file: Ray prints a file's `args:` in its logs ("Importing
application … with arguments") and on the dashboard. The builder and `songserve up` refuse them
with the fix; validation errors never echo a URL's password; keys can come from a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

from serve.app import build_app
from serve.cli import main as songserve
from serve.config import resolve_config


@pytest.mark.parametrize(
    ("args", "setting", "fix"),
    [
        ({"auth": {"api_keys": ["sk-live-1"]}}, "auth.api_keys", "SONGSERVE_API_KEYS"),
        ({"auth": {"media_url_secret": "s3cr3t"}}, "auth.media_url_secret", "SONGSERVE_AUTH__"),
        ({"lyrics": {"api_key": "sk-x"}}, "lyrics.api_key", "SONGSERVE_LYRICS__API_KEY"),
        (
            {"storage": {"database_url": "postgresql://app:hunter2@db:5432/songs"}},
            "storage.database_url",
            "PGPASSWORD",
        ),
    ],
)
def test_a_config_file_with_a_secret_is_refused_with_the_fix(
    tmp_path: Path, args: dict[str, object], setting: str, fix: str
) -> None:
    # Serve hands the builder the file's args as a dict: the path `serve run FILE` takes.
    with pytest.raises(ValueError) as refused:
        call_user_app_builder_with_args_if_necessary(build_app, args)
    message = str(refused.value)
    assert setting in message and fix in message and "logs" in message
    assert "hunter2" not in message and "sk-live-1" not in message

    path = tmp_path / "serve.yaml"
    app = {"name": "songserve", "import_path": "serve.app:build_app", "args": args}
    path.write_text(yaml.safe_dump({"applications": [app]}))
    assert songserve(["up", "--config", str(path)]) == 1  # before anything starts


def test_a_refused_database_url_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        resolve_config({"storage": {"database_url": "mysql://app:hunter2@db/songs"}})
    assert "hunter2" not in str(refused.value) and "database_url" in str(refused.value)


def test_keys_can_come_from_a_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# the web app\nkey-one\n\n  key-two  \n")
    config = resolve_config(
        {"storage": {"data_dir": str(tmp_path)}, "auth": {"api_keys_file": str(keys)}}
    )
    assert [k.get_secret_value() for k in config.auth.api_keys] == ["key-one", "key-two"]
    assert "key-one" not in repr(config) and "key-one" not in config.model_dump_json()
    assert resolve_config(config).auth.api_keys == config.auth.api_keys  # read once
    with pytest.raises(ValueError, match=r"auth\.api_keys_file: cannot read"):
        resolve_config({"auth": {"api_keys_file": str(tmp_path / "missing.txt")}})
