"""`sketch` — a procedural arranger so the cluster runs with no model weights.

It is not an AI model: it turns normalised tags and lyric sections into an arrangement (tempo, key,
mode, groove, chord progression per section, drums, bass, harmony and a lead line that follows the
lyric syllables) and synthesises it at 48 kHz stereo, deterministically for a seed.
"""

from __future__ import annotations

from pipeline.sketch.render import STEM_NAMES, SketchRender, render_sketch

SKETCH_VERSION = "1.0"  # bump whenever the rendered audio for the same inputs changes

__all__ = ["SKETCH_VERSION", "STEM_NAMES", "SketchRender", "render_sketch"]
