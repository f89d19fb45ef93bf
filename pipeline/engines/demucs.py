"""`DemucsSeparator`: htdemucs stems for songs of models that have no exact stems of their own.

The checkpoint is a Demucs model package (`.th`: a torch-saved dict `{klass, args, kwargs, state,
...}`, the format of the official `955717e8-8726e21a.th` htdemucs and of
`scripts/make_tiny_htdemucs.py`), loaded through Demucs' own `demucs.states.load_model`.
Separation is slow on a CPU (full-size htdemucs on 2 cores: a 180 s song in ~95 s, ~0.5× real
time, of which ~6 s is the first segment's warm-up): the StemSeparator deployment runs it as an
asynchronous, on-demand job, on a GPU in production.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.audio import checked_audio
from pipeline.devices import pick_torch_device
from pipeline.stems import RESIDUAL_STEM, complete_to_mix, from_model_rate, to_model_rate

if TYPE_CHECKING:
    from serve.config import StemsConfig

CHECKPOINT_SETTING = "postprocess.stems.demucs_checkpoint"
DEVICE_SETTING = "postprocess.stems.device"
FIX = (
    f"set {CHECKPOINT_SETTING} to an htdemucs .th file (e.g. 955717e8-8726e21a.th), "
    "or run scripts/make_tiny_htdemucs.py PATH for a tiny test model"
)


def pick_device(device: str) -> str:
    """The torch device for a `StemsConfig.device` value (see `pick_torch_device`)."""
    return pick_torch_device(device, DEVICE_SETTING)


def load_demucs_checkpoint(path: str | Path | None) -> Any:
    """The Demucs model in the package at `path`, in eval mode, on the CPU.

    Uses `demucs.states.load_model`, which unpickles the file (`torch.load(weights_only=False)`):
    only point it at checkpoints you trust. Raises ValueError naming the setting and the fix when
    `path` is unset, missing, or not a loadable Demucs package.
    """
    if path is None or not str(path).strip():
        raise ValueError(f"no Demucs checkpoint configured: {FIX}")
    checkpoint = Path(path)
    if not checkpoint.is_file():
        raise ValueError(f"Demucs checkpoint not found at {checkpoint}: {FIX}")

    import warnings

    from demucs.states import load_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # load_model's notes on dropped legacy kwargs
            model = load_model(checkpoint)
    except Exception as error:  # any unpickling, key or state-shape failure: one actionable error
        raise ValueError(
            f"{checkpoint} is not a loadable Demucs checkpoint "
            f"({type(error).__name__}: {error}): {FIX}"
        ) from error
    for attribute in ("sources", "samplerate", "audio_channels", "segment"):
        if not hasattr(model, attribute):
            raise ValueError(
                f"{checkpoint} holds a {type(model).__name__}, not a Demucs separation model: {FIX}"
            )
    if RESIDUAL_STEM not in model.sources:
        raise ValueError(
            f"{checkpoint} separates {list(model.sources)}, which lacks {RESIDUAL_STEM!r} "
            f"(the stem that completes the mix): {FIX}"
        )
    return model.eval()


class DemucsSeparator:
    """Splits a song into the checkpoint's sources (htdemucs: drums, bass, other, vocals).

    Loads the model in the constructor (raising ValueError for a bad checkpoint or device);
    `separate` runs one song at a time per instance (a lock: the model and its device memory
    are shared), from any thread.
    """

    def __init__(
        self,
        checkpoint: str | Path | None,
        *,
        device: str = "auto",
        shifts: int = 0,
        overlap: float = 0.25,
    ) -> None:
        """`shifts` = 0 is deterministic; each extra shift (a random time offset, averaged)
        costs one more pass and gains up to ~0.2 dB SDR. `overlap` is the cross-fade between
        the model's segments (7.8 s for the released htdemucs), as a fraction of a segment.
        """
        if shifts < 0:
            raise ValueError(f"shifts must be >= 0, got {shifts}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be within [0, 1), got {overlap}")
        self._device = pick_device(device)
        self._model = load_demucs_checkpoint(checkpoint).to(self._device)
        self._checkpoint = Path(checkpoint) if checkpoint is not None else None
        self._shifts = shifts
        self._overlap = overlap
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: StemsConfig) -> DemucsSeparator | None:
        """The separator `config` asks for, or None when `demucs_checkpoint` is unset (then only
        sketch songs have stems). Raises ValueError naming the setting when it is set but the
        checkpoint is missing or broken, or the device is unavailable."""
        if config.demucs_checkpoint is None:
            return None
        return cls(config.demucs_checkpoint, device=config.device)

    @property
    def name(self) -> str:
        """The architecture, as stems' credentials name it: "htdemucs" for HTDemucs."""
        return type(self._model).__name__.lower()

    @property
    def sources(self) -> tuple[str, ...]:
        """Stem names, in the model's order."""
        return tuple(self._model.sources)

    @property
    def model_sample_rate(self) -> int:
        return int(self._model.samplerate)

    @property
    def device(self) -> str:
        return self._device

    def check_health(self) -> None:
        """Touches the model's weights on its device (raises if the device or weights are gone).

        Not a forward pass: htdemucs always runs a whole segment, seconds of CPU per check.
        """
        import torch

        with self._lock, torch.no_grad():
            weight = next(self._model.parameters())
            if not bool(torch.isfinite(weight.sum()).item()):
                raise RuntimeError(f"Demucs weights from {self._checkpoint} are not finite")

    def separate(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Stems of `audio` `[channels, n]` (mono or stereo, any rate) keyed by `sources`.

        Each stem is float32 with the input's shape and `sample_rate`; they sum to `audio` within
        float32 rounding (what the model leaves unassigned is added to "other", see
        `pipeline.stems.complete_to_mix`). Input is resampled to the model's rate (44.1 kHz)
        and back; mono is separated as dual mono and the stems folded back to mono.
        `on_progress(done, total)` is called after each model segment. Raises ValueError for
        audio that breaks the `pipeline.audio` convention or a non-positive sample rate.
        """
        import torch
        from demucs.apply import apply_model

        audio = checked_audio(audio)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        n_samples = audio.shape[1]
        if n_samples == 0:
            return {name: np.zeros(audio.shape, dtype=np.float32) for name in self.sources}

        model_rate = self.model_sample_rate
        stereo = audio if audio.shape[0] == 2 else np.repeat(audio, 2, axis=0)
        mix = to_model_rate(stereo, sample_rate, model_rate)
        # As Demucs' own API does: scale the mix to unit variance (its training scale) and the
        # estimates back. (Its mean shift is left out: htdemucs re-centres its input itself, and
        # any DC the stems miss lands in the residual.)
        std = float(mix.mean(axis=0).std()) + 1e-8
        # With shifts, each pass sees up to half a second more (an upper bound: the last
        # report below always completes the count).
        padded = mix.shape[1] + (model_rate // 2 if self._shifts else 0)
        segments = _segment_count(padded, model_rate, float(self._model.segment), self._overlap)
        total = segments * max(1, self._shifts)
        done = 0

        def progress(state: dict[str, Any]) -> None:
            nonlocal done
            if on_progress is not None and state.get("state") == "end":
                done += 1
                on_progress(min(done, total), total)

        with self._lock, torch.inference_mode():
            estimates = apply_model(
                self._model,
                torch.from_numpy(mix / np.float32(std))[None],
                shifts=self._shifts,
                split=True,
                overlap=self._overlap,
                device=self._device,
                progress=False,
                callback=progress,
            )
        if on_progress is not None and done < total:
            on_progress(total, total)
        separated = estimates[0].cpu().numpy() * np.float32(std)  # [sources, 2, m]
        back = from_model_rate(separated, sample_rate, n_samples, model_rate)
        if audio.shape[0] == 1:
            back = back.mean(axis=1, keepdims=True)
        stems = {name: back[k] for k, name in enumerate(self.sources)}
        return complete_to_mix(stems, audio)


def _segment_count(length: int, model_rate: int, segment_s: float, overlap: float) -> int:
    """How many segments `apply_model(split=True)` runs for `length` samples (one pass)."""
    stride = int((1 - overlap) * int(model_rate * segment_s))
    return len(range(0, length, max(1, stride)))
