"""Build a tiny random-weight htdemucs checkpoint in Demucs' own `.th` package format; the builder
is pipeline/tiny/htdemucs.py."""

import sys
from pathlib import Path

# Run as a file from a checkout that is not installed: the repository's packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.tiny.htdemucs import main

if __name__ == "__main__":
    raise SystemExit(main())
