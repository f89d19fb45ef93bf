"""Build a tiny random-weight htdemucs checkpoint in Demucs' own `.th` package format.

The package is what Demucs' training writes and `demucs.states.load_model` reads — a torch-saved
dict `{klass: HTDemucs, args, kwargs, state (float16), training_args}` made by
`demucs.states.serialize_model` and written by `demucs.states.save_with_checksum` — so the real
loading and `demucs.apply.apply_model` paths run. The model is the real `HTDemucs` class (sources
drums, bass, other, vocals; 44.1 kHz; both branches, cross-transformer) at toy sizes (~70 k
parameters, ~0.2 MB; 4 base channels, nfft 1024, 1 transformer layer, 5 s segments, no DConv
branches), separating 10 s of stereo in about a second on 2 CPU cores. Its stems are noise-like:
it exercises the serving stack, not separation quality.

    python scripts/make_tiny_htdemucs.py OUT_PATH [--force]

Deterministic: the same script version writes the same weights (fixed torch seed).
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import builder_main

SEED = 1234
BUILDER = "scripts/make_tiny_htdemucs.py"
SOURCES = ["drums", "bass", "other", "vocals"]
SAMPLE_RATE = 44_100
# The full-size htdemucs defaults except for size: channels 48 → 4, nfft 4096 → 1024,
# 5 → 1 transformer layers (2 heads, hidden ×1), segment 7.8 → 5 s, and no DConv residual
# branches (their grouped convolutions cost most of the CPU time at this size).
TINY_KWARGS: dict[str, Any] = {
    "sources": SOURCES,
    "audio_channels": 2,
    "samplerate": SAMPLE_RATE,
    "segment": 5,
    "channels": 4,
    "nfft": 1024,
    "depth": 4,
    "t_layers": 1,
    "t_heads": 2,
    "t_hidden_scale": 1.0,
    "dconv_mode": 0,
}


def is_complete(out_path: Path) -> bool:
    """True when `out_path` is a checkpoint this script wrote with the current settings."""
    package = _read_package(out_path)
    return (
        package is not None
        and (package.get("training_args") or {}).get("builder") == BUILDER
        and package.get("kwargs") == TINY_KWARGS
    )


def _read_package(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import torch

    try:
        package = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, OSError, EOFError, RuntimeError, ValueError, ImportError):
        return None  # not a torch file, or one pickling classes we lack: someone else's
    return package if isinstance(package, dict) else None


def build_tiny_htdemucs(out_path: Path, *, force: bool = False) -> Path:
    """Write the tiny checkpoint to `out_path` (a file, e.g. `tiny-htdemucs.th`); returns it.

    Does nothing when `out_path` already holds a complete build, unless `force`. Raises
    FileExistsError when `out_path` exists and is something else (unless `force`, which
    replaces it). The file appears atomically, so a concurrent or interrupted build never
    exposes a partial checkpoint.
    """
    out_path = Path(out_path)
    if not force and is_complete(out_path):
        return out_path
    if out_path.exists() and not force:
        raise FileExistsError(
            f"{out_path} exists and is not a tiny htdemucs checkpoint; "
            "pass --force (force=True) to replace it"
        )

    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import save_with_checksum, serialize_model
    from omegaconf import OmegaConf

    torch.manual_seed(SEED)
    model = HTDemucs(**TINY_KWARGS)
    training_args = OmegaConf.create({"builder": BUILDER, "seed": SEED})
    package = serialize_model(model, training_args)  # float16 state, as Demucs' solver saves

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f".{out_path.name}.partial-", dir=out_path.parent
    ) as tmp:
        # save_with_checksum names the file `<stem>-<sha256[:8]><suffix>`, as in Demucs' repos.
        save_with_checksum(package, Path(tmp) / "tiny_htdemucs.th")
        (written,) = Path(tmp).glob("tiny_htdemucs-*.th")
        written.chmod(0o644)
        os.replace(written, out_path)
    return out_path


def main(argv: list[str] | None = None) -> int:
    return builder_main(
        argv,
        doc=__doc__,
        what="tiny htdemucs checkpoint",
        build=build_tiny_htdemucs,
        is_complete=is_complete,
        target_help="Checkpoint file to write (.th).",
    )


if __name__ == "__main__":
    sys.exit(main())
