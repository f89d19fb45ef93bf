"""Build a tiny random-weight ACE-Step 1.5 checkpoint in diffusers format, plus two LoRAs.

The checkpoint has the real component classes and on-disk layout of
`ACE-Step/acestep-v15-xl-turbo-diffusers` (AceStepPipeline: Qwen3 text encoder, byte-level BPE
tokenizer, AceStepConditionEncoder, AceStepTransformer1DModel, AutoencoderOobleck, FlowMatch
scheduler; turbo) at toy sizes (~0.2 M parameters, a few MB), so the real `from_pretrained`,
inference and LoRA paths run on a CPU in well under a second per render. Its audio is noise-like:
it exercises the serving stack, not music quality.

It also carries the pipeline's optional `audio_tokenizer` / `audio_token_detokenizer`
(AceStepAudioTokenizer: 25 Hz latents → 5 Hz FSQ codes; AceStepAudioTokenDetokenizer: back),
which the cover task needs. The official turbo checkpoints ship without them (the base/SFT ones,
e.g. `acestep-v15-xl-sft-diffusers`, carry them in folders of those names):
`copy_without_cover_modules` makes a copy laid out like a turbo one.

    python scripts/make_tiny_acestep.py OUT_DIR [--force]

OUT_DIR/loras/tiny-a and OUT_DIR/loras/tiny-b hold `pytorch_lora_weights.safetensors` files in
the diffusers PEFT format (`transformer.layers.N.{self_attn,cross_attn}.{to_q,to_k,to_v,to_out.0}
.lora_{A,B}.weight`), rank 4, strong enough to change the output audio clearly.

Deterministic: the same script version writes the same weights (fixed torch seed).
"""

from __future__ import annotations

import json
import shutil
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
SAMPLE_RATE = 48_000
LORA_RANK = 4
LORA_NAMES = ("tiny-a", "tiny-b")
LORA_FILE = "pytorch_lora_weights.safetensors"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
COVER_MODULES = ("audio_tokenizer", "audio_token_detokenizer")
"""The pipeline's optional components cover needs (their folder names in a checkpoint)."""
BUILDER_VERSION = 2  # 2: with the cover modules; a build of an older version is rebuilt
# Files whose presence marks a complete build; the model index is written last by save_pretrained,
# the LoRAs after it, so a build interrupted half-way is never taken for a complete one.
COMPLETE_MARKERS = (
    "model_index.json",
    "transformer/config.json",
    "vae/config.json",
    *(f"{module}/config.json" for module in COVER_MODULES),
    *(f"loras/{name}/{LORA_FILE}" for name in LORA_NAMES),
)

_HIDDEN = 32
_LATENT_CHANNELS = 8  # VAE latent channels == transformer audio_acoustic_hidden_dim
_VOCAB_SIZE = 300
_EOS = "<|endoftext|>"
_TOKENIZER_CORPUS = (
    "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\n"
    "indie pop, dream pop, happy, female vocals, acoustic guitar, piano, synth, drums\n\n"
    "# Metas\n- bpm: 120\n- timesignature: 4\n- keyscale: F# minor\n- duration: 30 seconds\n"
    "# Languages\nen\n\n# Lyric\n[verse]\nI still remember the sea, sailing home tonight\n"
    "[chorus]\nSing with me, never let go\n[bridge]\nBut maybe the night\n[outro]\n"
    "0123456789 the and of to in is you that it he was for on are as with his they at be this "
)


def is_complete(out_dir: Path) -> bool:
    """True when `out_dir` holds every file a finished build writes."""
    return all((out_dir / marker).is_file() for marker in COMPLETE_MARKERS)


def _built_by_an_older_version(out_dir: Path) -> bool:
    """True when `out_dir` holds this builder's output from before BUILDER_VERSION: it is ours
    to replace, not someone else's directory."""
    try:
        info = json.loads((out_dir / "TINY_MODEL.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(info, dict)
        and info.get("builder") == "scripts/make_tiny_acestep.py"
        and info.get("version", 1) < BUILDER_VERSION
    )


def copy_without_cover_modules(checkpoint: Path, out_dir: Path) -> Path:
    """Copy `checkpoint` to `out_dir` without the audio tokenizer and detokenizer (folders and
    `model_index.json` entries), as the official turbo checkpoints ship: a checkpoint that
    renders text2music, repaint and extend but not cover. Returns `out_dir`."""
    shutil.copytree(checkpoint, out_dir, ignore=shutil.ignore_patterns(*COVER_MODULES))
    index_path = out_dir / "model_index.json"
    index = json.loads(index_path.read_text())
    for module in COVER_MODULES:
        index.pop(module, None)
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return out_dir


def _tokenizer() -> Any:
    from transformers import PreTrainedTokenizerFast

    bpe = train_byte_level_bpe(_TOKENIZER_CORPUS, _VOCAB_SIZE, [_EOS])
    # Right padding: the pipeline runs the causal text encoder without an attention mask, so
    # padding after the real tokens never changes their hidden states.
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=_EOS, pad_token=_EOS, padding_side="right"
    )


def _lora_state_dict(transformer: Any, generator: Any) -> dict[str, Any]:
    """PEFT LoRA weights for every attention projection of the transformer, in the key layout
    `AceStepPipeline.load_lora_weights` reads (prefix `transformer.`)."""
    import torch

    state: dict[str, Any] = {}
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if not any(name.endswith(f".{target}") for target in LORA_TARGETS):
            continue
        # B·A with entries ~N(0, 0.5²) over rank 4 perturbs each weight by about its own size:
        # a clearly audible (and measurable) change, not a rounding-level one.
        lora_a = torch.randn(LORA_RANK, module.in_features, generator=generator) * 0.5
        lora_b = torch.randn(module.out_features, LORA_RANK, generator=generator) * 0.5
        state[f"transformer.{name}.lora_A.weight"] = lora_a.contiguous()
        state[f"transformer.{name}.lora_B.weight"] = lora_b.contiguous()
    return state


