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

import json
import sys
from pathlib import Path
from typing import Any

from .common import (
    builder_main,
    check_build_target,
    publish_directory,
    train_byte_level_bpe,
)

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
    from transformers import PreTrainedTokenizerFast

    bpe = train_byte_level_bpe(_TOKENIZER_CORPUS, _VOCAB_SIZE, [END_OF_TEXT, IM_START, IM_END])
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
    if check_build_target(out_dir, force=force, is_complete=is_complete, what="tiny Qwen3 model"):
        return out_dir

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

    def write(staging: Path) -> None:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "TINY_MODEL.json").write_text(
            json.dumps({"builder": "scripts/make_tiny_qwen3.py", "seed": SEED}, indent=2) + "\n"
        )

    return publish_directory(out_dir, write, is_complete)


def main(argv: list[str] | None = None) -> int:
    return builder_main(
        argv,
        doc=__doc__,
        what="tiny Qwen3 model",
        build=build_tiny_qwen3,
        is_complete=is_complete,
        target_help="Directory to write the model to.",
    )


if __name__ == "__main__":
    sys.exit(main())
