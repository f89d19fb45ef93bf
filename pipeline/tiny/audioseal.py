"""Build a tiny random-weight AudioSeal generator and detector in AudioSeal's published format.

The files have the layout of `facebook/audioseal` `generator_base.pth` / `detector_base.pth` as
written by AudioSeal's own `src/scripts/checkpoints.py` from an AudioCraft training checkpoint:

    {"xp.cfg": {"seanet": DictConfig(SEANet hparams + encoder/decoder/detector sub-blocks),
                "channels": 1, "dtype": "float32", "sample_rate": 16000},
     "model": state_dict}

The state dict uses the AudioCraft training-time module names (`encoder.model.0.conv.conv.*`,
`decoder.model.3.convtr.convtr.*`, `msg_processor.msg_processor.weight`, `detector.0.*`,
`detector.1.*`) with every SEANet convolution weight-normalised (`weight_g`/`weight_v`, the
legacy `torch.nn.utils.weight_norm` names). There is no `nbits` in `xp.cfg`, as in the published
files: the message length (16 bits) is read from the message embedding / detector head shapes.

Sizes are toy (4 filters, 16-dim latent, one LSTM layer) but the strides are the real ones
([8, 5, 4, 2], 320 samples per latent frame), so the real loader, framing and 16 kHz pipeline
run in milliseconds on a CPU. Weights are random: the watermark is an audible-free small noise,
and the detector's scores mean nothing. They exercise the serving stack, not watermark quality.

    python scripts/make_tiny_audioseal.py OUT_DIR [--force]

Deterministic: the same script version writes the same weights (fixed torch seed).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Literal

SEED = 4321
NBITS = 16
SAMPLE_RATE = 16_000
GENERATOR_FILE = "audioseal_wm_tiny.pth"
DETECTOR_FILE = "audioseal_detector_tiny.pth"
# Peak of the random watermark relative to full scale: the real model's watermark sits tens of dB
# under the music; random decoder weights would otherwise add noise near full scale.
_WATERMARK_GAIN = 1e-3

WeightNormKeys = Literal["legacy", "parametrizations"]


def tiny_seanet_config() -> dict[str, Any]:
    """SEANet hparams in AudioCraft's `xp.cfg["seanet"]` shape, at toy sizes (real strides)."""
    return {
        "activation": "ELU",
        "activation_params": {"alpha": 1.0},
        "causal": False,
        "channels": 1,
        "compress": 2,
        "dilation_base": 2,
        "dimension": 16,
        "disable_norm_outer_blocks": 0,
        "kernel_size": 7,
        "last_kernel_size": 7,
        "lstm": 1,
        "n_filters": 4,
        "n_residual_layers": 1,
        "norm": "weight_norm",
        "norm_params": {},
        "pad_mode": "constant",
        "ratios": [8, 5, 4, 2],
        "residual_kernel_size": 3,
        "true_skip": True,
        "encoder": {},
        "decoder": {
            "final_activation": None,
            "final_activation_params": None,
            "trim_right_ratio": 1.0,
        },
        "detector": {},
    }


def audioseal_checkpoint(
    seanet: dict[str, Any], state_dict: dict[str, Any], *, sample_rate: int = SAMPLE_RATE
) -> dict[str, Any]:
    """The dict AudioSeal's `checkpoints.py` saves: inference config under `xp.cfg`, weights."""
    from omegaconf import OmegaConf

    return {
        "xp.cfg": {
            "seanet": OmegaConf.create(seanet),
            "channels": 1,
            "dtype": "float32",
            "sample_rate": sample_rate,
        },
        "model": state_dict,
    }


def random_generator_state_dict(
    seanet: dict[str, Any], *, nbits: int = NBITS, weight_norm_keys: WeightNormKeys = "legacy"
) -> dict[str, Any]:
    """Random generator weights under AudioCraft training names (call under a seeded RNG)."""
    from audioseal.libs.audiocraft.modules.seanet import SEANetDecoder, SEANetEncoder
    from audioseal.models import AudioSealWM, MsgProcessor

    hparams = _plain_seanet_hparams(seanet)
    encoder = SEANetEncoder(**hparams)
    decoder = SEANetDecoder(**hparams, **seanet["decoder"])
    model = AudioSealWM(encoder, decoder, MsgProcessor(nbits, hparams["dimension"]))
    last_conv = [m for m in decoder.modules() if type(m).__name__ == "Conv1d"][-1]
    _scale_output(last_conv, _WATERMARK_GAIN)
    return _weight_normalised(model.state_dict(), weight_norm_keys)


