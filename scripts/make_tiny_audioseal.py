"""Build a tiny random-weight AudioSeal generator and detector in AudioSeal's published format; the
builder is pipeline/tiny/audioseal.py."""

import sys
from pathlib import Path

# Run as a file from a checkout that is not installed: the repository's packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.tiny.audioseal import main

if __name__ == "__main__":
    raise SystemExit(main())
