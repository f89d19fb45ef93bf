"""`songserve load` report: Markdown table, PNG charts, raw records."""

from __future__ import annotations

import struct
from pathlib import Path

from serve.load import LoadProfile, LoadRun, read_records, write_report

from .test_load_summary import fifo_server


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's signature and IHDR chunk (raises if it is no PNG)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_markdown_charts_and_records(tmp_path: Path) -> None:
    steps, records = fifo_server([6, 9, 12, 24], step_s=300)
    run = LoadRun(
        url="http://127.0.0.1:8000",
        seed=3,
        steps=steps,
        records=records,
        started_at="2026-12-01T10:00:00+00:00",
        submit_s=1200,
        wall_s=1500,
        profile=LoadProfile().describe(),
    )
    files = write_report(
        run, tmp_path / "out", command_line="songserve load --ramp 0.1,0.15", p95_target_s=600
    )
    for chart in (files.latency_chart, files.throughput_chart):
        width, height = png_size(chart)
        assert width >= 400 and height >= 300
    text = files.markdown.read_text()
    assert "songserve load --ramp 0.1,0.15" in text
    assert "**Knee: 9.00 songs/min offered**" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| step | offered /min | submitted | admitted | 429 | 503 |")
    assert len(table) == 1 + len(steps)  # header + one row per step
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert table[1].startswith("| 1 | 6.00 | 30 | 30 | 0 | 0 | 0 | 30 | 0 | 0 | 6.")
    assert "![time to done against offered load](latency.png)" in text
    assert "![finished songs per minute against offered load](throughput.png)" in text
    assert "duration_s:" in text  # the profile
    assert read_records(files.records) == records
