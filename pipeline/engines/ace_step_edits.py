"""What an ACE-Step edit or reference request gives the pipeline: the source and reference audio
checked and laid out as `AceStepPipeline` takes them (see pipeline/engines/ace_step.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.editing import window_samples
from pipeline.song_contracts import COVER, EXTEND, REPAINT, TEXT2MUSIC

if TYPE_CHECKING:
    from pipeline.song_models import RenderRequest

COVER_MODULES = ("audio_tokenizer", "audio_token_detokenizer")
ENCODE_STREAM = 1 << 62  # seed ^ this: the generator of an edit's VAE posterior samples


@dataclass(frozen=True)
class AudioInputs:
    """What an edit or a reference request adds to its pipeline call, and how its output is
    finished (see the module docstring)."""

    task_type: str  # the pipeline's task
    samples: int  # the output's length
    source: np.ndarray | None = None  # [2, n]: the source as given
    window: tuple[int, int] | None = None  # [start, end) made anew; None: no splice (cover)
    cover_strength: float = 1.0
    reference: np.ndarray | None = None  # [2, n]


def takes_audio(request: RenderRequest) -> bool:
    """Whether `request` gives the pipeline source or reference audio (an edit, a timbre
    reference)."""
    return (
        request.edit is not None
        or request.reference_key is not None
        or request.reference_audio is not None
    )


def _audio_array(audio: Any, what: str, label: str) -> np.ndarray:
    array = np.asarray(audio, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != 2 or array.shape[1] == 0:
        raise ValueError(
            f"{label}: {what} must be a float32 [2, n] array (48 kHz stereo), got shape "
            f"{array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{label}: {what} holds NaN or infinite samples")
    return array


def audio_inputs(request: RenderRequest, sample_rate: int) -> AudioInputs | None:
    """The audio inputs of `request`, validated; None for a plain text2music request.

    Raises ValueError for an unknown task, a missing or malformed source or reference array, an
    extension that does not lengthen the source, an empty repaint window or a cover strength
    outside [0, 1].
    """
    label = f"job {request.job_id} variation {request.variation}"
    reference = (
        None
        if request.reference_audio is None
        else _audio_array(request.reference_audio, "reference_audio", label)
    )
    edit = request.edit
    samples = round(request.duration_s * sample_rate)
    if edit is None:
        if reference is None:
            return None
        return AudioInputs(task_type=TEXT2MUSIC, samples=samples, reference=reference)
    if edit.task not in (EXTEND, REPAINT, COVER):
        raise ValueError(f"{label}: ACE-Step cannot {edit.task!r} a song")
    if request.source_audio is None:
        raise ValueError(
            f"{label}: a {edit.task} needs the source audio (source_audio), which the decoder "
            f"loads from {edit.source_key!r} before rendering"
        )
    source = _audio_array(request.source_audio, "source_audio", label)
    if edit.task == EXTEND:
        start = source.shape[-1]
        if samples <= start:
            raise ValueError(
                f"{label}: an extension's duration_s ({request.duration_s} s) must exceed the "
                f"source's length ({start / sample_rate:.3f} s)"
            )
        window = (start, samples)
    elif edit.task == REPAINT:
        window = window_samples(edit.start_s, edit.end_s, sample_rate, samples)
        if window[0] >= window[1]:
            raise ValueError(
                f"{label}: the repaint window [{edit.start_s}, {edit.end_s}) s is empty within "
                f"the song's {request.duration_s} s"
            )
    else:
        if not 0.0 <= edit.strength <= 1.0:
            raise ValueError(f"{label}: cover strength must be in [0, 1], got {edit.strength}")
        window = None
    return AudioInputs(
        task_type=COVER if edit.task == COVER else REPAINT,
        samples=samples,
        source=source,
        window=window,
        cover_strength=float(edit.strength) if edit.task == COVER else 1.0,
        reference=reference,
    )
