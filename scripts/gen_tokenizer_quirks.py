"""Reference ids for the published HF tokenizer.json's split pattern (tests/convert.rs, no Python at test time).

mistral-community/pixtral-12b's tokenizer.json (like every Mistral tokenizer.json written by transformers' < 5
TikTokenConverter) splits with the llama3 pattern, not Tekken's; transformers >= 4.57 swaps in Tekken's pattern
only when loaded with `fix_mistral_regex=True`. The tiny vocabulary (1048 BPE ranks) has no token spanning the
pieces the two patterns disagree on, so the references use the full 131072-token Tekken vocabulary:

tests/fixtures/tekken-full/llama3_regex.json
  {"llama3_pattern", "tekken_pattern",
   "cases": [{"text", "ids":      mistral_common (Tekkenizer, the full tekken_240911.json),
                      "llama3":   HF tokenizers with the llama3 pattern, i.e. what the published file gives,
                      "tiny_ids": mistral_common with the tiny fixture's tekken.json (tests/fixtures/tiny/mistral)}]}
"""
import json
import os

from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from tokenizers import Regex, pre_tokenizers
from transformers.integrations.mistral.tokenizer import MistralConverter

from common import FIXTURES, need_venv, tekken_path

TINY_TEKKEN = os.path.join(FIXTURES, "tiny", "mistral", "tekken.json")

# transformers convert_slow_tokenizer.TikTokenConverter's default `pattern` (the llama3 one)
LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

CASES = [
    "नमस्ते दुनिया, हिन्दी में लिखा है",
    "ภาษาไทยมีเครื่องหมายกำกับ",
    ".\n//!",
    "x = a/b; // comment\n//! doc\n",
    "I'm here, you're there, we'll see.",
    "HELLO World, CamelCaseName",
    "1234567 apples",
    "Tiếng Việt có dấu",
    "café naïve Ärger",
]


def main():
    need_venv()
    path = tekken_path()
    full = MistralTokenizer.from_file(path).instruct_tokenizer.tokenizer
    tiny = MistralTokenizer.from_file(TINY_TEKKEN).instruct_tokenizer.tokenizer
    tekken_pattern = json.load(open(path))["config"]["pattern"]
    hf = MistralConverter(path).converted()
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    cases = []
    for t in CASES:
        ids = full.encode(t, bos=False, eos=False)
        bad = hf.encode(t, add_special_tokens=False).ids
        cases.append({"text": t, "ids": ids, "llama3": bad, "tiny_ids": tiny.encode(t, bos=False, eos=False)})
        print(f"{t!r}: {'same' if ids == bad else 'differs'} under the llama3 pattern")
    with open(os.path.join(FIXTURES, "tekken-full", "llama3_regex.json"), "w") as f:
        json.dump({"llama3_pattern": LLAMA3, "tekken_pattern": tekken_pattern, "cases": cases}, f,
                  ensure_ascii=False, indent=0)


if __name__ == "__main__":
    main()
