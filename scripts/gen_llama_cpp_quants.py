"""Community-style GGUFs made by llama.cpp itself, and llama.cpp's logits on them (no Python at test time).

Writes tests/fixtures/llama-cpp-quants/:
  tinyk-<MIX>.gguf      the trained tiny checkpoint zero-padded to K-sized rows (text width 256, FFN 256; see
                        tinyk_checkpoint), converted by llama.cpp's convert_hf_to_gguf.py and quantized by
                        llama.cpp (`llama_model_quantize`, no importance matrix) into the mixes users download: Q2_K,
                        Q3_K_M, Q4_K_M, Q5_K_M, IQ4_XS (between them every K type: Q6_K is their output.weight)
  tinyk-BF16.gguf       the converted checkpoint itself (BF16 holds its bf16 weights exactly): the input of the mixes
                        above, and of `pixtral quantize` in the tests, which must give their bytes
  tinyk-mmproj-f32.gguf its vision tower (the tiny model's widths), by the same converter's --mmproj mode
  tiny-<MIX>.gguf       the committed 64-wide tiny model (tests/fixtures/tiny/llama-cpp/text-f32.gguf) quantized to
                        Q4_1, Q5_0, Q5_1, IQ4_NL (and Q4_K_M, whose rows are not whole super-blocks, so llama.cpp
                        falls back per tensor to Q5_0 / Q8_0 / IQ4_NL as its mixes do on such shapes)
  <file>.json           {"ids": the prompt, "greedy": 12 greedy ids after it, "types": {tensor type: count}}
  <file>.logits.f32     llama.cpp's logits at the prompt's first and last 2 positions, [3, vocab] little-endian f32
  tiny-F32.*            the same for tests/fixtures/tiny/llama-cpp/text-f32.gguf (the float path alone)

LLAMA_CPP_DIR: a llama.cpp source tree with convert_hf_to_gguf.py (the llama-cpp-python sdist vendors one);
llama_cpp (llama-cpp-python) must be importable. On AVX-512/AMX machines build it without AMX (README).
"""
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

import numpy as np

from common import FIXTURES, ROOT

OUT = os.path.join(FIXTURES, "llama-cpp-quants")
TINY = os.path.join(FIXTURES, "tiny")
# LLAMA_FTYPE_MOSTLY_* (llama.h)
FTYPES = {"Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14,
          "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30}
K_MIXES = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "IQ4_XS"]
SMALL_MIXES = ["Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "Q4_K_M"]


def tinyk_checkpoint(d):
    """The trained tiny checkpoint (tests/fixtures/tiny/hf) widened to K-sized rows: text width 64 → 256 and FFN
    96 → 256 by zero padding, so that it computes the same function (it answers in words, with peaked logits) while
    its matrices have whole 256-weight rows. The padded lanes of the residual stream stay zero; RMSNorm then divides
    by sqrt(Σx²/256) instead of sqrt(Σx²/64), half as much, so its weights are halved (exact but for eps).
    Heads keep head_dim 32 (RoPE's frequencies): q/k/v rows are 256 wide, attn_output's 128 (llama.cpp's mixes fall
    back to a 32-block type there, as they do on such shapes). The vision tower keeps its widths; the projector's
    output and hidden widths are padded to 256."""
    import torch
    from safetensors.torch import load_file, save_file

    for f in ["tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "generation_config.json"]:
        shutil.copy(os.path.join(TINY, "hf", f), d)
    with open(os.path.join(TINY, "hf", "config.json")) as f:
        cfg = json.load(f)
    w, ffn = 256, 256
    w0, ffn0 = cfg["text_config"]["hidden_size"], cfg["text_config"]["intermediate_size"]
    cfg["text_config"].update(hidden_size=w, intermediate_size=ffn)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)

    def pad(t, shape):
        out = torch.zeros(shape, dtype=torch.float32)
        out[tuple(slice(0, n) for n in t.shape)] = t.float()
        return out

    sd = {}
    for k, t in load_file(os.path.join(TINY, "hf", "model.safetensors")).items():
        if k.startswith("language_model."):
            if t.ndim == 1:  # RMSNorm weights
                t = pad(t.float() * 0.5, (w,))
            elif "embed_tokens" in k or "lm_head" in k:
                t = pad(t, (t.shape[0], w))
            elif "q_proj" in k or "k_proj" in k or "v_proj" in k:
                t = pad(t, (t.shape[0], w))
            elif "o_proj" in k:
                t = pad(t, (w, t.shape[1]))
            elif "gate_proj" in k or "up_proj" in k:
                t = pad(t, (ffn, w))
            elif "down_proj" in k:
                t = pad(t, (w, ffn))
            else:
                raise SystemExit(f"unexpected text tensor {k}")
            assert w0 <= w and ffn0 <= ffn
        elif k.startswith("multi_modal_projector.linear_1"):  # vision width → text width (Pixtral's shape)
            t = pad(t, (w,) + tuple(t.shape[1:]))
        elif k.startswith("multi_modal_projector.linear_2"):  # text width → text width; GELU(0) = 0 in between
            t = pad(t, (w,) * t.ndim)
        sd[k] = t.float().contiguous()
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})


