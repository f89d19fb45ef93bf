"""ACE-Step 1.5 / XL behind the `SongModel` interface, through `diffusers.AceStepPipeline`.

The pipeline is the DiT half of ACE-Step (text + lyric conditioning → latents → Oobleck VAE →
48 kHz stereo); the 5 Hz planner LM is not part of it. LoRAs are PEFT adapters on the
transformer's attention projections, loaded by id and switched per render group.

How a `render` call maps onto pipeline calls (measured on the tiny checkpoint of
`scripts/make_tiny_acestep.py`, 2-core CPU shared with other work, 8 steps, best of 7):

- Requests of different songs share a call when they share what the pipeline takes as ONE value
  per call: LoRA (id, scale) and duration. Caption, lyrics, language, bpm and key are per row:
  the pipeline is `BucketedAceStepPipeline`, which formats each row's prompt with its own
  metadata.
- Padding buckets: the DiT's cross-attention runs WITHOUT a mask over the padded text and lyric
  sequence (as in ACE-Step's own handler, which pads a batch to its longest row), so padding is
  part of the conditioning: padded "to the longest row", a request renders differently next to a
  longer caption (relative RMS difference 1.9 % on the tiny model). Each row is therefore padded
  to its own bucket — its token count rounded up to `ace_step.text_pad_multiple` /
  `lyrics_pad_multiple` — and only rows of the same buckets share a call. A request renders the
  same audio alone or next to any batch mates (up to float rounding of batched kernels, max |Δ|
  ~1e-6 on CPU), whatever their text.
- Mixed durations: one call per duration, not one call at the longest duration trimmed.
  Measured for 4 requests of 10, 10, 20 and 30 s: grouped (3 calls) 1.32 s, longest + trim
  (1 call) 3.92 s — trimming renders 120 s of audio for 70 s wanted, and the VAE decode and
  attention grow with length. Grouping is also the only correct choice: the duration is part of
  the conditioning ("- duration: N seconds" in the prompt, and the latent length the DiT
  attends over), so the first 10 s of a 30 s render is a different song from a 10 s render
  (relative RMS difference 9 %), and a request's audio would depend on its batch mates.
- On CPU the Oobleck VAE decode is most of a call (84 % at batch 1 on the tiny model) and gets
  slower per song when batched (memory-bound over B × 480k samples per 10 s), so CPU pools batch
  the DiT steps and decode one song at a time; accelerator pools decode the batch at once.
  Figures and the profile: docs/benchmarks.md ("Decoder pool").
- Seeds: one CPU `torch.Generator` per request. CPU generators draw the same initial noise on
  every device, so a seed means the same starting point on a CUDA pool and on a Mac pool.

LoRA state is guarded by one lock: between calls the transformer always runs as the base model
(LoRA layers disabled); a LoRA group enables exactly its adapter at its scale and restores the
base state afterwards, even when the render fails.

Edits and reference audio (`RenderRequest.edit`, `reference_audio`; the decoder fills in the
arrays, 48 kHz stereo). The pipeline takes source and reference audio as ONE value per call, so
such a request always has a call of its own:

- repaint: `task_type="repaint"` over the source, window [start_s, end_s);
- extend: the pipeline has no extend task: the source padded with silence to the new length
  (`pipeline.editing.fitted_source`) is repainted from the source's end on (what ACE-Step's own
  code does);
- cover: `task_type="cover"` over the source at `audio_cover_strength = edit.strength`; needs the
  checkpoint's `audio_tokenizer` / `audio_token_detokenizer` (the base/SFT checkpoints carry them,
  the turbo ones do not);
- reference audio, with any task: the pipeline's `reference_audio` (timbre conditioning).

The pipeline re-renders the whole song (and peak-normalises it), so a repaint or extension is
brought to the source's level and spliced back into it (`pipeline.editing.splice_edit`): outside
the window the output is the source's samples, exactly. Source and reference audio are
VAE-encoded by sampling the posterior; the samples are drawn from the request's seed (a CPU
generator, like the initial noise), so an edit is as deterministic as a text2music render.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.devices import pick_torch_device
from pipeline.editing import fitted_source, splice_edit
from pipeline.lyrics import format_lyrics
from pipeline.semantic_tags import ace_step_metadata
from pipeline.song_contracts import COVER, SONG_MODELS

from .ace_step_edits import (
    COVER_MODULES,
    ENCODE_STREAM,
    AudioInputs,
    audio_inputs,
    takes_audio,
)
from .ace_step_lora import (
    LORA_WEIGHT_NAME,
    MAX_LORA_RANK,
    adapter_name,
    linear_targets,
    validate_lora_file,
)
from .ace_step_pipeline import bucketed_pipeline_class

if TYPE_CHECKING:
    from pipeline.progress import ProgressCallback
    from pipeline.song_models import RenderRequest
    from serve.config import AceStepConfig, DecoderPoolConfig

SAMPLE_RATE = 48_000
INSTRUMENTAL_LYRICS = "[Instrumental]"  # ACE-Step's own marker for a song without vocals
_REQUIRED_COMPONENTS = (
    "vae",
    "text_encoder",
    "tokenizer",
    "transformer",
    "condition_encoder",
    "scheduler",
)


@dataclass(frozen=True)
class _GroupKey:
    """What requests must share to be rendered by one pipeline call (see the module docstring)."""

    lora_id: str | None
    lora_scale: float
    duration_s: float
    text_tokens: int  # the padded length (bucket) of the formatted caption + metadata
    lyric_tokens: int  # the padded length (bucket) of the formatted lyrics
    solo: int | None = None
    """The request's index in the batch when it takes audio (an edit, a reference): a call of
    its own. None for text2music requests without reference audio."""


def _lyrics_text(request: RenderRequest) -> str:
    if request.instrumental:
        return INSTRUMENTAL_LYRICS
    return format_lyrics(request.sections)


def _checkpoint_error(path: str, pool_name: str, problem: str) -> ValueError:
    return ValueError(
        f"ACE-Step checkpoint {problem} at {path}: set models.pools[{pool_name}].ace_step.path to "
        f"a diffusers-format directory (model_index.json plus vae/, text_encoder/, tokenizer/, "
        f"transformer/, condition_encoder/, scheduler/), or run "
        f"scripts/make_tiny_acestep.py {path} for a tiny test model"
    )


def _looks_like_hub_id(path: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path) is not None


def _pick_dtype(setting: str, device: str) -> Any:
    import torch

    if setting == "auto":
        return {"cuda": torch.bfloat16, "mps": torch.float16}.get(device, torch.float32)
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return dtypes[setting]


class AceStepSongModel:
    """ACE-Step through diffusers' AceStepPipeline, with per-request LoRAs.

    Thread-safe: renders, LoRA loads and unloads serialise on one lock; `check_health` does not
    wait for it.
    """

    name = "ace-step"
    capabilities = SONG_MODELS["ace-step"]  # LoRAs: `load_lora`
    sample_rate = SAMPLE_RATE

    def __init__(self, pool: DecoderPoolConfig) -> None:
        """Load the checkpoint of `pool.ace_step` onto its device.

        Raises ValueError naming the path and the setting to fix when the checkpoint is missing
        or malformed, or when the configured device is not available.
        """
        import torch

        if pool.ace_step is None:
            raise ValueError(
                f"models.pools[{pool.name}]: model ace-step needs `ace_step: {{path: DIR}}`"
            )
        self._config: AceStepConfig = pool.ace_step
        self.device = pick_torch_device(
            self._config.device, f"models.pools[{pool.name}].ace_step.device"
        )
        self.dtype = _pick_dtype(self._config.dtype, self.device)

        location = str(Path(self._config.path).expanduser())
        local = Path(location)
        if local.exists():
            if not (local / "model_index.json").is_file():
                raise _checkpoint_error(location, pool.name, "has no model_index.json")
        elif not _looks_like_hub_id(self._config.path):
            raise _checkpoint_error(location, pool.name, "not found")
        try:
            pipeline = bucketed_pipeline_class().from_pretrained(location, dtype=self.dtype)
        # Any loader failure (missing file, bad config, shape mismatch) is a broken checkpoint.
        except Exception as exc:
            raise _checkpoint_error(
                location, pool.name, f"could not be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        missing = [c for c in _REQUIRED_COMPONENTS if getattr(pipeline, c, None) is None]
        if missing:
            raise _checkpoint_error(location, pool.name, f"lacks components {missing}")
        no_cover = [m for m in COVER_MODULES if getattr(pipeline, m, None) is None]
        if COVER in pool.served_tasks and no_cover:
            # Said at start-up, not per song: the API would accept covers this pool cannot make.
            raise ValueError(
                f"models.pools[{pool.name}].tasks: the checkpoint at {location} has no "
                f"{' or '.join(no_cover)} (turbo checkpoints do not), so it cannot cover: set "
                f"`tasks: [text2music, extend, repaint]` on this pool and serve covers from a "
                "pool of a base/SFT checkpoint"
            )
        pipeline.to(self.device)
        pipeline.set_progress_bar_config(disable=True)
        pipeline.text_pad_multiple = self._config.text_pad_multiple
        pipeline.lyrics_pad_multiple = self._config.lyrics_pad_multiple
        self._pipeline = pipeline
        self._location = location
        self._torch = torch
        self._lock = threading.Lock()
        self._loras: dict[str, Path] = {}

        model_version = pipeline.transformer.config.get("model_version") or (
            "turbo" if pipeline.is_turbo else "base"
        )
        self.version = f"{local.name or location}:{model_version}"
        # Batched VAE decodes are slower per song on CPU (see the module docstring).
        self._decode_one_at_a_time = self.device == "cpu"
        # Turbo checkpoints have guidance distilled in; the pipeline warns on any scale > 1.
        self._guidance_scale: float | None = 1.0 if pipeline.is_turbo else None

    # ----------------------------------------------------------------------------------------
    # Rendering

    def render(
        self, requests: list[RenderRequest], on_progress: ProgressCallback
    ) -> list[np.ndarray]:
        """Render every request; float32 `[2, round(duration_s * 48000)]` arrays in request
        order. One pipeline call per group of requests with the same conditioning and LoRA (see
        the module docstring); progress runs 1..(groups × num_inference_steps) across the calls.

        Edits and requests with reference audio render in calls of their own (see the module
        docstring): an extension is `[2, round(duration_s * 48000)]` starting with the source's
        samples; a repaint is the source's samples outside its window.

        Raises, before any rendering: KeyError for a LoRA id that is not loaded; ValueError for
        a non-positive or non-finite duration, an edit without its `source_audio` (or a
        `reference_key` without its `reference_audio`), malformed audio or edit parameters, and
        a cover asked of a checkpoint without the audio tokenizer.
        """
        if not requests:
            return []
        for request in requests:
            if not (math.isfinite(request.duration_s) and request.duration_s > 0):
                raise ValueError(
                    f"job {request.job_id} variation {request.variation}: duration_s must be a "
                    f"positive number of seconds, got {request.duration_s!r}"
                )
        audio_inputs = [self._checked_audio_inputs(request) for request in requests]
        steps = self._config.num_inference_steps
        outputs: list[np.ndarray | None] = [None] * len(requests)
        with self._lock:
            # Grouping tokenizes: the tokenizer is shared state, used under the lock only.
            groups = self._groups(requests)
            total_steps = steps * len(groups)
            for request in requests:
                if request.lora_id is not None and request.lora_id not in self._loras:
                    raise KeyError(self._unknown_lora_message(request.lora_id))
            try:
                for group_index, (key, indices) in enumerate(groups.items()):
                    self._activate(key)
                    inputs = None if key.solo is None else audio_inputs[key.solo]
                    audio = self._call_pipeline(
                        key,
                        [requests[i] for i in indices],
                        on_progress,
                        steps_before=group_index * steps,
                        total_steps=total_steps,
                        audio_inputs=inputs,
                    )
                    samples = round(key.duration_s * self.sample_rate)
                    for row, index in enumerate(indices):
                        outputs[index] = self._finished(self._to_numpy(audio[row], samples), inputs)
            finally:
                self._restore_base()
        return [output for output in outputs if output is not None]

    def _checked_audio_inputs(self, request: RenderRequest) -> AudioInputs | None:
        inputs = audio_inputs(request, self.sample_rate)
        label = f"job {request.job_id} variation {request.variation}"
        if request.reference_key is not None and request.reference_audio is None:
            raise ValueError(
                f"{label}: the reference audio {request.reference_key!r} was not loaded "
                "(reference_audio is None)"
            )
        if inputs is not None and inputs.task_type == COVER:
            missing = [m for m in COVER_MODULES if getattr(self._pipeline, m, None) is None]
            if missing:
                raise ValueError(
                    f"{label}: a cover needs the ACE-Step checkpoint's {' and '.join(missing)} "
                    f"(AceStepAudioTokenizer / AceStepAudioTokenDetokenizer), which the "
                    f"checkpoint at {self._location} lacks: serve covers from a checkpoint that "
                    "carries them (the base/SFT diffusers checkpoints do, the turbo ones do not)"
                )
        return inputs

    def _finished(self, rendered: np.ndarray, inputs: AudioInputs | None) -> np.ndarray:
        """A repaint or extension spliced into its source; anything else as rendered."""
        if inputs is None or inputs.window is None or inputs.source is None:
            return rendered
        start, end = inputs.window
        return splice_edit(inputs.source, rendered, start, end, self.sample_rate)

    def model_calls(self, requests: list[RenderRequest]) -> list[list[int]]:
        """How `render` splits `requests` into pipeline calls: request indices per call, in
        call order."""
        with self._lock:
            return list(self._groups(requests).values())

    def _groups(self, requests: list[RenderRequest]) -> dict[_GroupKey, list[int]]:
        groups: dict[_GroupKey, list[int]] = {}
        for index, request in enumerate(requests):
            key = self._group_key(request)
            if takes_audio(request):
                # Source and reference audio are one value per pipeline call: such a request
                # renders alone (its index makes its key unique).
                key = replace(key, solo=index)
            groups.setdefault(key, []).append(index)
        return groups

    def _group_key(self, request: RenderRequest) -> _GroupKey:
        # Scale 0 is the base model: rendered with LoRAs disabled, batched with base requests.
        uses_lora = request.lora_id is not None and request.lora_scale != 0.0
        metadata = ace_step_metadata(request.tags)
        (text,), (lyric,) = self._pipeline.format_rows(
            [request.tags.caption],
            [_lyrics_text(request)],
            [request.language],
            request.duration_s,
            None,
            metadata["bpm"],
            metadata["keyscale"],
            metadata["timesignature"],
        )
        text_tokens, lyric_tokens = self._pipeline.padded_lengths(text, lyric)
        return _GroupKey(
            lora_id=request.lora_id if uses_lora else None,
            lora_scale=float(request.lora_scale) if uses_lora else 0.0,
            duration_s=float(request.duration_s),
            text_tokens=text_tokens,
            lyric_tokens=lyric_tokens,
        )

    def _call_pipeline(
        self,
        key: _GroupKey,
        requests: list[RenderRequest],
        on_progress: ProgressCallback,
        *,
        steps_before: int,
        total_steps: int,
        audio_inputs: AudioInputs | None = None,
    ) -> Any:
        torch = self._torch
        # CPU generators: the same seed gives the same initial noise on every device.
        generators = [torch.Generator("cpu").manual_seed(int(r.seed)) for r in requests]

        def step_end(_pipe: Any, step_index: int, _timestep: Any, _tensors: dict) -> dict:
            on_progress(steps_before + step_index + 1, total_steps)
            return {}

        extra: dict[str, Any] = {}
        if self._guidance_scale is not None:
            extra["guidance_scale"] = self._guidance_scale
        if audio_inputs is not None:
            extra.update(self._audio_arguments(audio_inputs))
            # Such a call has one request: its seed draws the VAE posterior samples too, from a
            # stream apart from its initial noise's.
            self._pipeline.encode_generator = torch.Generator("cpu").manual_seed(
                int(requests[0].seed) ^ ENCODE_STREAM
            )
        try:
            output = self._run_pipeline(key, requests, generators, step_end, extra)
        finally:
            self._pipeline.encode_generator = None
        if not self._decode_one_at_a_time:
            return output
        return [self._decode_latents(output[row : row + 1])[0] for row in range(len(requests))]

    def _audio_arguments(self, inputs: AudioInputs) -> dict[str, Any]:
        """The pipeline arguments of an edit or a reference (see the module docstring)."""
        torch = self._torch

        def tensor(array: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

        arguments: dict[str, Any] = {"task_type": inputs.task_type}
        if inputs.reference is not None:
            arguments["reference_audio"] = tensor(inputs.reference)
        if inputs.source is not None:
            arguments["src_audio"] = tensor(fitted_source(inputs.source, inputs.samples))
        if inputs.task_type == COVER:
            arguments["audio_cover_strength"] = inputs.cover_strength
        if inputs.window is not None:
            start, end = inputs.window
            arguments["repainting_start"] = start / self.sample_rate
            # -1: to the end (an extension), where the window's end is the song's.
            arguments["repainting_end"] = -1 if end >= inputs.samples else end / self.sample_rate
        return arguments

    def _run_pipeline(
        self,
        key: _GroupKey,
        requests: list[RenderRequest],
        generators: list[Any],
        step_end: Callable[..., dict],
        extra: dict[str, Any],
    ) -> Any:
        metadata = [ace_step_metadata(r.tags) for r in requests]
        return self._pipeline(
            prompt=[r.tags.caption for r in requests],
            lyrics=[_lyrics_text(r) for r in requests],
            vocal_language=[r.language for r in requests],
            audio_duration=key.duration_s,
            bpm=[m["bpm"] for m in metadata],
            keyscale=[m["keyscale"] for m in metadata],
            # One value per call: 4/4 for every song (ace_step_metadata's default).
            timesignature=metadata[0]["timesignature"],
            num_inference_steps=self._config.num_inference_steps,
            shift=self._config.shift,
            generator=generators,
            output_type="latent" if self._decode_one_at_a_time else "pt",
            callback_on_step_end=step_end,
            **extra,
        ).audios

    def _decode_latents(self, latents: Any) -> Any:
        """Latents `[B, T, C]` → audio `[B, 2, n]` exactly as AceStepPipeline post-processes
        them (diffusers 0.42: VAE decode, then per-song peak normalisation to -1 dBFS); a test
        pins this against the pipeline's own output."""
        torch = self._torch
        audio = self._pipeline.vae.decode(latents.transpose(1, 2)).sample.float()
        peak = audio.abs().amax(dim=[1, 2], keepdim=True)
        if torch.any(peak > 1.0):
            audio = audio / peak.clamp(min=1.0)
        peak = audio.abs().amax(dim=[1, 2], keepdim=True).clamp(min=1e-6)
        return audio * (10.0 ** (-1.0 / 20.0) / peak)

    def _to_numpy(self, audio: Any, samples: int) -> np.ndarray:
        """[2, n] float32 of exactly `samples`: the latent grid (1920 samples per frame) rounds
        the pipeline's length up, so the tail is cut (or, defensively, zero-padded)."""
        array = audio.detach().to("cpu", dtype=self._torch.float32).numpy()
        if array.shape[-1] >= samples:
            return np.ascontiguousarray(array[:, :samples])
        return np.pad(array, ((0, 0), (0, samples - array.shape[-1])))

    # ----------------------------------------------------------------------------------------
    # LoRA adapters (PEFT through diffusers). Invariant: outside the lock, LoRA layers are off.

    def load_lora(self, lora_id: str, weights_path: Path, *, max_rank: int = MAX_LORA_RANK) -> None:
        """Load a LoRA (a `pytorch_lora_weights.safetensors` file, or a directory holding one)
        as adapter `lora_id`; loading an id again replaces it. The file is validated first
        (`validate_lora_file` against this transformer): ValueError if it is refused.
        Loading does not change what base requests render."""
        path = Path(weights_path)
        if path.is_dir():
            path = path / LORA_WEIGHT_NAME
        with self._lock:
            validate_lora_file(
                path,
                max_rank=max_rank,
                expected_modules=linear_targets(self._pipeline.transformer),
            )
            if lora_id in self._loras:
                self._delete_adapter(lora_id)
            try:
                self._pipeline.load_lora_weights(
                    str(path.parent), weight_name=path.name, adapter_name=adapter_name(lora_id)
                )
            except Exception:
                self._remove_untracked_adapters()
                raise
            finally:
                self._restore_base()
            self._loras[lora_id] = path

    def unload_lora(self, lora_id: str) -> None:
        """Remove adapter `lora_id` and free its weights; a no-op for an id that is not loaded
        (eviction may race with a failed load)."""
        with self._lock:
            if lora_id not in self._loras:
                return
            self._delete_adapter(lora_id)
            self._restore_base()

    def loaded_loras(self) -> list[str]:
        """Ids of the loaded LoRAs, in load order."""
        return list(self._loras)

    def lora_target_modules(self) -> dict[str, tuple[int, int]]:
        """{module: (in_features, out_features)} a LoRA for this model may adapt; pass it to
        `validate_lora_file`."""
        return linear_targets(self._pipeline.transformer)

    def _unknown_lora_message(self, lora_id: str) -> str:
        # Not the loaded ones: they are refs of other owners' LoRAs, and this message can reach
        # a song's error.
        return f"LoRA {lora_id!r} is not loaded on this replica ({len(self._loras)} are)"

    def _adapter_names(self) -> list[str]:
        return list(self._pipeline.get_list_adapters().get("transformer", []))

    def _delete_adapter(self, lora_id: str) -> None:
        self._pipeline.delete_adapters([adapter_name(lora_id)])
        self._loras.pop(lora_id, None)

    def _remove_untracked_adapters(self) -> None:
        # A load that failed half-way must not leave its adapter in the transformer.
        tracked = {adapter_name(lora_id) for lora_id in self._loras}
        stray = [name for name in self._adapter_names() if name not in tracked]
        if stray:
            self._pipeline.delete_adapters(stray)

    def _activate(self, key: _GroupKey) -> None:
        if key.lora_id is None:
            self._restore_base()
            return
        # disable_lora() sets a flag set_adapters() does not clear: enable first.
        self._pipeline.enable_lora()
        self._pipeline.set_adapters([adapter_name(key.lora_id)], [key.lora_scale])

    def _restore_base(self) -> None:
        if self._adapter_names():
            self._pipeline.disable_lora()

    # ----------------------------------------------------------------------------------------

    def check_health(self) -> None:
        """Raise if the device is lost or the weights are corrupt: one small op on the
        transformer's device (synchronising it) and a finiteness check of one weight."""
        torch = self._torch
        transformer = self._pipeline.transformer
        parameter = transformer.scale_shift_table
        probe = torch.ones(4, device=parameter.device, dtype=parameter.dtype).sum()
        if float(probe.item()) != 4.0:
            raise RuntimeError(f"ACE-Step device {parameter.device} computes wrong results")
        if not bool(torch.isfinite(parameter).all().item()):
            raise RuntimeError("ACE-Step transformer weights are not finite")
