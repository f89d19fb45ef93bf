"""SongAPI.owner: who may call the API, decided from the ASGI scope the proxy forwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import Request

from serve.api import LOCAL_OWNER, ApiError, SongAPI
from serve.config import resolve_config


def _request(client_host: str, authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "client": (client_host, 5000), "headers": headers})


def _api(tmp_path: Path, keys: list[str]) -> SongAPI:
    config = resolve_config({"storage": {"data_dir": str(tmp_path)}, "auth": {"api_keys": keys}})
    return SongAPI(config, conductor=None, lyrics=None, tags=None)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "localhost"])
def test_without_keys_loopback_clients_are_served(tmp_path: Path, host: str) -> None:
    assert _api(tmp_path, []).owner(_request(host)) == LOCAL_OWNER


@pytest.mark.parametrize("host", ["10.0.0.7", "192.0.2.2", "2001:db8::1", "example.org"])
def test_without_keys_remote_clients_are_refused_with_the_fix(tmp_path: Path, host: str) -> None:
    with pytest.raises(ApiError) as caught:
        _api(tmp_path, []).owner(_request(host))
    assert caught.value.status == 401
    assert "auth.api_keys" in caught.value.message


def test_with_keys_each_key_is_its_own_owner_and_others_are_refused(tmp_path: Path) -> None:
    api = _api(tmp_path, ["alpha", "beta"])
    alpha = api.owner(_request("10.0.0.7", "Bearer alpha"))
    beta = api.owner(_request("127.0.0.1", "bearer beta"))
    assert alpha != beta and alpha.startswith("key_") and "alpha" not in alpha
    for header in (None, "Bearer", "Bearer gamma", "Basic alpha", "alpha"):
        with pytest.raises(ApiError) as caught:
            api.owner(_request("127.0.0.1", header))
        assert caught.value.status == 401 and caught.value.headers == {"WWW-Authenticate": "Bearer"}
