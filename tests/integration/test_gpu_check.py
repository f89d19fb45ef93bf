"""`scripts/gpu_check.sh --smoke`: the GPU check's own code on the CPU at toy shapes (its own Ray,
a real Serve deployment of the decoder pool, the raw pipeline, AudioSeal, htdemucs, the vLLM
test file). It must always print every row of its table, even when a part runs out of its time
share on a busy machine (that row then says TIMED OUT), and no part may fail with an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from gpu_check import expected_rows, settings  # noqa: E402

pytestmark = pytest.mark.integration


def test_smoke_run_prints_every_row_of_the_table(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--smoke", "--budget-s", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OUT": str(out_dir)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (out_dir / "gpu_check.md").read_text()
    assert table in done.stdout
    assert table.startswith("# gpu_check — smoke")
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    labels = [row.split(" | ")[1] for row in rows[1:]]  # after the header row
    assert labels == [label for _, label in expected_rows(settings(smoke=True))]
    for row in rows:
        assert "FAILED" not in row, row
    # The GPU-less parts of the check always finish: versions, and the vLLM test file's outcome.
    versions = next(row for row in rows if "| versions |" in row)
    assert "diffusers 0.42" in versions and "ray 2.60" in versions
    vllm = next(row for row in rows if "test_lyrics_vllm.py" in row)
    assert "passed" in vllm or "TIMED OUT" in vllm
