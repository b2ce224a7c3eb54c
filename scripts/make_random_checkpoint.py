"""Write a full-shape Pixtral-12B checkpoint with random weights (Mistral-native layout, BF16, ~25 GB), streamed
so this script itself needs little memory. For measuring the converter's memory and speed, and (converted) for
benchmarks against llama.cpp; no real weights are needed for either.

usage: .venv/bin/python scripts/make_random_checkpoint.py OUT_DIR [--layers N]
"""
import argparse
import json
import os
import shutil
import struct

import numpy as np

from common import tekken_path

TEXT = dict(dim=5120, n_layers=40, head_dim=128, hidden_dim=14336, n_heads=32, n_kv_heads=8, rope_theta=1e9,
            norm_eps=1e-5, vocab_size=131072)
VISION = dict(hidden_size=1024, num_channels=3, image_size=1024, patch_size=16, rope_theta=1e4, intermediate_size=4096,
              num_hidden_layers=24, num_attention_heads=16, image_token_id=10, image_break_token_id=12,
              image_end_token_id=13, adapter_bias=True)


def tensors(n_layers):
    d, hd, f, v = TEXT["dim"], TEXT["head_dim"], TEXT["hidden_dim"], TEXT["vocab_size"]
    q, kv = TEXT["n_heads"] * hd, TEXT["n_kv_heads"] * hd
    yield "tok_embeddings.weight", (v, d)
    for l in range(n_layers):
        p = f"layers.{l}."
        yield p + "attention_norm.weight", (d,)
        yield p + "attention.wq.weight", (q, d)
        yield p + "attention.wk.weight", (kv, d)
        yield p + "attention.wv.weight", (kv, d)
        yield p + "attention.wo.weight", (d, q)
        yield p + "ffn_norm.weight", (d,)
        yield p + "feed_forward.w1.weight", (f, d)
        yield p + "feed_forward.w2.weight", (d, f)
        yield p + "feed_forward.w3.weight", (f, d)
    yield "norm.weight", (d,)
    yield "output.weight", (v, d)
    vd, vf = VISION["hidden_size"], VISION["intermediate_size"]
    yield "vision_encoder.patch_conv.weight", (vd, 3, 16, 16)
    yield "vision_encoder.ln_pre.weight", (vd,)
    for l in range(VISION["num_hidden_layers"]):
        p = f"vision_encoder.transformer.layers.{l}."
        yield p + "attention_norm.weight", (vd,)
        for w in ["wq", "wk", "wv", "wo"]:
            yield p + f"attention.{w}.weight", (vd, vd)
        yield p + "ffn_norm.weight", (vd,)
        yield p + "feed_forward.w1.weight", (vf, vd)
        yield p + "feed_forward.w2.weight", (vd, vf)
        yield p + "feed_forward.w3.weight", (vf, vd)
    yield "vision_language_adapter.w_in.weight", (d, vd)
    yield "vision_language_adapter.w_in.bias", (d,)
    yield "vision_language_adapter.w_out.weight", (d, d)
    yield "vision_language_adapter.w_out.bias", (d,)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=TEXT["n_layers"])
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    specs = list(tensors(a.layers))
    header, off = {}, 0
    for name, shape in specs:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    # 64 MiB of random bf16 (normal * 0.02), reused cyclically: the values only need to be finite and varied
    rng = np.random.default_rng(0)
    block = (rng.standard_normal(32 << 20, dtype=np.float32) * 0.02).view(np.uint32)
    block = ((block + 0x7FFF + ((block >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
    path = os.path.join(a.out, "consolidated.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        left = off
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    params = dict(TEXT, n_layers=a.layers, vision_encoder=VISION)
    with open(os.path.join(a.out, "params.json"), "w") as f:
        json.dump(params, f, indent=1)
    shutil.copy(tekken_path(), os.path.join(a.out, "tekken.json"))
    print(f"wrote {path}: {off / 1e9:.2f} GB of weights, {len(specs)} tensors, {a.layers} text layers")


if __name__ == "__main__":
    main()
