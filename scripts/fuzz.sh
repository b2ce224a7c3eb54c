#!/usr/bin/env bash
# Fuzz one target of fuzz/ (cargo-fuzz, nightly) for SECONDS, then minimise its corpus in place.
#   scripts/fuzz.sh gguf_parse 600
# Targets: gguf_parse model_load safetensors_source image_preprocess tokenizer_roundtrip.
# Crashers land in fuzz/artifacts/TARGET/; copy each into fuzz/corpus/TARGET/ (a regression case that
# `cargo test --test fuzz_corpus` replays on stable) once fixed.
# Needs: rustup nightly (`rustup toolchain install nightly`) and `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target=${1:?target}
secs=${2:-600}
# inputs up to 1 MB: the seed model files are a few hundred KB
max_len=$((1 << 20))
cargo +nightly fuzz run -O "$target" "corpus/$target" -- \
  -max_total_time="$secs" -max_len=$max_len -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
cargo +nightly fuzz cmin -O "$target" "corpus/$target" -- -max_len=$max_len -rss_limit_mb=2048
