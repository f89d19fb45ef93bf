"""Build a tiny random-weight Qwen3 chat model in Hugging Face format, for the mlx lyrics engine;
the builder is pipeline/tiny/qwen3.py."""

import sys
from pathlib import Path

# Run as a file from a checkout that is not installed: the repository's packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.tiny.qwen3 import main

if __name__ == "__main__":
    raise SystemExit(main())
