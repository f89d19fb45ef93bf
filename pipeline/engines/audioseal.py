"""`AudioSealWatermarker` — embeds and detects the AudioSeal watermark of delivered songs.

The resampling and delta arithmetic are pure (`pipeline.watermark`); this module loads AudioSeal's
published checkpoints (`facebook/audioseal` `generator_base.pth` / `detector_base.pth`, or the
tiny ones from `scripts/make_tiny_audioseal.py`, same format) and adapts the torch models to the
pipeline's 16 kHz protocols. torch and audioseal are imported only when a model is loaded.

Checkpoint format (what AudioSeal's `checkpoints.py` writes): `{"xp.cfg": {"seanet": ..., ...},
"model": state_dict}` with AudioCraft training names and weight-normalised convolutions.

The torch 2.13 shim (`_inference_state_dict`): AudioSeal 0.2 builds its SEANet from the vendored
Moshi modules, whose convolutions are `RawStreamingConv*` wrappers holding the real `nn.Conv1d` /
`nn.ConvTranspose1d` as `.inner_conv`. Both of its weight-norm paths call
`torch.nn.utils.weight_norm` on the *wrapper*, which has no `.weight`, so they raise
"'RawStreamingConv1d' object has no attribute 'weight'": `create_generator` with a card's
`norm: weight_norm`, and `AudioSeal.load_*`'s `load_state_dict` for any key its renaming regexes
miss (e.g. `convtr.convtr.parametrizations.weight.original0`, the names current torch writes).
The legacy-named keys do load there, but through the deprecated `torch.nn.utils.weight_norm`.
Inference never needs the reparametrisation, so we build the model plain (`parse_config` forces
`norm: none`, exactly as AudioSeal's loader does), fold each (g, v) pair into `w = g * v / |v|`
ourselves, move each tensor to the Moshi name (`…conv.conv.X` → `…conv.conv.inner_conv.X`) and
load strictly: a missing or misshapen tensor is an error, not a silently random layer. The
result equals what AudioSeal's own loader produces where that loader works (a unit test checks).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from serve.config import WatermarkConfig

GENERATOR_SETTING = "postprocess.watermark.generator_path"
DETECTOR_SETTING = "postprocess.watermark.detector_path"
_MESSAGE_EMBEDDING = "msg_processor.msg_processor.weight"
_DETECTOR_HEAD = "detector.1.weight"
_WEIGHT_NORM_PAIRS = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)


class AudioSealWatermarker:
    """Embeds (and, with a detector, detects) the AudioSeal watermark in `[channels, n]` audio.

    Thread-safe: the torch models are shared, calls are serialised by a lock (each call already
    uses every intra-op thread torch has).
    """

    def __init__(
        self, generator: Any, detector: Any | None = None, *, threshold: float = 0.5
    ) -> None:
        self._generator = _GeneratorAdapter(generator)
        self._detector = _DetectorAdapter(detector) if detector is not None else None
        self.threshold = threshold
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: WatermarkConfig) -> AudioSealWatermarker | None:
        """The watermarker `config` describes, or None when no generator is configured.

        Raises ValueError naming the setting when a configured checkpoint is missing or is not
        an AudioSeal checkpoint.
        """
        if not config.generator_path:
            return None
        generator = load_audioseal_generator(config.generator_path)
        detector = load_audioseal_detector(config.detector_path) if config.detector_path else None
        return cls(generator, detector, threshold=config.threshold)

    @property
    def message_bits(self) -> int:
        return self._generator.message_bits

    @property
    def can_detect(self) -> bool:
        return self._detector is not None

    def embed(
        self, audio: np.ndarray, sample_rate: int, message: np.ndarray | None = None
    ) -> np.ndarray:
        """`audio` `[channels, n]` at `sample_rate` with the watermark added (same shape, dtype)."""
        from pipeline.watermark import embed_watermark

        with self._lock:
            return embed_watermark(audio, sample_rate, self._generator, message)

    def detect(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """{"detected": score >= threshold, "score": in [0, 1], "message": list of bits}.

        Raises RuntimeError when no detector is configured.
        """
        from pipeline.watermark import detect_watermark, is_watermarked

        if self._detector is None:
            raise RuntimeError(f"no watermark detector: set {DETECTOR_SETTING}")
        with self._lock:
            score, bits = detect_watermark(audio, sample_rate, self._detector)
        return {
            "detected": is_watermarked(score, self.threshold),
            "score": score,
            "message": [int(bit) for bit in bits],
        }

    def check_health(self) -> None:
        """Runs the generator (and detector) on 0.1 s of silence; raises if either fails."""
        silence = np.zeros((1, 1_600), dtype=np.float32)
        self.embed(silence, 16_000)
        if self._detector is not None:
            self.detect(silence, 16_000)


def load_audioseal_generator(path: str) -> Any:
    """An eval-mode `audioseal.models.AudioSealWM` from an AudioSeal generator checkpoint."""
    from audioseal.builder import AudioSealWMConfig, create_generator

    checkpoint = _read_checkpoint(path, GENERATOR_SETTING)
    nbits = _message_bits(checkpoint, _MESSAGE_EMBEDDING, path, GENERATOR_SETTING, overhead=0)
    return _build(checkpoint, AudioSealWMConfig, create_generator, nbits, path, GENERATOR_SETTING)


def load_audioseal_detector(path: str) -> Any:
    """An eval-mode `audioseal.models.AudioSealDetector` from an AudioSeal detector checkpoint."""
    from audioseal.builder import AudioSealDetectorConfig, create_detector

    checkpoint = _read_checkpoint(path, DETECTOR_SETTING)
    nbits = _message_bits(checkpoint, _DETECTOR_HEAD, path, DETECTOR_SETTING, overhead=2)
    return _build(
        checkpoint, AudioSealDetectorConfig, create_detector, nbits, path, DETECTOR_SETTING
    )


class _GeneratorAdapter:
    """`pipeline.watermark.WatermarkGenerator` over an `AudioSealWM`."""

    def __init__(self, model: Any) -> None:
        self._model = model

    @property
    def message_bits(self) -> int:
        return int(self._model.msg_processor.nbits)

    def watermark_16k(self, audio_16k: np.ndarray, message: np.ndarray) -> np.ndarray:
        import torch

        # Channels are the batch: AudioSeal takes [batch, 1, n] and one message per batch item.
        batch = torch.from_numpy(np.ascontiguousarray(audio_16k, dtype=np.float32)).unsqueeze(1)
        bits = torch.as_tensor(message, dtype=torch.long).unsqueeze(0).repeat(batch.shape[0], 1)
        with torch.inference_mode(), _eager():
            watermark = self._model.get_watermark(batch, message=bits)
        return watermark.squeeze(1).numpy()


class _DetectorAdapter:
    """`pipeline.watermark.WatermarkDetector` over an `AudioSealDetector`."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def detect_16k(self, audio_16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(audio_16k, dtype=np.float32)).unsqueeze(1)
        with torch.inference_mode(), _eager():
            frame_probabilities, bit_probabilities = self._model(batch)
        # AudioSeal's own `detect_watermark` score: share of frames whose P(watermarked) > 0.5.
        scores = (frame_probabilities[:, 1, :] > 0.5).float().mean(dim=-1)
        return scores.numpy(), bit_probabilities.numpy()


