"""Stage the Python packages `scripts/gpu_check.sh` needs on the lent GPU machine, which has
Python 3.12 + torch + transformers but no ray, diffusers, pydantic, demucs, audioseal, … and no
network: one var/gpu/site.tar.xz (about 45 MB, under the device tool's 64 MiB carry limit; the
raw Ray wheel alone is 79 MB).

    .venv/bin/python scripts/gpu_stage.py [--python-version 3.12] [--out var/gpu]

Run it HERE (it needs the package index). It downloads manylinux x86_64 wheels with
`pip download --no-deps --only-binary=:all:` — the versions installed in this venv where there
are any, so the GPU machine runs the same Ray/diffusers/demucs/audioseal as the tests — unpacks
them into one directory, removes the parts of Ray the check never imports (Java jars, the
dashboard's web build, RLlib, Tune, Train, LLM), and packs it with xz. Then carry it:
`run(command="bash scripts/gpu_check.sh", carry=["var/gpu"], timeout_s=540)`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRY_LIMIT = 64 * 2**20

# Packages the check imports (driver, Ray workers, Serve replica) that the GPU image lacks.
# The image's own list: /work/.library/device/KINDS.md ("Python packages already there").
PACKAGES = (
    "ray",
    "diffusers",
    "importlib-metadata",
    "omegaconf",
    "antlr4-python3-runtime",
    "demucs",
    "julius",
    "audioseal",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "fastapi",
    "starlette",
    "uvicorn",
    "python-multipart",
    "httptools",
    "websockets",
    "watchfiles",
    "python-dotenv",
    "rapidfuzz",
    "jsonschema",
    "jsonschema-specifications",
    "referencing",
    "rpds-py",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-prometheus",
    "opentelemetry-semantic-conventions",
    "opentelemetry-proto",
    "grpcio-reflection",
    "colorful",
    "aiohttp-cors",
    "opencensus",
    "opencensus-context",
    "google-api-core",
    "googleapis-common-protos",
    "proto-plus",
    "google-auth",
    "pyasn1",
    "pyasn1-modules",
    "smart-open",
    "cachetools",
    "rsa",
)
# Optional: not every version pulls these in; a failed download of one is not fatal.
OPTIONAL = {
    "antlr4-python3-runtime",
    "opentelemetry-proto",
    "cachetools",
    "rsa",
    "opencensus",
    "opencensus-context",
    "google-api-core",
    "proto-plus",
    "google-auth",
    "pyasn1",
    "pyasn1-modules",
}
RAY_UNUSED = (
    "ray/jars",
    "ray/dashboard/client/build",
    "ray/rllib",
    "ray/tune",
    "ray/train",
    "ray/llm",
)
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux1_x86_64"]


def _pin(name: str) -> str:
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's python3")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "gpu")
    options = parser.parse_args(argv)
    tag = "cp" + options.python_version.replace(".", "")

    work = Path(tempfile.mkdtemp(prefix="gpu-stage-"))
    wheels, site = work / "wheels", work / "site"
    site.mkdir(parents=True)
    base = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    base += ["--python-version", options.python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        base += ["--platform", platform]
    base += ["-d", str(wheels)]
    failed = []
    for name in PACKAGES:
        done = subprocess.run([*base, _pin(name)], capture_output=True, text=True)
        if done.returncode != 0:
            failed.append(name)
            print(f"  could not download {_pin(name)}: {done.stderr.strip().splitlines()[-1:]}")
    required_missing = [n for n in failed if n not in OPTIONAL]
    if required_missing:
        print(f"error: required wheels missing: {required_missing}", file=sys.stderr)
        return 1
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                target = archive.extract(info, site)
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    Path(target).chmod(mode)
    for unused in RAY_UNUSED:
        shutil.rmtree(site / unused, ignore_errors=True)
    for executable in (site / "ray" / "core").rglob("*"):
        if executable.is_file() and "/bin" not in str(executable):
            executable.chmod(executable.stat().st_mode | 0o111)
    (site / "PYTHON_TAG").write_text(tag + "\n")
    (site / "STAGED_WHEELS.txt").write_text(
        "\n".join(w.name for w in sorted(wheels.glob("*.whl"))) + "\n"
    )

    options.out.mkdir(parents=True, exist_ok=True)
    target = options.out / "site.tar.xz"
    partial = target.with_suffix(".partial")
    with tarfile.open(partial, "w:xz", preset=6) as archive:
        for path in sorted(site.iterdir()):
            archive.add(path, arcname=path.name)
    partial.replace(target)
    shutil.rmtree(work, ignore_errors=True)
    size = target.stat().st_size
    print(f"{target}: {size / 2**20:.1f} MiB ({len(list(PACKAGES)) - len(failed)} packages, {tag})")
    if size > CARRY_LIMIT - 4 * 2**20:
        print("error: too close to the 64 MiB carry limit", file=sys.stderr)
        return 1
    print('carry it: run(command="bash scripts/gpu_check.sh", carry=["var/gpu"], timeout_s=540)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
