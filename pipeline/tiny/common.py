"""What the tiny-checkpoint builders (`pipeline/tiny/*`, run as `scripts/make_tiny_*.py`) share:
a byte-level BPE tokenizer trained on a small corpus, publishing a build atomically, and the
command line.

Every builder is idempotent (a complete build is left alone), never exposes a half-written build
(it writes into a private sibling and renames it into place), and refuses to overwrite something
it did not write unless forced.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def train_byte_level_bpe(corpus: str, vocab_size: int, special_tokens: Sequence[str]) -> Any:
    """A `tokenizers.Tokenizer`: byte-level BPE (every byte encodable, so no unknown tokens)
    trained on `corpus`, with a ByteLevel decoder (mlx-lm picks its fast streaming detokenizer
    from it). Deterministic for the same arguments."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([corpus] * 4, trainer=trainer)
    return bpe


def check_build_target(
    out_dir: Path, *, force: bool, is_complete: Callable[[Path], bool], what: str
) -> bool:
    """True when `out_dir` already holds a complete build (and `force` is off): nothing to do.
    Raises FileExistsError when `out_dir` holds something else and `force` is off."""
    if is_complete(out_dir) and not force:
        return True
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        # Builds never leave a partial OUT_DIR behind, so this is someone else's directory.
        raise FileExistsError(
            f"{out_dir} exists and is not a complete {what}; "
            "pass --force (force=True) to replace it"
        )
    return False


def publish_directory(
    out_dir: Path, write: Callable[[Path], None], is_complete: Callable[[Path], bool]
) -> Path:
    """Run `write(staging)` in a private sibling directory, then rename it to `out_dir`
    (replacing what was there), so neither a crash nor a concurrent build ever exposes a
    half-written build. Files are made world-readable: other processes load them."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        write(staging)
        for path in [staging, *staging.rglob("*")]:
            # mkdtemp makes the directory private, save_pretrained model files owner-only.
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except OSError:
        if not is_complete(out_dir):  # not a concurrent build that finished first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def builder_main(
    argv: list[str] | None,
    *,
    doc: str | None,
    what: str,
    build: Callable[..., Path],
    is_complete: Callable[[Path], bool],
    target_help: str,
) -> int:
    """The command line of a builder: `TARGET [--force]`; exit 2 when TARGET is someone else's."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("target", type=Path, metavar="OUT", help=target_help)
    parser.add_argument(
        "--force", action="store_true", help="Rebuild even if OUT holds a complete build."
    )
    args = parser.parse_args(argv)
    if is_complete(args.target) and not args.force:
        print(f"{args.target}: complete {what} already there (--force rebuilds)")
        return 0
    try:
        path = build(args.target, force=args.force)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    print(f"{path}: {what} written ({size / 1e6:.2f} MB)")
    return 0
