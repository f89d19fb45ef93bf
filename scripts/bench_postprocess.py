"""Post-processing benchmark: the real-time factor of every stage on one long stereo song.

Runs each stage the PostProcessor runs, on this machine, on a `--seconds` (default 180) stereo
48 kHz `sketch` song: loudness + limiter, AudioSeal watermark (its published 16-bit architecture
built from the card config with random weights — compute does not depend on weight values), each
encoder, C2PA signing of each format (a development chain), HLS packaging from the m4a, waveform
peaks, and for stems on demand: the exact stems of a sketch song (rendered again, mastered with
the song's gain curve) and Demucs htdemucs (its default architecture, random weights). Each stem
is then delivered like a song: four times the encode and sign rows of the formats served.

    python scripts/bench_postprocess.py [--seconds 180] [--threads 1] [--skip-demucs]

Prints a markdown table for docs/benchmarks.md: seconds per stage and speed as "× real time"
(song seconds per second of work). The default chain is what the default config runs for every
variation: loudness, m4a, HLS, signing the m4a, peaks, and keeping the master (24-bit FLAC) that
the lazy formats are made from (no watermark: the default config has no AudioSeal weights). The
"lazy" rows are what a first request of mp3, flac or wav costs later, once per variation:
decoding the master, encoding, signing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_CHAIN = (
    "loudness",
    "encode m4a",
    "hls (from the m4a)",
    "sign m4a",
    "peaks",
    "master (24-bit flac, kept)",
)


def _timed(label: str, rows: list[tuple[str, float]], work: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = work()
    rows.append((label, time.perf_counter() - started))
    return result


def _audioseal_generator() -> Any:
    """AudioSeal's published 16-bit generator architecture, random weights, eager (no compile)."""
    from audioseal.builder import AudioSealWMConfig, create_generator
    from audioseal.loader import AudioSeal, load_local_model_config
    from omegaconf import OmegaConf

    card: Any = OmegaConf.to_container(load_local_model_config("audioseal_wm_16bits"))
    card.pop("checkpoint", None)
    # parse_config sets `norm: none`, as AudioSeal's own loader does (weight_norm fails on 2.13).
    return create_generator(AudioSeal.parse_config(card, AudioSealWMConfig)).eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (replicas: 1)")
    parser.add_argument("--skip-demucs", action="store_true")
    options = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    import torch

    from deployments.post_processor import DeliveryChain, deliver_from_master, master_info
    from pipeline.encode import encode_audio
    from pipeline.engines.audioseal import AudioSealWatermarker
    from pipeline.hls import hls_from_m4a
    from pipeline.loudness import normalize_loudness
    from pipeline.peaks import peaks_document
    from pipeline.provenance import SongCredentials, prompt_sha256, sign_audio
    from pipeline.sketch import render_sketch
    from pipeline.tags import normalize_style
    from serve.certs import write_dev_chain
    from serve.config import C2paConfig, PostProcessConfig

    torch.set_num_threads(options.threads)
    sample_rate = 48_000
    style = normalize_style("indie pop, upbeat")
    song = render_sketch(style, [], options.seconds, 7, instrumental=True).mix
    rows: list[tuple[str, float]] = []

    mastered = _timed(
        "loudness",
        rows,
        lambda: normalize_loudness(song, sample_rate, target_lufs=-14.0, ceiling_dbtp=-1.0),
    )
    watermarker = AudioSealWatermarker(_audioseal_generator())
    audio = _timed("watermark", rows, lambda: watermarker.embed(mastered.audio, sample_rate))
    files = {
        fmt: _timed(f"encode {fmt}", rows, lambda fmt=fmt: encode_audio(audio, sample_rate, fmt))
        for fmt in ("m4a", "mp3", "flac", "wav")
    }
    _timed(  # postprocess.aac_coder: fast (not in the default chain)
        "encode m4a, aac_coder fast",
        rows,
        lambda: encode_audio(audio, sample_rate, "m4a", aac_coder="fast"),
    )
    certs = Path(tempfile.mkdtemp(prefix="bench-c2pa-"))
    signer = C2paConfig(cert_path=str(certs / "chain.pem"), key_path=str(certs / "signer.key"))
    write_dev_chain(signer.cert_path, signer.key_path)
    credentials = SongCredentials(
        title="bench",
        model_id="sketch",
        model_version="bench",
        seed=7,
        prompt_sha256=prompt_sha256("indie pop, upbeat"),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        loudness_lufs=-14.0,
        songserve_version="bench",
    )
    for fmt, data in files.items():
        _timed(f"sign {fmt}", rows, lambda fmt=fmt, data=data: sign_audio(
            data, fmt, credentials, signer))  # type: ignore[arg-type]  # fmt: skip
    _timed("hls (from the m4a)", rows, lambda: hls_from_m4a(files["m4a"]))
    _timed("peaks", rows, lambda: peaks_document(audio, sample_rate, 480))
    master = _timed(
        "master (24-bit flac, kept)", rows, lambda: encode_audio(audio, sample_rate, "flac")
    )
    delivery = DeliveryChain(
        PostProcessConfig(c2pa=signer, formats=["m4a", "mp3", "flac", "wav"]), watermark=False
    )
    info = master_info(sample_rate, credentials)
    for fmt in ("mp3", "flac", "wav"):
        _timed(f"lazy {fmt} (decode master, encode, sign)", rows, lambda fmt=fmt: (
            deliver_from_master(delivery, master, info, fmt)))  # type: ignore[arg-type]  # fmt: skip

    def exact_stems() -> Any:
        # What StemMaker does for a sketch song before delivery: render again, master, split.
        import numpy as np

        from pipeline.stems import sketch_stems

        render = render_sketch(style, [], options.seconds, 7, instrumental=True)
        gain = normalize_loudness(render.mix, sample_rate, target_lufs=-14.0).gain
        return {
            name: np.multiply(stem, gain, dtype=np.float32)
            for name, stem in sketch_stems(render, instrumental=True).items()
        }

    _timed("sketch stems, exact (render again, master, split)", rows, exact_stems)
    if not options.skip_demucs:
        from demucs.apply import apply_model
        from demucs.htdemucs import HTDemucs

        from pipeline.stems import from_model_rate, to_model_rate

        model = HTDemucs(sources=["drums", "bass", "other", "vocals"]).eval()

        def separate() -> Any:
            mix = torch.from_numpy(to_model_rate(audio, sample_rate))[None]
            with torch.no_grad():
                stems = apply_model(model, mix, shifts=0, split=True, overlap=0.25)[0].numpy()
            return from_model_rate(stems, sample_rate, audio.shape[-1])

        _timed("demucs htdemucs (stems, on demand)", rows, separate)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"# bench_postprocess — {datetime.now(UTC):%Y-%m-%d} — {machine}")
    print(f"{options.seconds:g} s stereo 48 kHz song, torch threads {options.threads}\n")
    print("| stage | seconds | × real time |\n|---|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {options.seconds / seconds:,.0f} |")
    chain = sum(seconds for label, seconds in rows if label in DEFAULT_CHAIN)
    print(
        f"| **default chain** ({', '.join(DEFAULT_CHAIN)}) | **{chain:.2f}** | "
        f"**{options.seconds / chain:,.1f}** |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