def _eager() -> Any:
    """A context that runs AudioSeal's Moshi SEANet eagerly.

    Its encoder/decoder `forward`s are wrapped in a lazy `torch.compile`: the first call compiles
    for ~30 s on a CPU, every new input length recompiles until dynamo's limit, and song lengths
    all differ. Eager costs nothing to start and the convolutions dominate the run time anyway.
    """
    from audioseal.libs.moshi.utils.compile import no_compile

    return no_compile()


def _checkpoint_error(path: str, setting: str, problem: str) -> ValueError:
    return ValueError(
        f"AudioSeal checkpoint {problem} at {path}: set {setting} to an AudioSeal .pth file "
        f"(facebook/audioseal generator_base.pth / detector_base.pth), or run "
        f"scripts/make_tiny_audioseal.py DIR for a tiny test pair"
    )


def _read_checkpoint(path: str, setting: str) -> dict[str, Any]:
    from audioseal.loader import load_model_checkpoint

    if not Path(path).is_file():
        raise _checkpoint_error(path, setting, "not found")
    try:
        # AudioSeal's own reader: the published files pickle an omegaconf DictConfig, which
        # torch's weights-only loading refuses, so this unpickles fully. The path is operator
        # configuration, trusted like any other model file the service loads.
        checkpoint = load_model_checkpoint(path, device="cpu")
    except Exception as error:  # torch raises many kinds for a file that is not a checkpoint
        raise _checkpoint_error(path, setting, f"unreadable ({error})") from error
    if not isinstance(checkpoint, dict):
        raise _checkpoint_error(path, setting, "not a checkpoint dict")
    if "best_state" in checkpoint:  # an AudioCraft training checkpoint
        checkpoint = {**checkpoint, "model": checkpoint["best_state"]["model"]}
    if "xp.cfg" not in checkpoint or "model" not in checkpoint:
        raise _checkpoint_error(path, setting, "without the 'xp.cfg' and 'model' entries")
    return checkpoint