def _make_decoder_audible(vae: Any) -> None:
    """Make the random VAE decoder pass its latents through instead of drowning them.

    At random init the decoder's biases and its Snake activations (`x + sin²(x)/β`, always ≥ x)
    add a large positive offset at every layer, so the output is nearly the same waveform for
    any latents (seeds, LoRAs) once the pipeline peak-normalises it. With zero biases and β = e³
    the decoder is close to linear and different latents give clearly different audio.
    """
    import torch

    with torch.no_grad():
        for name, parameter in vae.decoder.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
            elif name.endswith("beta"):
                parameter.fill_(3.0)


def build_tiny_acestep(out_dir: Path, *, force: bool = False) -> Path:
    """Write the tiny checkpoint and its two LoRAs to `out_dir`; returns `out_dir`.

    Does nothing when `out_dir` already holds a complete build, unless `force` (which deletes
    and rebuilds it); a build of an older version of this builder is rebuilt. Takes a few
    seconds on 2 CPU cores; writes ~1 MB.
    """
    out_dir = Path(out_dir)
    if check_build_target(
        out_dir,
        force=force or _built_by_an_older_version(out_dir),
        is_complete=is_complete,
        what="tiny ACE-Step checkpoint",
    ):
        return out_dir

    import torch
    from diffusers import (
        AceStepPipeline,
        AceStepTransformer1DModel,
        AutoencoderOobleck,
        FlowMatchEulerDiscreteScheduler,
    )
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(SEED)
    tokenizer = _tokenizer()
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=_HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    transformer = AceStepTransformer1DModel(
        hidden_size=_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        # Noise latents, source latents and the chunk mask are concatenated on the channels.
        in_channels=3 * _LATENT_CHANNELS,
        audio_acoustic_hidden_dim=_LATENT_CHANNELS,
        patch_size=2,
        rope_theta=1e4,
        sliding_window=16,
        is_turbo=True,
        model_version="turbo",
    )
    condition_encoder = AceStepConditionEncoder(
        hidden_size=_HIDDEN,
        intermediate_size=64,
        text_hidden_dim=_HIDDEN,
        timbre_hidden_dim=_LATENT_CHANNELS,
        num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        rope_theta=1e4,
        sliding_window=16,
    )
    vae = AutoencoderOobleck(
        encoder_hidden_size=16,
        downsampling_ratios=[2, 4, 4, 6, 10],  # product 1920: 48 kHz → 25 latent frames/s
        channel_multiples=[1, 1, 1, 1, 1],
        decoder_channels=4,
        decoder_input_channels=_LATENT_CHANNELS,
        audio_channels=2,
        sampling_rate=SAMPLE_RATE,
    )
    _make_decoder_audible(vae)
    # The cover modules, made last so the other weights stay those of builder version 1: 5
    # latent frames pool into one FSQ code (the real checkpoints' levels, a 64 000-code book)
    # and expand back; the quantizer works at the tokenizer's hidden size.
    tiny_layers = {
        "hidden_size": _HIDDEN,
        "intermediate_size": 64,
        "audio_acoustic_hidden_dim": _LATENT_CHANNELS,
        "pool_window_size": 5,
        "num_attention_pooler_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "rope_theta": 1e4,
        "sliding_window": 16,
    }
    audio_tokenizer = AceStepAudioTokenizer(
        fsq_dim=_HIDDEN, fsq_input_levels=[8, 8, 8, 5, 5, 5], **tiny_layers
    )
    audio_token_detokenizer = AceStepAudioTokenDetokenizer(**tiny_layers)
    # ACE-Step computes its shifted sigma schedule itself and feeds it verbatim.
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)

    pipeline: Any = AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=scheduler,
        audio_tokenizer=audio_tokenizer,
        audio_token_detokenizer=audio_token_detokenizer,
    )
    return publish_directory(
        out_dir, lambda staging: _write(pipeline, transformer, staging), is_complete
    )


def _write(pipeline: Any, transformer: Any, staging: Path) -> None:
    import torch
    from safetensors.torch import save_file

    pipeline.save_pretrained(staging, safe_serialization=True)

    generator = torch.Generator().manual_seed(SEED + 1)
    for name in LORA_NAMES:
        lora_dir = staging / "loras" / name
        lora_dir.mkdir(parents=True)
        save_file(_lora_state_dict(transformer, generator), str(lora_dir / LORA_FILE))
        (lora_dir / "README.md").write_text(
            f"Random rank-{LORA_RANK} LoRA for the tiny ACE-Step test checkpoint "
            f"(to_q/to_k/to_v/to_out.0 of every attention block).\n"
        )
    (staging / "TINY_MODEL.json").write_text(
        json.dumps(
            {"builder": "scripts/make_tiny_acestep.py", "version": BUILDER_VERSION, "seed": SEED},
            indent=2,
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    return builder_main(
        argv,
        doc=__doc__,
        what="tiny ACE-Step checkpoint",
        build=build_tiny_acestep,
        is_complete=is_complete,
        target_help="Directory to write the checkpoint to.",
    )


if __name__ == "__main__":
    sys.exit(main())
