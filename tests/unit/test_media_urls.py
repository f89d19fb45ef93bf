"""Signed media links: valid for their own file (or HLS rendition) and owner, until they expire."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from starlette.requests import Request

from serve.api import ApiError, SongAPI
from serve.config import resolve_config
from serve.media_urls import MediaUrlSigner, sign_playlist, signing_scope

AUDIO = "/v1/songs/song_1/variations/0/audio.m4a"
HLS = "/v1/songs/song_1/variations/0/hls/"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _params(query: str) -> dict[str, str]:
    return dict(parse_qsl(query))


def test_a_link_opens_its_own_file_for_its_owner_until_it_expires() -> None:
    clock = Clock()
    signer = MediaUrlSigner(b"secret", ttl_s=3600, clock=clock)
    params = _params(signer.query(AUDIO, "key_a"))
    assert signer.owner_of(AUDIO, params) == "key_a"
    assert int(params["exp"]) >= clock.now + 3600
    assert signer.owner_of(AUDIO.replace("m4a", "mp3"), params) is None
    assert signer.owner_of(AUDIO, {**params, "own": "key_b"}) is None
    assert signer.owner_of(AUDIO, {**params, "exp": str(int(params["exp"]) + 600)}) is None
    assert signer.owner_of(AUDIO, {k: v for k, v in params.items() if k != "sig"}) is None
    assert signer.owner_of(AUDIO, {**params, "exp": "soon"}) is None
    other_secret = MediaUrlSigner(b"other", ttl_s=3600, clock=clock)
    assert other_secret.owner_of(AUDIO, params) is None
    clock.now = int(params["exp"]) + 1
    assert signer.owner_of(AUDIO, params) is None


def test_links_are_stable_for_a_while_so_players_can_cache() -> None:
    clock = Clock()
    signer = MediaUrlSigner(b"secret", ttl_s=3600, clock=clock)
    first = signer.query(AUDIO, "key_a")
    clock.now += 30
    assert signer.query(AUDIO, "key_a") == first


def test_an_hls_rendition_is_signed_as_one_directory() -> None:
    assert signing_scope(HLS + "index.m3u8") == HLS
    assert signing_scope(HLS + "segment_00003.aac") == HLS
    assert signing_scope(AUDIO) == AUDIO
    signer = MediaUrlSigner(b"secret", ttl_s=60, clock=Clock())
    query = signer.query(HLS + "index.m3u8", "key_a")
    assert signer.owner_of(HLS + "segment_00001.aac", _params(query)) == "key_a"
    assert signer.owner_of("/v1/songs/song_2/variations/0/hls/x.aac", _params(query)) is None

    playlist = b"#EXTM3U\n#EXTINF:4.0,\nsegment_00000.aac\n#EXTINF:2.0,\nsegment_00001.aac\n"
    signed = sign_playlist(playlist, query).decode().splitlines()
    assert signed[0] == "#EXTM3U" and signed[1] == "#EXTINF:4.0,"
    assert signed[2] == f"segment_00000.aac?{query}"
    assert signed[4] == f"segment_00001.aac?{query}"


def test_secrets_derive_from_the_keys_so_replicas_agree() -> None:
    one = MediaUrlSigner.derived_from_keys(["b", "a"], 60, clock=Clock())
    two = MediaUrlSigner.derived_from_keys(["a", "b"], 60, clock=Clock())
    rotated = MediaUrlSigner.derived_from_keys(["a", "c"], 60, clock=Clock())
    params = _params(one.query(AUDIO, "key_a"))
    assert two.owner_of(AUDIO, params) == "key_a"
    assert rotated.owner_of(AUDIO, params) is None
    with pytest.raises(ValueError, match="empty"):
        MediaUrlSigner(b"", 60)


def _request(path: str, query: str = "", authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    scope = {
        "type": "http",
        "client": ("10.0.0.7", 5000),
        "headers": headers,
        "path": path,
        "query_string": query.encode(),
    }
    return Request(scope)


def test_the_api_accepts_a_signed_link_instead_of_a_key(tmp_path: Path) -> None:
    config = resolve_config({"storage": {"data_dir": str(tmp_path)}, "auth": {"api_keys": ["k"]}})
    api = SongAPI(config, conductor=None, lyrics=None, tags=None)
    owner = api.owner(_request("/v1/songs", authorization="Bearer k"))
    link = api._media_url(AUDIO, owner)
    path, _, query = link.partition("?")
    assert api.media_owner(_request(path, query)) == owner
    with pytest.raises(ApiError) as refused:
        api.media_owner(_request(path, query.replace("sig=", "sig=f")))
    assert refused.value.status == 403 and "fresh links" in refused.value.message
    bad_link_with_a_key = _request(path, query.replace("sig=", "sig=f"), "Bearer k")
    assert api.media_owner(bad_link_with_a_key) == owner
    with pytest.raises(ApiError) as unsigned:
        api.media_owner(_request(path))
    assert unsigned.value.status == 401
    # Without keys (loopback only) links are plain paths.
    local = resolve_config({"storage": {"data_dir": str(tmp_path)}})
    local_api = SongAPI(local, conductor=None, lyrics=None, tags=None)
    assert local_api._media_url(AUDIO, "local") == AUDIO