def convert(llama_cpp_dir, src, out, mmproj=False, outtype="f32"):
    # as scripts/gen_text_reference.py: llama.cpp identifies the pre-tokenizer by a hash the tiny vocabulary does
    # not match (it is Tekken), and its mmproj name map covers range(block_count) only
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[1:]; "
            "import gguf; _m = gguf.get_tensor_name_map; gguf.get_tensor_name_map = lambda a, n: _m(a, max(n, 8)); "
            "import convert_hf_to_gguf as c; from conversion.base import TextModel; "
            "TextModel.get_vocab_base_pre = lambda self, tokenizer: 'tekken'; c.main()")
    env = {**os.environ, "PYTHONPATH": os.path.join(llama_cpp_dir, "gguf-py")}
    args = [sys.executable, "-c", code, llama_cpp_dir, src, "--outtype", outtype, "--outfile", out]
    r = subprocess.run(args + (["--mmproj"] if mmproj else []), env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"llama.cpp's converter failed on {src}:\n{r.stderr[-3000:]}")


def quantize(src, dst, mix):
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[mix]
    params.nthread = 2
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)) == 0, (src, mix)


EVAL = """
import sys, json, numpy as np, llama_cpp
path, ids, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
llm = llama_cpp.Llama(model_path=path, n_ctx=128, verbose=False, n_threads=2, logits_all=True)
llm.eval(ids)
logits = np.array(llm.scores[:len(ids)], dtype=np.float32)
greedy = []
for _ in range(12):
    t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    greedy.append(t)
    llm.eval([t])
logits[[0, -2, -1]].astype("<f4").tofile(out + ".logits.f32")
print(json.dumps({"greedy": greedy}))
"""


def reference(path, ids, out=None):
    from gguf import GGUFReader
    out = out or path.removesuffix(".gguf")
    r = subprocess.run([sys.executable, "-c", EVAL, path, json.dumps(ids), out], check=True, capture_output=True,
                       text=True)
    ref = json.loads(r.stdout)
    types = Counter(t.tensor_type.name for t in GGUFReader(path).tensors)
    with open(out + ".json", "w") as f:
        json.dump({"ids": ids, "greedy": ref["greedy"], "types": dict(sorted(types.items()))}, f)
    print(os.path.basename(path), os.path.getsize(path), dict(types), "greedy", ref["greedy"])


def main():
    llama_cpp_dir = os.environ.get("LLAMA_CPP_DIR", os.path.join(ROOT, "scratch", "llama.cpp"))
    if not os.path.isfile(os.path.join(llama_cpp_dir, "convert_hf_to_gguf.py")):
        sys.exit(f"no convert_hf_to_gguf.py in {llama_cpp_dir}: set LLAMA_CPP_DIR to a llama.cpp source tree")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(TINY, "text", "chat_one.json")) as f:
        ids = json.load(f)["ids"]
    with tempfile.TemporaryDirectory() as d:
        ck = os.path.join(d, "hf")
        os.makedirs(ck)
        tinyk_checkpoint(ck)
        # BF16 holds the padded bf16 checkpoint exactly: the input of the quantization tests (ours vs these files)
        f32 = os.path.join(OUT, "tinyk-BF16.gguf")
        convert(llama_cpp_dir, ck, f32, outtype="bf16")
        convert(llama_cpp_dir, ck, os.path.join(OUT, "tinyk-mmproj-f32.gguf"), mmproj=True)
        for mix in K_MIXES:
            out = os.path.join(OUT, f"tinyk-{mix}.gguf")
            quantize(f32, out, mix)
            reference(out, ids)
    reference(os.path.join(TINY, "llama-cpp", "text-f32.gguf"), ids, os.path.join(OUT, "tiny-F32"))
    for mix in SMALL_MIXES:
        out = os.path.join(OUT, f"tiny-{mix}.gguf")
        quantize(os.path.join(TINY, "llama-cpp", "text-f32.gguf"), out, mix)
        reference(out, ids)


if __name__ == "__main__":
    main()
