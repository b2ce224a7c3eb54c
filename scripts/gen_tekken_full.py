"""Full-vocabulary Tekken fixture (the real Pixtral tokenizer, 131072 ids).

tests/fixtures/tekken-full/ranks.b64: one base64 token per line, line i = rank i, the 130072 ranks that
mistral-common keeps (default_vocab_size - 1000 specials); config.json: the file's `config` section.
expect.json: what transformers' MistralConverter (tekken.json -> tokenizer.json) derives from it, as counts
and FNV-1a-64 digests: the token strings by id (GPT-2 byte-level spelling, specials as written) joined by
"\n", and the merges "left right" joined by "\n". The Rust test rebuilds a tekken.json from these files and
checks that its own vocabulary and merges give the same digests.
"""
import json
import os

from transformers.integrations.mistral.tokenizer import MistralConverter

from common import FIXTURES, fnv1a64, tekken_path

out = os.path.join(FIXTURES, "tekken-full")
os.makedirs(out, exist_ok=True)
src = tekken_path()
with open(src) as f:
    t = json.load(f)
cfg = t["config"]
n_inner = cfg["default_vocab_size"] - cfg["default_num_special_tokens"]
with open(os.path.join(out, "ranks.b64"), "w") as f:
    for i, v in enumerate(t["vocab"][:n_inner]):
        assert v["rank"] == i
        f.write(v["token_bytes"] + "\n")
with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(cfg, f, indent=1)

conv = MistralConverter(src)
vocab = conv._precomputed_vocab
by_id = [None] * cfg["default_vocab_size"]
for s, i in vocab.items():
    by_id[i] = s
assert all(x is not None for x in by_id)
merges = [f"{a} {b}" for a, b in conv._precomputed_merges]
tokens_blob = "\n".join(by_id).encode()
merges_blob = "\n".join(merges).encode()
expect = {"n_tokens": len(by_id), "tokens_fnv": f"{fnv1a64(tokens_blob):016x}", "n_merges": len(merges),
          "merges_fnv": f"{fnv1a64(merges_blob):016x}", "first_merges": merges[:5], "last_merge": merges[-1],
          "token_1000": by_id[1000], "token_131071": by_id[-1]}
with open(os.path.join(out, "expect.json"), "w") as f:
    json.dump(expect, f, indent=1, ensure_ascii=False)
print(expect, os.path.getsize(os.path.join(out, "ranks.b64")) / 1e6, "MB")
