"""Authenticator.caller: who may call the API, decided from the ASGI scope the proxy forwards
(environment keys here; managed keys in test_keys_and_quotas.py)."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from serve.http.auth import LOCAL_OWNER, Authenticator
from serve.http.errors import ApiError


def _request(client_host: str, authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "client": (client_host, 5000), "headers": headers})


def _owner(keys: list[str], request: Request) -> str:
    return asyncio.run(Authenticator(keys, jobs=None).caller_of_request(request)).owner


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "localhost"])
def test_without_keys_loopback_clients_are_served(host: str) -> None:
    assert _owner([], _request(host)) == LOCAL_OWNER


@pytest.mark.parametrize("host", ["10.0.0.7", "192.0.2.2", "2001:db8::1", "example.org"])
def test_without_keys_remote_clients_are_refused_with_the_fix(host: str) -> None:
    with pytest.raises(ApiError) as caught:
        _owner([], _request(host))
    assert caught.value.status == 401
    assert "songserve keys create" in caught.value.message
    assert "SONGSERVE_API_KEYS" in caught.value.message


def test_with_keys_each_key_is_its_own_owner_and_others_are_refused() -> None:
    alpha = _owner(["alpha", "beta"], _request("10.0.0.7", "Bearer alpha"))
    beta = _owner(["alpha", "beta"], _request("127.0.0.1", "bearer beta"))
    assert alpha != beta and alpha.startswith("key_") and "alpha" not in alpha
    for header in (None, "Bearer", "Bearer gamma", "Basic alpha", "alpha", "Bearer  "):
        with pytest.raises(ApiError) as caught:
            _owner(["alpha", "beta"], _request("127.0.0.1", header))
        assert caught.value.status == 401 and caught.value.headers == {"WWW-Authenticate": "Bearer"}
