"""Provenance through the whole graph: AudioSeal (tiny random-weight checkpoints in its real
format) watermarks every variation, every file is C2PA-signed, and POST /v1/verify reports both.
Random weights cannot truly detect their own mark, so detection is asserted for shape, not value.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import wait_for_song

from .conftest import Deployed

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]


@pytest.fixture(scope="module")
def tiny_audioseal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("audioseal")
    from pipeline.tiny.audioseal import build_tiny_audioseal

    return build_tiny_audioseal(tmp_path_factory.mktemp("audioseal"))


def test_watermarked_signed_and_verified(
    deploy: DeployFn, tiny_audioseal: tuple[Path, Path]
) -> None:
    generator, detector = tiny_audioseal
    app = deploy(
        postprocess={
            "formats": ["m4a", "wav"],
            "watermark": {"generator_path": str(generator), "detector_path": str(detector)},
        }
    )
    song_id = app.client.post(
        "/v1/songs", json={"style": "ambient", "duration_s": 6, "variations": 1, "seed": 3}
    ).json()["id"]
    song = wait_for_song(app.client, song_id)
    assert song["status"] == "succeeded", song
    (variation,) = song["variations"]
    assert variation["provenance"]["watermark"] == {"embedded": True, "model": "audioseal"}
    assert variation["provenance"]["c2pa"] == {"signed": True, "formats": ["m4a", "wav"]}
    timings = app.job(song_id).variations[0].render["postprocess_s"]
    assert timings["watermark"] > 0 and timings["c2pa"] > 0

    wav = app.client.get(variation["audio"]["wav"]).content
    report = app.client.post("/v1/verify", files={"file": ("song.wav", wav)}).json()
    assert report["c2pa"]["valid"] is True
    assert report["c2pa"]["manifest"]["generation"]["seed"] == 3
    assert set(report["watermark"]) == {"detected", "score"}
    assert 0.0 <= report["watermark"]["score"] <= 1.0
