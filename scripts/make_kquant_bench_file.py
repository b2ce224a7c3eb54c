"""A 12B-shape benchmark file in a llama.cpp K-quant mix, fast: every tensor gets the type llama.cpp's
`llama_tensor_get_type` gives it for the mix (Q4_K_M: Q6_K for output.weight and for attn_v / ffn_down of the
layers `use_more_bits` picks, Q4_K elsewhere; Q6_K: Q6_K everywhere), filled with random blocks (finite f16 scales).

Quantizing the 12B checkpoint with llama.cpp itself takes over two hours on this machine's 2 cores; kernel speed
does not depend on the weights' values, and both runtimes read this same file, so the comparison is unchanged.

usage: .venv/bin/python scripts/make_kquant_bench_file.py IN.gguf OUT.gguf Q4_K_M|Q6_K
(IN: any full-shape text GGUF, e.g. `pixtral convert` of scripts/make_random_checkpoint.py's output)
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGML_QUANT_SIZES, GGUFReader, GGUFValueType, GGUFWriter

# byte offsets of the f16 scale fields in a block (kquants.rs)
F16_FIELDS = {T.Q4_K: [0, 2], T.Q6_K: [208], T.Q5_0: [0], T.Q8_0: [0], T.F32: []}


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def mix_type(mix, name, n_layers):
    if name.endswith("norm.weight"):
        return T.F32
    if mix == "Q6_K" or name == "output.weight":
        return T.Q6_K
    if ".attn_v." in name or ".ffn_down." in name:
        i = int(name.split(".")[1])
        return T.Q6_K if use_more_bits(i, n_layers) else T.Q4_K
    return T.Q4_K


def random_blocks(ty, n_elems, rng):
    bs, ts = GGML_QUANT_SIZES[ty]
    nb = n_elems // bs
    if ty == T.F32:
        return np.ones(n_elems, np.float32)
    raw = np.frombuffer(rng.bytes(nb * ts), np.uint8).reshape(nb, ts).copy()
    for at in F16_FIELDS[ty]:
        d = (rng.random(nb, dtype=np.float32) * 1e-3 + 1e-4).astype(np.float16)
        raw[:, at:at + 2] = d.view(np.uint8).reshape(nb, 2)
    return raw.reshape(-1)


def main():
    src, dst, mix = sys.argv[1], sys.argv[2], sys.argv[3]
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    n_layers = r.fields[f"{arch}.block_count"].contents()
    w = GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            w.add_uint32(key, {"Q4_K_M": 15, "Q6_K": 18}[mix])
            continue
        vt = f.types[0]
        sub = f.types[1] if vt == GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vt, sub_type=sub)
    plan = []
    for t in r.tensors:
        ty = mix_type(mix, t.name, n_layers)
        if ty != T.F32 and int(t.shape[0]) % 256:  # llama.cpp's fallback for rows of partial super-blocks
            ty = {T.Q4_K: T.Q5_0, T.Q6_K: T.Q8_0}[ty]
        n = int(np.prod(t.shape))
        bs, ts = GGML_QUANT_SIZES[ty]
        shape = [int(x) for x in reversed(t.shape.tolist())]  # numpy order, ne[0] last
        if ty == T.F32:
            w.add_tensor_info(t.name, shape, np.dtype(np.float32), n * 4)
        else:  # uint8 data: gguf-py takes the byte shape and derives the element shape from raw_dtype
            w.add_tensor_info(t.name, shape[:-1] + [shape[-1] // bs * ts], np.dtype(np.uint8), n // bs * ts,
                              raw_dtype=ty)
        plan.append((t.name, ty, n))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(12)
    for name, ty, n in plan:
        w.write_tensor_data(random_blocks(ty, n, rng))
    w.close()
    print("wrote", dst, {ty.name: sum(1 for _, t, _ in plan if t == ty) for ty in {t for _, t, _ in plan}})


if __name__ == "__main__":
    main()
