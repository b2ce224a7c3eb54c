"""Tiny random Pixtral models in both checkpoint layouts, for the converter and parity tests.

One model (seeded), saved as:
  tests/fixtures/tiny/hf/           HF Llava layout as transformers saves it: config.json, model.safetensors (BF16),
                                    tokenizer.json (+ tokenizer_config.json, chat template), preprocessor_config.json
  tests/fixtures/tiny/hf-sharded/   the same weights in F32 with the new key prefix (`model.language_model.*`;
                                    transformers 5 saves the legacy `language_model.model.*`), 2 shards + index.json
  tests/fixtures/tiny/mistral/      params.json, consolidated.safetensors (BF16, Meta q/k layout), tekken.json
plus tests/fixtures/tiny/expect.json: the config numbers and per-tensor checksums the Rust tests compare to.

Shapes are small but not degenerate: head_dim (32) != dim / n_heads (16), GQA 4/2, vision head_dim 32; every
row length is a multiple of 32 so Q8_0/Q4_0 apply. The tokenizer is the real Tekken (tekken_240911.json)
truncated to 1000 specials + 1048 BPE ranks (vocab 2048). Weights are rounded to bf16 so the BF16 and F32
checkpoints hold the same numbers.

The text tower gets a short language-model training run (seeded, CPU, seconds) on chat-formatted text: a random
model's logits are nearly flat over the vocabulary, so any quantization would flip its greedy picks; a trained
model's are peaked, as a real checkpoint's are, which is what the Q8_0/Q4_0 parity tests need. The vision tower
stays random.
"""
import base64
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import LlavaConfig, LlavaForConditionalGeneration, MistralConfig, PixtralVisionConfig

from common import FIXTURES, tekken_path

SEED = 1234
N_SPECIAL = 1000
VOCAB = 2048
OUT = os.path.join(FIXTURES, "tiny")

TEXT = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, vocab_size=VOCAB, rms_norm_eps=1e-5, rope_theta=1e6, max_position_embeddings=1024000,
            tie_word_embeddings=False, sliding_window=None)
VISION = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2, num_channels=3,
              image_size=256, patch_size=16, rope_theta=10000.0, hidden_act="silu", head_dim=32)


def tiny_tekken(path, vocab=VOCAB, max_image_size=VISION["image_size"]):
    """The real Tekken file cut to vocab - N_SPECIAL ranks (a prefix of a BPE rank list is a valid BPE)."""
    with open(tekken_path()) as f:
        t = json.load(f)
    n_inner = vocab - N_SPECIAL
    t["vocab"] = t["vocab"][:n_inner]
    t["config"]["num_vocab_tokens"] = n_inner
    t["config"]["default_vocab_size"] = vocab
    t["image"]["max_image_size"] = max_image_size
    with open(path, "w") as f:
        json.dump(t, f, ensure_ascii=False)


def build_model():
    torch.manual_seed(SEED)
    cfg = LlavaConfig(text_config=MistralConfig(**TEXT), vision_config=PixtralVisionConfig(**VISION),
                      image_token_index=10, projector_hidden_act="gelu", vision_feature_layer=-1,
                      vision_feature_select_strategy="full", multimodal_projector_bias=True, tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and "bias" not in name:   # norms: around 1
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            else:                                     # weights and biases: std large enough for lively logits
                fan_in = p.shape[-1] if p.ndim > 1 else 64
                v = torch.randn(p.shape, generator=g) * (1.0 / fan_in ** 0.5)
            p.copy_(v.to(torch.bfloat16).to(torch.float32))
    return model


TRAIN_TEXT = [
    ("Describe a red circle in one word.", "Round."),
    ("Hi there", "Hello! How can I help you today?"),
    ("What is 2+2? Answer with digits: 1234567.", "4"),
    ("Name three colours.", "Red, green and blue."),
    ("Count to five.", "1, 2, 3, 4, 5."),
    ("What shape is a wheel?", "A wheel is a circle."),
]
TRAIN_RAW = ("Hello, world! The quick brown fox jumps over 12345 lazy dogs.\nNew line, tabs\tand    spaces. "
             "The cat sat on the mat. A red square is next to a blue triangle. Numbers: 0 1 2 3 4 5 6 7 8 9 10. ")


def train_text(model, tekken, steps=400):
    """A few hundred AdamW steps of next-token prediction on chat-formatted and raw text."""
    from mistral_common.protocol.instruct.messages import SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    mt = MistralTokenizer.from_file(tekken)
    seqs = []
    for q, a in TRAIN_TEXT:
        for sys in [None, "Be brief."]:
            msgs = ([SystemMessage(content=sys)] if sys else []) + [UserMessage(content=q)]
            prompt = mt.encode_chat_completion(ChatCompletionRequest(messages=msgs)).tokens
            seqs.append(prompt + mt.instruct_tokenizer.tokenizer.encode(a, bos=False, eos=True))
    raw = mt.instruct_tokenizer.tokenizer.encode(TRAIN_RAW * 3, bos=True, eos=False)
    seqs += [raw[i:i + 48] for i in range(0, len(raw) - 48, 16)]
    g = torch.Generator().manual_seed(SEED)
    params = [p for n, p in model.named_parameters() if "language_model" in n or "lm_head" in n]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        batch = [seqs[int(i)] for i in torch.randint(len(seqs), (8,), generator=g)]
        n = max(len(b) for b in batch)
        ids = torch.tensor([b + [11] * (n - len(b)) for b in batch])
        labels = torch.tensor([b + [-100] * (n - len(b)) for b in batch])
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"train step {step}: loss {loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def hf_tokenizer(tekken, out_dir):
    from transformers.integrations.mistral.tokenizer import MistralConverter
    from transformers import PreTrainedTokenizerFast
    tok = MistralConverter(tekken).converted()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out_dir)


