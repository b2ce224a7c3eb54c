"""Reference outputs of the tiny model's text path, for the decoder parity tests (no Python at test time).

tests/fixtures/tiny/text/<case>.json   {"ids": prompt ids (mistral_common), "greedy": 16 greedy ids (HF)}
tests/fixtures/tiny/text/<case>.npy    HF float32 logits at every prompt position, [n_tokens, vocab]
tests/fixtures/tiny/text/<case>.<q>.npy  the same with every 2-D weight quantized and dequantized by gguf.quants
                                       as `pixtral convert --outtype <q>` stores it (q4_0: output.weight Q8_0):
                                       separates the format's error from the implementation's
tests/fixtures/tekken-full/corpus.json [{"text", "ids"}]: mistral_common ids with the full 131072 vocabulary
tests/fixtures/tiny/llama-cpp/{text,mmproj}-f32.gguf  the tiny HF checkpoint converted by llama.cpp's own
                                       convert_hf_to_gguf.py (LLAMA_CPP_DIR, default scratch/llama.cpp: a llama.cpp
                                       source tree, e.g. the one vendored in the llama-cpp-python sdist)
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from transformers import LlavaForConditionalGeneration

from common import FIXTURES, ROOT, tekken_path

TINY = os.path.join(FIXTURES, "tiny")
OUT = os.path.join(TINY, "text")

CHATS = {
    "chat_one": [UserMessage(content="Describe a red circle in one word.")],
    "chat_multi": [SystemMessage(content="Be brief."), UserMessage(content="Hi there"), AssistantMessage(content="Hello!"),
                   UserMessage(content="What is 2+2? Answer with digits: 1234567.")],
}
RAW = {"raw_text": "Hello, world! The quick brown fox jumps over 12345 lazy dogs.\nNew line, tabs\tand    spaces."}

CORPUS = [
    "Hello, world!", "  leading and trailing  ", "1234567890 3.14159 1,000,000", "日本語のテキストと中文文本",
    "ภาษาไทยมีเครื่องหมายกำกับ", "👩‍👩‍👧‍👦 family and 🏳️‍🌈 flag", "مرحبا بالعالم", "עברית", "line1\r\nline2\r\n\r\n",
    "tabs\t\tand\u00a0nbsp", " " * 17 + "x", "[INST] not a control token [/INST] </s> <s> [IMG] [IMG_BREAK]",
    "café naïve résumé", "Ünïcödé ÅÄÖ ß", "def f(x):\n    return x ** 2  # comment", "<unk><pad>", "a" * 50,
    "Mixed中English混合テキスト", "\u200b zero width \ufeff bom", "😀😃😄😁", "e\u0301 combining", "x\n\n\n\ny",
]


def hf_model():
    m = LlavaForConditionalGeneration.from_pretrained(os.path.join(TINY, "hf"), torch_dtype=torch.float32).eval()
    return m


def quantized_copy(model, qtype):
    """The model with each text 2-D weight replaced by dequantize(quantize(w)) under our type policy."""
    import copy
    from gguf import GGMLQuantizationType as T, quants
    m = copy.deepcopy(model)
    base = {"q4_0": T.Q4_0, "q8_0": T.Q8_0}[qtype]
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim != 2 or not ("language_model" in name or "lm_head" in name):
                continue
            t = T.Q8_0 if ("lm_head" in name and base == T.Q4_0) else base
            w = p.detach().float().numpy()
            p.copy_(torch.from_numpy(quants.dequantize(quants.quantize(w, t), t).reshape(w.shape)))
    return m


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def greedy(model, ids, n=16):
    ids = list(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(logits_of(model, ids)[-1]))
        out.append(nxt)
        ids.append(nxt)
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    model = hf_model()
    mt = MistralTokenizer.from_file(os.path.join(TINY, "mistral", "tekken.json"))
    tok = mt.instruct_tokenizer.tokenizer
    cases = {name: mt.encode_chat_completion(ChatCompletionRequest(messages=msgs)).tokens for name, msgs in CHATS.items()}
    cases.update({name: tok.encode(text, bos=True, eos=False) for name, text in RAW.items()})
    quantized = {q: quantized_copy(model, q) for q in ["q8_0", "q4_0"]}
    for name, ids in cases.items():
        np.save(os.path.join(OUT, f"{name}.npy"), logits_of(model, ids).astype(np.float32))
        for q, qm in quantized.items():
            np.save(os.path.join(OUT, f"{name}.{q}.npy"), logits_of(qm, ids).astype(np.float32))
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump({"ids": ids, "greedy": greedy(model, ids),
                       "text": RAW.get(name), "messages": [m.model_dump() for m in CHATS.get(name, [])]}, f, indent=1)
        print(name, len(ids), "tokens")

    full = MistralTokenizer.from_file(tekken_path()).instruct_tokenizer.tokenizer
    corpus = [{"text": t, "ids": full.encode(t, bos=False, eos=False)} for t in CORPUS]
    with open(os.path.join(FIXTURES, "tekken-full", "corpus.json"), "w") as f:
        json.dump(corpus, f, ensure_ascii=False, indent=0)

    llama_cpp_dir = os.environ.get("LLAMA_CPP_DIR", os.path.join(ROOT, "scratch", "llama.cpp"))
    if not os.path.isfile(os.path.join(llama_cpp_dir, "convert_hf_to_gguf.py")):
        print(f"skip llama.cpp conversion: no convert_hf_to_gguf.py in {llama_cpp_dir}", file=sys.stderr)
        return
    out = os.path.join(TINY, "llama-cpp")
    os.makedirs(out, exist_ok=True)
    # llama.cpp identifies the pre-tokenizer by hashing how the tokenizer splits a test text; the tiny vocabulary
    # gives an unknown hash, so tell it this is Tekken (what it is).
    # Its mmproj tensor-name map covers range(block_count) and so cannot name mm.2 with 2 vision layers: widen it.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.argv = sys.argv[1:]; "
            "import gguf; _m = gguf.get_tensor_name_map; gguf.get_tensor_name_map = lambda a, n: _m(a, max(n, 8)); "
            "import convert_hf_to_gguf as c; from conversion.base import TextModel; "
            "TextModel.get_vocab_base_pre = lambda self, tokenizer: 'tekken'; c.main()")
    env = {**os.environ, "PYTHONPATH": os.path.join(llama_cpp_dir, "gguf-py")}
    subprocess.run([sys.executable, "-c", code, llama_cpp_dir, os.path.join(TINY, "hf"), "--outtype", "f32",
                    "--outfile", os.path.join(out, "text-f32.gguf")], check=True, env=env)
    subprocess.run([sys.executable, "-c", code, llama_cpp_dir, os.path.join(TINY, "hf"), "--outtype", "f32", "--mmproj",
                    "--outfile", os.path.join(out, "mmproj-f32.gguf")], check=True, env=env)
    print("wrote", out)


if __name__ == "__main__":
    main()
