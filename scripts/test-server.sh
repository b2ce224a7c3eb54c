#!/usr/bin/env bash
# The server's tests with real clients (scripts/test.sh runs it; so does CI): `pixtral serve` on the demo model,
# started and stopped by the tests, driven by the `openai` Python package, curl and httpx (tests/server/).
# Installs what it needs on first use: a venv in target/server-venv (openai, httpx, pytest, jsonschema from PyPI),
# and curl from Debian's packages when missing. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
VENV=$TARGET/server-venv
if ! command -v curl >/dev/null; then
    apt-get install -y -qq curl >/dev/null
fi
if [ ! -x "$VENV/bin/pytest" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "openai>=1.40,<3" "httpx>=0.27,<1" "pytest>=8,<10" "jsonschema>=4,<5"
fi
cargo build --release --bin pixtral
PIXTRAL_BIN="$(cd "$TARGET" && pwd)/release/pixtral" "$VENV/bin/pytest" -q -p no:cacheprovider tests/server "$@"