def _message_bits(
    checkpoint: dict[str, Any], key: str, path: str, setting: str, *, overhead: int
) -> int:
    # The published checkpoints carry no `nbits` (AudioSeal's cards supply it); the weights do:
    # the message embedding has 2 rows per bit, the detector head 2 detection rows + 1 per bit.
    state = checkpoint["model"]
    if key not in state:
        raise _checkpoint_error(path, setting, f"without {key!r} (wrong model kind?)")
    rows = int(state[key].shape[0])
    return rows // 2 if overhead == 0 else rows - overhead


def _build(
    checkpoint: dict[str, Any],
    config_type: Any,
    create: Any,
    nbits: int,
    path: str,
    setting: str,
) -> Any:
    from audioseal.loader import AudioSeal

    try:
        config = AudioSeal.parse_config(dict(checkpoint["xp.cfg"]), config_type, nbits=nbits)
        model = create(config)
        model.load_state_dict(_inference_state_dict(checkpoint["model"], model), strict=True)
    except Exception as error:  # config errors (omegaconf) and shape/key mismatches (torch)
        raise _checkpoint_error(path, setting, f"not loadable ({error})") from error
    return model.eval()


def _inference_state_dict(state: dict[str, Any], model: Any) -> dict[str, Any]:
    """`state` with weight norm folded in and tensors under the Moshi module names of `model`."""
    folded: dict[str, Any] = {}
    for key, tensor in state.items():
        pair = next(((g, v) for g, v in _WEIGHT_NORM_PAIRS if key.endswith(g)), None)
        if pair is not None:
            prefix = key[: -len(pair[0])]
            folded[f"{prefix}.weight"] = _fold_weight_norm(tensor, state[prefix + pair[1]])
        elif not key.endswith(tuple(v for _, v in _WEIGHT_NORM_PAIRS)):
            folded[key] = tensor
    # AudioCraft-era checkpoints call the embedding `msg_processor.0`; AudioSeal renames it too.
    if "msg_processor.msg_processor.0.weight" in folded:
        folded[_MESSAGE_EMBEDDING] = folded.pop("msg_processor.msg_processor.0.weight")
    expected = set(model.state_dict())
    renamed = {}
    for key, tensor in folded.items():
        module, _, leaf = key.rpartition(".")
        moshi_key = f"{module}.inner_conv.{leaf}"
        renamed[moshi_key if key not in expected and moshi_key in expected else key] = tensor
    return renamed


def _fold_weight_norm(magnitude: Any, direction: Any) -> Any:
    # w = g * v / ||v||, the norm taken over the dims where g has size 1 (dim 0 kept by default).
    import torch

    dims = [d for d in range(direction.dim()) if magnitude.shape[d] == 1]
    norm = torch.linalg.vector_norm(direction, dim=dims, keepdim=True)
    return magnitude * direction / norm
