#!/usr/bin/env bash
# Python side of the project (fixture generation and cross-checks only; `cargo test` never needs it):
# a venv under .venv with transformers + torch (CPU use; PyPI's torch pulls CUDA libraries, ~6 GB), the gguf
# package (block-format reference), mistral_common (tokenizer and image preprocessing reference).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch transformers safetensors numpy gguf mistral_common opencv-python-headless pillow
echo "ok: .venv ready"
