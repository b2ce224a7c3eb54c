#!/usr/bin/env bash
# The project's test command (README, .ci/run): format, lints, every test of the workspace, then the server's tests
# with real clients (scripts/test-server.sh: Python 3 and pip access to PyPI for the openai package, on first use).
# The fixtures under tests/fixtures are committed (scripts/gen_*.py regenerate them).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
scripts/test-server.sh
