#!/usr/bin/env bash
# Wheels the GPU machine lacks (it has torch, transformers, peft, lightning, torchmetrics, pillow, numpy,
# pyyaml, sentence-transformers, matplotlib, tqdm, but no package registry): run here, where a registry is
# reachable; the folder travels with the working tree (`carry`) and is installed there with
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl
# fit/test need the first five; `dentvlm serve` (LitServe) the rest. For the machine's Python 3.12.
set -euo pipefail
out=${1:-.whl}
mkdir -p "$out"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --dest "$out" webdataset braceexpand jsonargparse docstring-parser typeshed-client \
    litserve fastapi starlette uvicorn pyzmq annotated-doc h11 click
du -sh "$out"
