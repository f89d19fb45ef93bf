"""Signed media links: valid for their own file (or HLS rendition) and owner, until they expire;
the link names no owner (the API checks it against the song's)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from serve.config import resolve_config
from serve.media_urls import MediaUrlSigner, sign_playlist, signing_scope
from tests.http_graph import REMOTE_CLIENT, api_client

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
    assert "own" not in params and signer.is_valid(AUDIO, params, "key_a")
    assert int(params["exp"]) >= clock.now + 3600
    assert not signer.is_valid(AUDIO.replace("m4a", "mp3"), params, "key_a")
    assert not signer.is_valid(AUDIO, params, "key_b")
    assert not signer.is_valid(AUDIO, {**params, "exp": str(int(params["exp"]) + 600)}, "key_a")
    assert not signer.is_valid(AUDIO, {k: v for k, v in params.items() if k != "sig"}, "key_a")
    assert not signer.is_valid(AUDIO, {**params, "exp": "soon"}, "key_a")
    assert not signer.is_valid(AUDIO, {**params, "sig": "é" * 32}, "key_a")
    other_secret = MediaUrlSigner(b"other", ttl_s=3600, clock=clock)
    assert not other_secret.is_valid(AUDIO, params, "key_a")
    clock.now = int(params["exp"]) + 1
    assert not signer.is_valid(AUDIO, params, "key_a")


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
    assert signer.is_valid(HLS + "segment_00001.aac", _params(query), "key_a")
    assert not signer.is_valid("/v1/songs/song_2/variations/0/hls/x.aac", _params(query), "key_a")

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
    assert two.is_valid(AUDIO, params, "key_a")
    assert not rotated.is_valid(AUDIO, params, "key_a")
    with pytest.raises(ValueError, match="empty"):
        MediaUrlSigner(b"", 60)


def test_the_api_accepts_a_signed_link_instead_of_a_key(tmp_path: Path) -> None:
    config = resolve_config({"storage": {"data_dir": str(tmp_path)}, "auth": {"api_keys": ["k"]}})
    client, services = api_client(config, client=REMOTE_CLIENT)
    key = {"Authorization": "Bearer k"}
    song = client.post("/v1/songs", json={"prompt": "a song", "variations": 1}, headers=key)
    song_id = song.json()["id"]
    path = f"/v1/songs/{song_id}/variations/0/peaks"
    owner = asyncio.run(services.auth.caller("Bearer k", REMOTE_CLIENT[0])).owner
    query = services.views.media_url(path, owner).partition("?")[2]
    assert set(_params(query)) == {"exp", "sig"}  # the link names no owner
    # The variation is not made (no conductor here): a valid link gets as far as that.
    signed = client.get(f"{path}?{query}")
    assert signed.status_code == 404 and signed.json()["error"]["code"] == "not_ready"
    altered = client.get(f"{path}?{query.replace('sig=', 'sig=f')}")
    assert altered.status_code == 403 and "fresh links" in altered.json()["error"]["message"]
    altered_with_a_key = client.get(f"{path}?{query.replace('sig=', 'sig=f')}", headers=key)
    assert altered_with_a_key.status_code == 404
    assert client.get(path).status_code == 401
    # A link made for another owner opens nothing of this one's.
    foreign = services.views.media_url(path, "key_someone_else").partition("?")[2]
    assert client.get(f"{path}?{foreign}").status_code == 403
    # Without keys (loopback only) links are plain paths.
    local = resolve_config({"storage": {"data_dir": str(tmp_path / "local")}})
    _, local_services = api_client(local)
    assert local_services.views.media_url(AUDIO, "local") == AUDIO
