"""Build a tiny random-weight ACE-Step 1.5 checkpoint in diffusers format (with the audio
tokenizer and detokenizer covers need), plus two LoRAs; the builder is pipeline/tiny/acestep.py.
A build by an older version of the builder is replaced."""

import sys
from pathlib import Path

# Run as a file from a checkout that is not installed: the repository's packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.tiny.acestep import main

if __name__ == "__main__":
    raise SystemExit(main())
