#!/usr/bin/env bash
# gpu_check.sh — the GPU check of issue 11 item 9 (scripts/gpu_check.py does the work):
# the ACE-Step DiT pool through Serve vs the raw pipeline (XL shapes, random weights, bf16,
# 60/180 s songs, batch 1/4/8), AudioSeal and htdemucs on CUDA for a 180 s song, and the vLLM
# test; one Markdown table on stdout and in $OUT/gpu_check.md. Budget: 450 s of an 8-minute slot.
#
#   bash scripts/gpu_check.sh            # on the GPU machine (CUDA, full shapes)
#   bash scripts/gpu_check.sh --smoke    # anywhere: CPU, toy shapes, 2/4 s songs, batch 1/2
#   extra arguments go to gpu_check.py: --budget-s N, --out FILE, --workdir DIR
#
# ON THE LENT GPU MACHINE (device tool). What travels there is the git working tree plus the
# ignored paths named in `carry`, 64 MiB in all. The .venv (2.5 GB, Python 3.11, CPU torch)
# cannot travel and would not run there. That machine's python3 is Python 3.12 with
# torch 2.11 (CUDA 13), transformers, peft, safetensors, tokenizers, pytest, numpy and scipy
# (/work/.library/device/KINDS.md), but NOT ray, diffusers, pydantic, fastapi, demucs,
# audioseal, omegaconf or vllm, and it cannot reach any package index. So:
#
#   1. HERE, once (needs the package index; ~2 min, most of it xz):
#        .venv/bin/python scripts/gpu_stage.py
#      It downloads the cp312 manylinux wheels of the missing packages (the versions in .venv),
#      unpacks them, drops the parts of Ray this check never loads (Java jars, dashboard web
#      build, RLlib/Tune/Train/LLM), and packs them into var/gpu/site.tar.xz (about 45 MB; the
#      raw Ray wheel alone is 79 MB, over the carry limit). var/ is git-ignored.
#   2. One device call (run), e.g.
#        command: "bash scripts/gpu_check.sh"
#        carry:   ["var/gpu"]
#        timeout_s: 540
#      The wrapper unpacks var/gpu/site.tar.xz to /tmp/songserve-gpu-site, puts it on
#      PYTHONPATH (for Ray's workers too) and runs python3 scripts/gpu_check.py. The table comes
#      back as $OUT/gpu_check.md, the whole log as $OUT/gpu_check.log. Call give_back after.
#
# vLLM cannot travel (its wheel and CUDA libraries are hundreds of MB), so on that machine the
# vLLM row reports the test's own skip ("vLLM is not installed"). Without var/gpu/site.tar.xz
# every part that needs a missing package says which packages in its rows instead of running.
# Nothing is installed from the network on the GPU machine; nothing outside /tmp is written
# (the XL checkpoint, ~9 GB, goes to a temporary directory and is deleted at the end).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=""
# A venv counts when it has torch (found without importing it: importing torch takes seconds).
if [ -x .venv/bin/python ] && .venv/bin/python -c \
    "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)" >/dev/null 2>&1; then
    PY=.venv/bin/python
elif command -v python3 >/dev/null 2>&1; then
    PY=python3
else
    echo "gpu_check: no Python found (.venv/bin/python or python3)" >&2
    exit 2
fi

SITE_TAR=var/gpu/site.tar.xz
if [ "$PY" = python3 ]; then
    if [ -f "$SITE_TAR" ]; then
        SITE=/tmp/songserve-gpu-site
        STAMP=$(stat -c %s-%Y "$SITE_TAR")
        if [ "$(cat "$SITE/.stamp" 2>/dev/null)" != "$STAMP" ]; then
            rm -rf "$SITE" && mkdir -p "$SITE"
            started=$(date +%s)
            tar -xJf "$SITE_TAR" -C "$SITE" || { echo "gpu_check: cannot unpack $SITE_TAR" >&2; exit 2; }
            echo "$STAMP" >"$SITE/.stamp"
            echo "gpu_check: unpacked $SITE_TAR to $SITE in $(( $(date +%s) - started )) s"
        fi
        want=$(cat "$SITE/PYTHON_TAG" 2>/dev/null || echo "?")
        have=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
        if [ "$want" != "$have" ]; then
            echo "gpu_check: WARNING: $SITE_TAR was staged for $want, this python3 is $have;" \
                 "rerun scripts/gpu_stage.py --python-version with this machine's version" >&2
        fi
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: no $SITE_TAR: parts needing ray/diffusers/demucs/audioseal will be" \
             "reported as skipped. Stage it here with '.venv/bin/python scripts/gpu_stage.py'" \
             "and pass carry: [\"var/gpu\"] to the device run." >&2
    fi
fi

export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
if [ -n "${OUT:-}" ]; then
    "$PY" scripts/gpu_check.py "$@" 2>&1 | tee "$OUT/gpu_check.log"
else
    "$PY" scripts/gpu_check.py "$@"
fi
