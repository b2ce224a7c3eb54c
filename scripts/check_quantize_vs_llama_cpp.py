"""`pixtral quantize` against llama.cpp's `llama_model_quantize` (llama-cpp-python) on every mix both write: the
tiny model widened to K-sized rows (tests/fixtures/llama-cpp-quants/tinyk-BF16.gguf) and the 64-wide tiny model
(tests/fixtures/tiny/llama-cpp/text-f32.gguf, where the K mixes fall back per tensor). The files must be equal
byte for byte. The committed fixtures cover Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q4_1, Q5_0, Q5_1 in `cargo test`; this
script checks every mix.

usage: .venv/bin/python scripts/check_quantize_vs_llama_cpp.py [--pixtral target/release/pixtral]
"""
import argparse
import ctypes
import filecmp
import os
import subprocess
import sys
import tempfile

from common import FIXTURES

FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12,
          "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18}
SOURCES = [os.path.join(FIXTURES, "llama-cpp-quants", "tinyk-BF16.gguf"),
           os.path.join(FIXTURES, "tiny", "llama-cpp", "text-f32.gguf")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pixtral", default="target/release/pixtral")
    a = ap.parse_args()
    import llama_cpp
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        for src in SOURCES:
            for mix, ftype in FTYPES.items():
                theirs, ours = os.path.join(d, f"theirs-{mix}.gguf"), os.path.join(d, f"ours-{mix}.gguf")
                p = llama_cpp.llama_model_quantize_default_params()
                p.ftype, p.nthread = ftype, 2
                assert llama_cpp.llama_model_quantize(src.encode(), theirs.encode(), ctypes.byref(p)) == 0
                subprocess.run([a.pixtral, "quantize", src, ours, mix, "--force"], check=True, capture_output=True)
                same = filecmp.cmp(ours, theirs, shallow=False)
                failed += not same
                print(f"{'ok  ' if same else 'FAIL'} {os.path.basename(src)} {mix}: "
                      f"{'identical' if same else 'differs'} ({os.path.getsize(ours)} bytes)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
