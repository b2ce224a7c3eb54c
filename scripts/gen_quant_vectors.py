"""Reference vectors for the block formats, from the `gguf` Python package (`gguf.quants`).

Writes tests/fixtures/quant/: input.f32 (n_blocks x 32 float32, little-endian) and, per type, the encoded
bytes (`<type>.bin`) and their decoding (`<type>.dequant.f32`). The Rust test checks quantize_ref and
dequantize_ref against them bit for bit.
"""
import json
import os

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

from common import FIXTURES

rng = np.random.default_rng(20241007)
blocks = []
blocks.append(np.zeros(32, np.float32))                          # zeros
blocks.append(-np.zeros(32, np.float32))                         # negative zeros (sign of d)
blocks.append(np.full(32, 65504.0, np.float32))                  # f16 max
b = np.full(32, -65504.0, np.float32); b[3] = 65504.0; blocks.append(b)   # ±max, tie on |max|
blocks.append(np.linspace(-1, 1, 32, dtype=np.float32))
blocks.append(np.arange(32, dtype=np.float32) - 16.5)             # x.5 steps: rounding ties
b = np.zeros(32, np.float32); b[0] = 127.0; b[1:] = np.arange(31) + 0.5; blocks.append(b)  # id = 1, .5 ties
blocks.append(rng.normal(0, 1e-8, 32).astype(np.float32))        # tiny: subnormal f16 scales
blocks.append(rng.normal(0, 1e-3, 32).astype(np.float32))
b = np.zeros(32, np.float32); b[17] = -3.0; blocks.append(b)     # single negative peak
b = np.zeros(32, np.float32); b[5] = 1e-30; blocks.append(b)     # d underflows to 0 in f16
blocks.append(rng.uniform(-1000, 1000, 32).astype(np.float32))
for scale in [1.0, 0.02, 30.0]:
    for _ in range(12):
        blocks.append(rng.normal(0, scale, 32).astype(np.float32))
blocks.append(rng.standard_normal(32).astype(np.float32))  # odd count: 49 blocks
x = np.stack(blocks).astype(np.float32)
assert len(x) % 2 == 1, len(x)

out = os.path.join(FIXTURES, "quant")
os.makedirs(out, exist_ok=True)
x.tofile(os.path.join(out, "input.f32"))
index = {"n_blocks": int(len(x)), "types": {}}
for name, qt in [("F16", T.F16), ("BF16", T.BF16), ("Q8_0", T.Q8_0), ("Q4_0", T.Q4_0),
                 ("Q4_1", T.Q4_1), ("Q5_0", T.Q5_0), ("Q5_1", T.Q5_1)]:
    enc = quants.quantize(x.reshape(-1), qt)
    enc = np.ascontiguousarray(enc).view(np.uint8).reshape(-1)
    dec = quants.dequantize(enc, qt).astype(np.float32).reshape(-1)
    enc.tofile(os.path.join(out, f"{name}.bin"))
    dec.tofile(os.path.join(out, f"{name}.dequant.f32"))
    index["types"][name] = {"bytes": int(enc.size)}

# Types the package can only decode (the K-quants, the IQ4 grid): random blocks, their f16 scale fields set to
# finite values of mixed sign and size (subnormal too), plus one block of raw random bytes (inf/NaN scales allowed)
# and one of 0xFF; `<type>.random.bin` and its decoding `<type>.random.dequant.f32`.
F16_FIELDS = {"Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ4_XS": [0],
              "IQ4_NL": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2]}
for name, fields in F16_FIELDS.items():
    qt = T[name]
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    nb = 24 * (256 // bs) if bs == 32 else 24
    raw = rng.integers(0, 256, (nb, ts), dtype=np.uint8)
    for i in range(nb - 2):
        for at in fields:
            v = np.float16(rng.choice([-1, 1]) * 2.0 ** rng.uniform(-26, 4))
            raw[i, at:at + 2] = np.frombuffer(v.tobytes(), np.uint8)
    raw[nb - 1, :] = 0xFF
    enc = raw.reshape(-1)
    dec = quants.dequantize(enc, qt).astype(np.float32).reshape(-1)
    enc.tofile(os.path.join(out, f"{name}.random.bin"))
    dec.tofile(os.path.join(out, f"{name}.random.dequant.f32"))
    index["types"][name + ".random"] = {"bytes": int(enc.size), "values": int(dec.size)}
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump(index, f, indent=1)
print("wrote", out, index)
