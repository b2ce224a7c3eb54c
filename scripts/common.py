"""Shared helpers of the fixture scripts: the venv check and paths."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def tekken_path(name="tekken_240911.json"):
    import mistral_common

    return os.path.join(os.path.dirname(mistral_common.__file__), "data", name)


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a, the digest the Rust tests recompute (no hashing crate needed there)."""
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def need_venv():
    if not sys.prefix.endswith(".venv"):
        print("run with the project venv: scripts/setup-venv.sh, then .venv/bin/python", file=sys.stderr)
