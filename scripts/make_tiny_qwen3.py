"""Build a tiny random-weight Qwen3 chat model in Hugging Face format, for the mlx lyrics engine.

The directory has the on-disk layout of a real Qwen3 instruct checkpoint (`config.json`,
`generation_config.json`, `model.safetensors`, `tokenizer.json`, `tokenizer_config.json` with a
ChatML `chat_template`), written by `Qwen3ForCausalLM.save_pretrained`, so `mlx_lm.load` and
`transformers` read it through their real loading paths. The model is toy-sized (2 layers,
hidden 64, ~0.1 M parameters, well under a MB) and its answers are random token soup: it
exercises the serving code, not lyric quality.

    python scripts/make_tiny_qwen3.py OUT_DIR [--force]

The tokenizer is a byte-level BPE trained here on a small built-in corpus of English and Spanish
lyric-like lines and the section markup the prompts use (`[verse]`, `[chorus]`, ...), with Qwen's
special tokens `<|im_start|>`, `<|im_end|>` and `<|endoftext|>`. Generation stops at either
`<|im_end|>` or `<|endoftext|>`, as with Qwen3.

Deterministic: the same script version writes the same weights (fixed torch seed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

SEED = 1234
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
# Files whose presence marks a complete build; TINY_MODEL.json is written last, and the whole
# build is renamed into place at once, so a half-written directory is never taken for a build.
COMPLETE_MARKERS = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "TINY_MODEL.json",
)

_VOCAB_SIZE = 512  # BPE vocabulary incl. the 256 byte symbols; special tokens come on top
# Qwen2.5/Qwen3's ChatML template, less tools and thinking: system turn only when given, each
# message wrapped in <|im_start|>role ... <|im_end|>, and an open assistant turn on request.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)
_TOKENIZER_CORPUS = (
    "You are a songwriter. Write lyrics for a song. Use section tags on their own lines.\n"
    "Write the lyrics for: an upbeat summer pop song about driving to the sea, 30 seconds.\n"
    "Style: indie pop, dream pop, female vocals. Language: en.\n"
    "[verse]\nI still remember the sea, sailing home tonight\n"
    "Headlights on the highway, you and me and the radio\n"
    "[chorus]\nSing with me, never let go\nHold on, hold on, the night is young\n"
    "[bridge]\nBut maybe the night will carry us home\n"
    "[outro]\nNever let go, never let go\n\n"
    "Escribe la letra de una canción: balada triste sobre la lluvia, en español.\n"
    "[verse]\nBajo la lluvia te esperé, la ciudad dormía\n"
    "Tu nombre en mi corazón, mi vida, mi canción\n"
    "[chorus]\nCanta conmigo, no me dejes ir\nLa noche es nuestra, amor, amor\n"
    "[bridge]\nY si mañana el sol no vuelve a salir\n"
    "[outro]\nNo me dejes ir, no me dejes ir\n\n"
    "the and of to in is you that it was for on are as with they at be this my your love "
    "heart night light fire dance dream baby oh yeah la la la el la los las de que y en "
    "0123456789 , . ! ? ' \" - ( ) :\n"
)


def is_complete(out_dir: Path) -> bool:
    """True when `out_dir` holds every file a finished build writes."""
    return all((out_dir / marker).is_file() for marker in COMPLETE_MARKERS)


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # mlx-lm picks its fast streaming detokenizer from this ByteLevel decoder in tokenizer.json.
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=[END_OF_TEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([_TOKENIZER_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def build_tiny_qwen3(out_dir: Path, *, force: bool = False) -> Path:
    """Write the tiny Qwen3 chat model to `out_dir`; returns `out_dir`.

    Does nothing when `out_dir` already holds a complete build, unless `force` (which deletes
    and rebuilds it). Raises FileExistsError when `out_dir` is a non-empty directory that is not
    a build. Takes a few seconds (mostly importing transformers); writes well under 1 MB.
    """
    out_dir = Path(out_dir)
    if is_complete(out_dir) and not force:
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        # Builds never leave a partial OUT_DIR behind, so this is someone else's directory.
        raise FileExistsError(
            f"{out_dir} exists and is not a complete tiny Qwen3 model; "
            "pass --force (force=True) to replace it"
        )

    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(SEED)
    tokenizer = _tokenizer()
    eos_ids = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_ids[0],
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )

    # Build in a private sibling dir and rename it into place, so neither a crash nor a build
    # running concurrently ever exposes a half-written model.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the model is read by other processes
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "TINY_MODEL.json").write_text(
            json.dumps({"builder": "scripts/make_tiny_qwen3.py", "seed": SEED}, indent=2) + "\n"
        )
        for file in staging.iterdir():
            file.chmod(0o644)  # save_pretrained writes model.safetensors owner-only
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except OSError:
        if not is_complete(out_dir):  # not a concurrent build that finished first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path, help="Directory to write the model to.")
    parser.add_argument(
        "--force", action="store_true", help="Rebuild even if OUT_DIR holds a complete build."
    )
    args = parser.parse_args(argv)
    if is_complete(args.out_dir) and not args.force:
        print(f"{args.out_dir}: complete tiny Qwen3 model already there (--force rebuilds)")
        return 0
    try:
        path = build_tiny_qwen3(args.out_dir, force=args.force)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"{path}: tiny Qwen3 model written ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
