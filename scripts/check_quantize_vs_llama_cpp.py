"""`pixtral quantize` against llama.cpp's `llama_model_quantize` (llama-cpp-python) on every mix both write: the
tiny model widened to K-sized rows (tests/fixtures/llama-cpp-quants/tinyk-BF16.gguf) and the 64-wide tiny model
(tests/fixtures/tiny/llama-cpp/text-f32.gguf, where the K mixes fall back per tensor), and a copy of the first
with the quantizers' edge cases in its rows (zeros, sub-epsilon, constant, outliers, ±1 …). The files must be equal
byte for byte. The committed fixtures cover Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, IQ4_XS, Q4_1, Q5_0, Q5_1, IQ4_NL in
`cargo test`; this script checks every mix.

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
          "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30}
SOURCES = [os.path.join(FIXTURES, "llama-cpp-quants", "tinyk-BF16.gguf"),
           os.path.join(FIXTURES, "tiny", "llama-cpp", "text-f32.gguf")]


def hostile_copy(src, dst):
    """`src` with every 2-d tensor's rows overwritten by the quantizers' edge cases, one pattern per row in turn:
    zeros, values below ggml's GROUP_MAX_EPS, a constant, one outlier among zeros, ±1 alternating, all negative,
    1e4-scale, sub-blocks of 32 zeroed every other one, and plain Gaussian rows."""
    import shutil
    import numpy as np
    from gguf import GGUFReader, GGMLQuantizationType as T
    shutil.copy(src, dst)
    rng = np.random.default_rng(7)
    r = GGUFReader(dst, "r+")
    for t in r.tensors:
        if len(t.shape) < 2 or t.tensor_type not in (T.F32, T.BF16):
            continue
        cols = int(t.shape[0])
        rows = int(np.prod(t.shape[1:]))
        x = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
        for i in range(rows):
            k = i % 9
            if k == 0: x[i] = 0
            elif k == 1: x[i] = rng.standard_normal(cols) * 1e-17
            elif k == 2: x[i] = 0.5
            elif k == 3: x[i] = 0; x[i, rng.integers(cols)] = 1e3
            elif k == 4: x[i] = np.where(np.arange(cols) % 2 == 0, 1.0, -1.0)
            elif k == 5: x[i] = -np.abs(x[i])
            elif k == 6: x[i] *= 2e5
            elif k == 7: x[i].reshape(-1, 32)[::2] = 0
        if t.tensor_type == T.F32:
            t.data.reshape(rows, cols)[:] = x
        else:  # BF16 as uint16 bits (round to nearest even)
            b = x.view(np.uint32)
            b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
            t.data.reshape(rows, 2 * cols).view(np.uint16)[:] = b  # (the reader shows BF16 as bytes)
    del r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pixtral", default="target/release/pixtral")
    a = ap.parse_args()
    import llama_cpp
    failed = 0
    with tempfile.TemporaryDirectory() as d:
        hostile = os.path.join(d, "hostile-BF16.gguf")
        hostile_copy(SOURCES[0], hostile)
        for src in SOURCES + [hostile]:
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
