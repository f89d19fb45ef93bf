"""`songserve load` against the embedded default graph on a real local Ray."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from serve.load import LoadOptions, parse_profile, read_records, run_load, write_report

from .conftest import Deployed

pytestmark = pytest.mark.integration


def test_load_run_accounts_for_every_song_and_writes_the_report(
    deploy: Callable[..., Deployed], tmp_path: Path
) -> None:
    app = deploy()
    options = LoadOptions(
        rates_per_s=[0.4, 0.8],  # a two-step ramp: ~2 then ~4 songs in 5 s steps
        step_s=5.0,
        max_songs=6,
        drain_s=90.0,
        seed=2,
        url=str(app.client.base_url).rstrip("/"),
        profile=parse_profile({"duration_s": 5, "variations": 1}),
    )
    lines: list[str] = []
    run = asyncio.run(run_load(options, log=lines.append))

    assert 1 <= len(run.records) <= 6
    assert any(line.startswith("step 1/2") for line in lines)
    for record in run.records:
        assert record.http_status == 202 and record.admission == "accepted", record
        assert record.result == "done", record
        assert record.song_id and record.submitted_at_s is not None
        assert record.first_progress_s is not None and record.done_s is not None
        assert 0 < record.first_progress_s < record.done_s < 90
        assert record.body["duration_s"] == 5 and record.body["variations"] == 1
    # Open loop: each POST left on its schedule, not after the previous song finished.
    for record in run.records:
        assert record.submitted_at_s - record.scheduled_at_s < 2.0
    # What the load generator saw is what the server did.
    for record in run.records:
        song = app.client.get(f"/v1/songs/{record.song_id}").json()
        assert song["status"] == "succeeded" and len(song["variations"]) == 1

    files = write_report(run, tmp_path / "report", command_line="test", p95_target_s=60)
    assert files.latency_chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files.throughput_chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = files.markdown.read_text()
    assert "| step | offered /min |" in text and "**Knee:" in text
    saved = read_records(files.records)
    assert [r.song_id for r in saved] == [r.song_id for r in run.records]
    assert all(
        json.loads(line)["result"] == "done" for line in files.records.read_text().splitlines()
    )
