"""Cross-check `pixtral convert` output with independent readers.

1. The `gguf` Python package reads both files; every tensor is dequantized with `gguf.quants` and compared
   with the Mistral-layout source checkpoint (q/k need no un-permuting there), within the format's bound.
2. Where `llama-cpp-python` is installed, llama.cpp evaluates every text GGUF and its logits are compared with
   ours on the same file; its quantizer reproduces our Q8_0 bytes.

usage: .venv/bin/python scripts/check_gguf_py.py [--pixtral target/release/pixtral]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader
from gguf import quants
from safetensors.numpy import load_file

from common import FIXTURES

TEXT = {"attn_norm": "attention_norm", "attn_q": "attention.wq", "attn_k": "attention.wk", "attn_v": "attention.wv",
        "attn_output": "attention.wo", "ffn_norm": "ffn_norm", "ffn_gate": "feed_forward.w1", "ffn_up": "feed_forward.w3",
        "ffn_down": "feed_forward.w2"}
VISION = {"ln1": "attention_norm", "attn_q": "attention.wq", "attn_k": "attention.wk", "attn_v": "attention.wv",
          "attn_out": "attention.wo", "ln2": "ffn_norm", "ffn_gate": "feed_forward.w1", "ffn_up": "feed_forward.w3",
          "ffn_down": "feed_forward.w2"}
FIXED = {"token_embd.weight": "tok_embeddings.weight", "output_norm.weight": "norm.weight", "output.weight": "output.weight",
         "v.patch_embd.weight": "vision_encoder.patch_conv.weight", "v.pre_ln.weight": "vision_encoder.ln_pre.weight",
         "mm.1.weight": "vision_language_adapter.w_in.weight", "mm.1.bias": "vision_language_adapter.w_in.bias",
         "mm.2.weight": "vision_language_adapter.w_out.weight", "mm.2.bias": "vision_language_adapter.w_out.bias"}
# relative error bound per block, as in quant::roundtrip_bound (plus f16 subnormal slack)
REL = {"F32": 0.0, "F16": 1 / 2048, "BF16": 1 / 256, "Q8_0": 0.5 / 127 + 127 / 127 / 2048, "Q4_0": 1 / 8 + 8 / 8 / 2048}


def source_of(name, src):
    if name in FIXED:
        return src[FIXED[name]]
    if name == "v.token_embd.img_break":
        return src["tok_embeddings.weight"][12]
    p = name.split(".")
    if p[0] == "blk":
        return src[f"layers.{p[1]}.{TEXT[p[2]]}.weight"]
    return src[f"vision_encoder.transformer.layers.{p[2]}.{VISION[p[3]]}.weight"]


def check_file(path, src):
    r = GGUFReader(path)
    worst = 0.0
    for t in r.tensors:
        got = quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        want = source_of(t.name, src).astype(np.float32).reshape(-1)
        assert got.shape == want.shape, (t.name, got.shape, want.shape)
        blocks_w = want.reshape(-1, min(32, want.size))
        blocks_g = got.reshape(blocks_w.shape)
        amax = np.abs(blocks_w).max(axis=1, keepdims=True)
        err = np.abs(blocks_g - blocks_w)
        bound = amax * REL[t.tensor_type.name] * 1.000001 + 2.0 ** -24 * 128
        assert (err <= bound).all(), (t.name, t.tensor_type.name, float(err.max()))
        worst = max(worst, float((err / np.maximum(amax, 1e-30)).max()))
    print(f"ok {os.path.basename(path)}: {len(r.tensors)} tensors read by gguf-py, worst relative error {worst:.2e}")


LLAMA_EVAL = """
import sys, json, numpy as np, llama_cpp
path, ids = sys.argv[1], json.loads(sys.argv[2])
llm = llama_cpp.Llama(model_path=path, n_ctx=128, verbose=False, n_threads=1, logits_all=True)
llm.eval(ids)
np.save(sys.argv[3], np.array(llm.scores[:len(ids)], dtype=np.float32))
"""


def check_llama_cpp(d, pixtral):
    """llama.cpp loads and evaluates every output; its logits are compared with ours on the same file, and its own
    quantizer, run on our F16 file, must give our Q8_0 file's bytes. Each evaluation runs in a subprocess: the
    native llama-cpp-python 0.3.36 build segfaults evaluating Q4_0/Q8_0 on AVX-512/AMX CPUs (this workplace's); an
    AVX2-only build works: CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
    -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF" pip install llama-cpp-python."""
    try:
        import ctypes
        import llama_cpp
    except ImportError:
        print("skip: llama-cpp-python is not installed (pip install llama-cpp-python)")
        return
    for outtype in ["f32", "f16", "bf16", "q8_0", "q4_0"]:
        path = os.path.join(d, f"hf-{outtype}.gguf")
        ours, ids_path, theirs = (os.path.join(d, f"{outtype}.{x}") for x in ["ours.npy", "ids.json", "theirs.npy"])
        subprocess.run([pixtral, "logits", "-m", path, "-p", "Hi there", "--system", "Be brief.", "--kv-type", "f32",
                        "--out", ours, "--ids-out", ids_path], check=True, capture_output=True)
        with open(ids_path) as f:
            ids = f.read()
        r = subprocess.run([sys.executable, "-c", LLAMA_EVAL, path, ids, theirs], capture_output=True)
        if r.returncode != 0:
            print(f"FAIL llama.cpp {llama_cpp.__version__} could not evaluate hf-{outtype}.gguf (exit {r.returncode}); "
                  "on AVX-512/AMX CPUs use an AVX2-only build (see this function's doc)")
            continue
        a, b = np.load(ours), np.load(theirs)
        cos = ((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min()
        rel = np.abs(a - b).max() / np.abs(a).max()
        same_argmax = (a.argmax(1) == b.argmax(1)).all()
        # llama.cpp keeps an f16 KV cache (~5e-4), rounds activations to BF16 for BF16 weights (~4e-3) and to Q8_0
        # with SIMD rounding for Q8_0/Q4_0 (~1%)
        bound, min_cos = {"f32": (2e-3, 0.9999), "f16": (2e-3, 0.9999), "bf16": (1e-2, 0.9999)}.get(outtype, (3e-2, 0.9995))
        assert cos >= min_cos and same_argmax and rel <= bound, (outtype, rel, cos)
        print(f"ok llama.cpp {llama_cpp.__version__} on hf-{outtype}.gguf: logits vs ours max |Δ| {rel:.1e} of max, "
              f"min cosine {cos:.6f}, same argmax at all {len(a)} positions")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    theirs = os.path.join(d, "llama-cpp-q8_0.gguf")
    assert llama_cpp.llama_model_quantize(os.path.join(d, "hf-f16.gguf").encode(), theirs.encode(), ctypes.byref(params)) == 0
    a = {t.name: t for t in GGUFReader(theirs).tensors}
    b = {t.name: t for t in GGUFReader(os.path.join(d, "hf-q8_0.gguf")).tensors}
    n_q = 0
    for name, ta in a.items():
        tb = b[name]
        assert ta.tensor_type == tb.tensor_type, name
        assert ta.data.tobytes() == tb.data.tobytes(), f"{name}: our bytes differ from llama.cpp's quantizer"
        n_q += ta.tensor_type.name == "Q8_0"
    print(f"ok llama.cpp's quantizer on our F16 file gives our Q8_0 file's bytes ({n_q} Q8_0 tensors, {len(a)} in all)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pixtral", default="target/release/pixtral")
    a = ap.parse_args()
    src_dir = os.path.join(FIXTURES, "tiny", "mistral")
    src = {k: v.astype(np.float32) for k, v in load_file_bf16(os.path.join(src_dir, "consolidated.safetensors")).items()}
    with tempfile.TemporaryDirectory() as d:
        for layout in ["hf", "mistral"]:
            for outtype, vtype in [("f32", "f32"), ("f16", "f16"), ("bf16", "f16"), ("q8_0", "q8_0"), ("q4_0", "f16")]:
                out = os.path.join(d, f"{layout}-{outtype}.gguf")
                subprocess.run([a.pixtral, "convert", os.path.join(FIXTURES, "tiny", layout), "--outtype", outtype,
                                "--vision-type", vtype, "-o", out], check=True, capture_output=True)
                check_file(out, src)
                check_file(out.replace(".gguf", ".mmproj.gguf"), src)
        check_llama_cpp(d, a.pixtral)


def load_file_bf16(path):
    """safetensors.numpy cannot hold bf16: read the raw bits and widen them."""
    import json
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        assert v["dtype"] == "BF16"
        bits = np.frombuffer(data[s:e], dtype=np.uint16).astype(np.uint32) << 16
        out[k] = bits.view(np.float32).reshape(v["shape"])
    return out


if __name__ == "__main__":
    sys.exit(main())