def permute_for_rope(w, n_heads):
    """HF convert_pixtral_weights_to_hf / convert_mistral_weights: Meta layout -> rotate-half layout."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def unpermute(w, n_heads):
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def mistral_state(sd, prefix):
    """HF state dict -> mistral-inference names, q/k back in the Meta interleaved layout."""
    t, v, p, _ = prefix
    out = {}
    nh, nkv, vh = TEXT["num_attention_heads"], TEXT["num_key_value_heads"], VISION["num_attention_heads"]
    out["tok_embeddings.weight"] = sd[f"{t}embed_tokens.weight"]
    out["norm.weight"] = sd[f"{t}norm.weight"]
    out["output.weight"] = sd[prefix[3]]
    for l in range(TEXT["num_hidden_layers"]):
        h = f"{t}layers.{l}."
        m = f"layers.{l}."
        out[m + "attention_norm.weight"] = sd[h + "input_layernorm.weight"]
        out[m + "attention.wq.weight"] = unpermute(sd[h + "self_attn.q_proj.weight"], nh)
        out[m + "attention.wk.weight"] = unpermute(sd[h + "self_attn.k_proj.weight"], nkv)
        out[m + "attention.wv.weight"] = sd[h + "self_attn.v_proj.weight"]
        out[m + "attention.wo.weight"] = sd[h + "self_attn.o_proj.weight"]
        out[m + "ffn_norm.weight"] = sd[h + "post_attention_layernorm.weight"]
        out[m + "feed_forward.w1.weight"] = sd[h + "mlp.gate_proj.weight"]
        out[m + "feed_forward.w2.weight"] = sd[h + "mlp.down_proj.weight"]
        out[m + "feed_forward.w3.weight"] = sd[h + "mlp.up_proj.weight"]
    out["vision_encoder.patch_conv.weight"] = sd[f"{v}patch_conv.weight"]
    out["vision_encoder.ln_pre.weight"] = sd[f"{v}ln_pre.weight"]
    for l in range(VISION["num_hidden_layers"]):
        h = f"{v}transformer.layers.{l}."
        m = f"vision_encoder.transformer.layers.{l}."
        out[m + "attention_norm.weight"] = sd[h + "attention_norm.weight"]
        out[m + "attention.wq.weight"] = unpermute(sd[h + "attention.q_proj.weight"], vh)
        out[m + "attention.wk.weight"] = unpermute(sd[h + "attention.k_proj.weight"], vh)
        out[m + "attention.wv.weight"] = sd[h + "attention.v_proj.weight"]
        out[m + "attention.wo.weight"] = sd[h + "attention.o_proj.weight"]
        out[m + "ffn_norm.weight"] = sd[h + "ffn_norm.weight"]
        out[m + "feed_forward.w1.weight"] = sd[h + "feed_forward.gate_proj.weight"]
        out[m + "feed_forward.w2.weight"] = sd[h + "feed_forward.down_proj.weight"]
        out[m + "feed_forward.w3.weight"] = sd[h + "feed_forward.up_proj.weight"]
    out["vision_language_adapter.w_in.weight"] = sd[f"{p}linear_1.weight"]
    out["vision_language_adapter.w_in.bias"] = sd[f"{p}linear_1.bias"]
    out["vision_language_adapter.w_out.weight"] = sd[f"{p}linear_2.weight"]
    out["vision_language_adapter.w_out.bias"] = sd[f"{p}linear_2.bias"]
    return out


NEW = ("model.language_model.", "model.vision_tower.", "model.multi_modal_projector.", "lm_head.weight")
OLD = ("language_model.model.", "vision_tower.", "multi_modal_projector.", "language_model.lm_head.weight")


def rename(sd, src, dst):
    out = {}
    for k, v in sd.items():
        for a, b in zip(src, dst):
            if k == a or (a.endswith(".") and k.startswith(a)):
                k = b + k[len(a):] if a.endswith(".") else b
                break
        out[k] = v
    return out


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    for d in ["hf", "hf-sharded", "mistral"]:
        os.makedirs(os.path.join(OUT, d))
    tekken = os.path.join(OUT, "mistral", "tekken.json")
    tiny_tekken(tekken)

    model = build_model()
    train_text(model, tekken)
    hf = os.path.join(OUT, "hf")
    model.to(torch.bfloat16).save_pretrained(hf, safe_serialization=True)
    model.to(torch.float32)
    hf_tokenizer(tekken, hf)
    with open(os.path.join(hf, "preprocessor_config.json"), "w") as f:
        json.dump({"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                   "patch_size": {"height": 16, "width": 16}, "size": {"longest_edge": VISION["image_size"]},
                   "image_processor_type": "PixtralImageProcessor"}, f, indent=1)

    # the state dict in the "new" naming, whatever transformers saved
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if not any(k.startswith("model.language_model.") for k in sd):
        sd = rename(sd, OLD, NEW)

    # the other prefix (model.language_model.*), F32, two shards
    sh = os.path.join(OUT, "hf-sharded")
    old = sd  # transformers 5 saves the legacy prefix; the shards carry the new one
    names = sorted(old)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: old[k].float() for k in keys}, os.path.join(sh, fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    with open(os.path.join(sh, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(v.numel() * 4 for v in old.values())}, "weight_map": weight_map}, f, indent=1)
    for f_ in os.listdir(hf):
        if not f_.endswith(".safetensors"):
            shutil.copy(os.path.join(hf, f_), sh)

    # Mistral-native
    mi = os.path.join(OUT, "mistral")
    ms = mistral_state(sd, NEW)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in ms.items()}, os.path.join(mi, "consolidated.safetensors"))
    params = {"dim": TEXT["hidden_size"], "n_layers": TEXT["num_hidden_layers"], "head_dim": TEXT["head_dim"],
              "hidden_dim": TEXT["intermediate_size"], "n_heads": TEXT["num_attention_heads"],
              "n_kv_heads": TEXT["num_key_value_heads"], "rope_theta": TEXT["rope_theta"], "norm_eps": TEXT["rms_norm_eps"],
              "vocab_size": VOCAB,
              "vision_encoder": {"hidden_size": VISION["hidden_size"], "num_channels": 3, "image_size": VISION["image_size"],
                                 "patch_size": 16, "rope_theta": VISION["rope_theta"],
                                 "intermediate_size": VISION["intermediate_size"],
                                 "num_hidden_layers": VISION["num_hidden_layers"],
                                 "num_attention_heads": VISION["num_attention_heads"],
                                 "image_token_id": 10, "image_break_token_id": 12, "image_end_token_id": 13,
                                 "adapter_bias": True}}
    with open(os.path.join(mi, "params.json"), "w") as f:
        json.dump(params, f, indent=1)

    # sanity: the q/k round trip is the identity
    q = sd["model.language_model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(permute_for_rope(unpermute(q, 4), 4), q)

    # what the Rust tests compare against: GGUF-layout f32 values of a few tensors
    expect = {"text": TEXT, "vision": VISION, "vocab_size": VOCAB,
              "img_break_row": sd["model.language_model.embed_tokens.weight"][12].tolist(),
              "blk0_attn_q_row1": ms["layers.0.attention.wq.weight"][1].tolist(),
              "blk0_attn_k_row1": ms["layers.0.attention.wk.weight"][1].tolist(),
              "v_blk1_attn_k_row3": ms["vision_encoder.transformer.layers.1.attention.wk.weight"][3].tolist()}
    with open(os.path.join(OUT, "expect.json"), "w") as f:
        json.dump(expect, f)
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print(f"wrote {OUT}: {total / 1e6:.2f} MB")
    for d in ["hf", "hf-sharded", "mistral"]:
        print(d, sorted(os.listdir(os.path.join(OUT, d))))


if __name__ == "__main__":
    main()