def random_detector_state_dict(
    seanet: dict[str, Any], *, nbits: int = NBITS, weight_norm_keys: WeightNormKeys = "legacy"
) -> dict[str, Any]:
    """Random detector weights under AudioCraft training names (call under a seeded RNG)."""
    from audioseal.libs.audiocraft.modules.seanet import SEANetEncoderKeepDimension
    from audioseal.models import AudioSealDetector

    output_dim = seanet.get("detector", {}).get("output_dim", 32)
    encoder = SEANetEncoderKeepDimension(**_plain_seanet_hparams(seanet), output_dim=output_dim)
    # AudioSeal annotates the moshi SEANet; its published detectors are built on this one.
    model = AudioSealDetector(encoder, nbits=nbits)  # type: ignore[arg-type]
    return _weight_normalised(model.state_dict(), weight_norm_keys)


def build_tiny_audioseal(
    out_dir: Path, *, force: bool = False, weight_norm_keys: WeightNormKeys = "legacy"
) -> tuple[Path, Path]:
    """Write the tiny generator and detector checkpoints; return (generator_path, detector_path).

    Does nothing when both files already exist, unless `force`. Each file is written to a
    temporary name and renamed, so an interrupted build never leaves a truncated checkpoint.
    """
    import torch

    out_dir = Path(out_dir)
    generator_path, detector_path = out_dir / GENERATOR_FILE, out_dir / DETECTOR_FILE
    if generator_path.is_file() and detector_path.is_file() and not force:
        return generator_path, detector_path
    out_dir.mkdir(parents=True, exist_ok=True)

    seanet = tiny_seanet_config()
    torch.manual_seed(SEED)
    generator = random_generator_state_dict(seanet, weight_norm_keys=weight_norm_keys)
    torch.manual_seed(SEED + 1)
    detector = random_detector_state_dict(seanet, weight_norm_keys=weight_norm_keys)
    for path, state_dict in ((generator_path, generator), (detector_path, detector)):
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(audioseal_checkpoint(seanet, state_dict), staging)
        os.replace(staging, path)
    return generator_path, detector_path


def _plain_seanet_hparams(seanet: dict[str, Any]) -> dict[str, Any]:
    # Weight norm is applied to the finished state dict instead (see `_weight_normalised`), so the
    # modules are built plain; the sub-blocks are not SEANet constructor arguments.
    shared = {k: v for k, v in seanet.items() if k not in ("encoder", "decoder", "detector")}
    return {**shared, "norm": "none"}


def _scale_output(conv: Any, gain: float) -> None:
    import torch

    with torch.no_grad():
        conv.weight.mul_(gain)
        if conv.bias is not None:
            conv.bias.zero_()


def _weight_normalised(state_dict: dict[str, Any], keys: WeightNormKeys) -> dict[str, Any]:
    """Split every SEANet conv weight into weight norm's (g, v), named as AudioCraft saved them.

    AudioCraft trains with weight norm on each `conv.conv` / `convtr.convtr`; the published
    checkpoints keep the split. The detector's 1x1 head and transposed projection are plain.
    """
    result: dict[str, Any] = {}
    for key, tensor in state_dict.items():
        is_seanet_conv = key.endswith((".conv.conv.weight", ".convtr.convtr.weight"))
        if not is_seanet_conv:
            result[key] = tensor
            continue
        prefix = key[: -len(".weight")]
        # dim=0 is what both torch weight-norm APIs default to (and AudioCraft used).
        magnitude = tensor.flatten(1).norm(dim=1).reshape(-1, *[1] * (tensor.dim() - 1))
        if keys == "legacy":
            result[f"{prefix}.weight_g"] = magnitude.clone()
            result[f"{prefix}.weight_v"] = tensor.clone()
        else:
            result[f"{prefix}.parametrizations.weight.original0"] = magnitude.clone()
            result[f"{prefix}.parametrizations.weight.original1"] = tensor.clone()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out_dir", type=Path, help="Directory to write the two checkpoints to.")
    parser.add_argument(
        "--force", action="store_true", help="Rebuild even if OUT_DIR already holds both files."
    )
    args = parser.parse_args(argv)
    generator_path, detector_path = build_tiny_audioseal(args.out_dir, force=args.force)
    for path in (generator_path, detector_path):
        print(f"{path}: tiny AudioSeal checkpoint ({path.stat().st_size / 1e3:.0f} kB)")
    print(
        "set postprocess.watermark.generator_path / detector_path to these files "
        "(random weights: the serving path runs, detection scores mean nothing)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
