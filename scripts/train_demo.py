"""Train the demo model: a tiny Pixtral (same architecture and code path as Pixtral 12B) that answers questions
about synthetic images and holds a conversation, so `pixtral run` / `pixtral chat` work on a fresh clone with no
download.

    .venv/bin/python scripts/train_demo.py          # seeded, CPU

Environment: DEMO_STEPS (default 3500), DEMO_LR (5e-4), DEMO_THREADS (torch threads, default all cores),
DEMO_RESUME=1 (continue from the model saved in scratch/pixtral-demo: more steps on new images; DEMO_STEPS=0 only
re-evaluates it and rewrites the fixtures), DEMO_INIT=FILE.gguf (start from the weights of a converted model,
dequantized, and its `.mmproj.gguf` beside it, instead of a random init). The final conversion runs
`cargo run --release`: CARGO_TARGET_DIR and CARGO_BUILD_JOBS are passed through to it.

Images are drawn on the fly: coloured shapes (circle, square, triangle, star) at varied sizes, aspect ratios and
positions, one big shape or 1-4 small copies, and printed digits. Questions (each in many wordings, see QUESTIONS)
and answers:

    shape     "What shape is this?"            -> "A circle." / "Squares."
    colour    "What colour is the shape?"      -> "Red."
    describe  "Describe the image."            -> "A red circle." / "Three orange squares."
    count     "How many shapes are there?"     -> "3"
    digit     "What number is written?"        -> "7"
    (text)    "Hello"                          -> a greeting that says what it can do

Training samples are conversations, as the REPL has them: often a greeting first (a text-only turn), then 1-3
questions about an image (the image in the first of them, follow-ups without it), and up to three more images,
each in a later user message; a question is about the newest image. The wordings of HELD_OUT are never trained on.

Absolute positions ("top left") were tried and dropped: the ViT has no absolute position signal (RoPE-2D is
relative), and a tiny one did not learn them from borders in minutes (4-5 of 8 right after 2000 steps).

Tokens and pixels come from mistral-common, as at inference: the real Tekken file cut to 1000 specials + 1048
BPE ranks (vocab 2048), images at most 128 px a side (8x8 patches of 16).

Writes
    scratch/pixtral-demo/                  the trained model, HF Llava layout, F32 (input of `pixtral convert`)
    examples/demo/pixtral-demo.gguf        Q8_0 text + pixtral-demo.mmproj.gguf (F16 vision), via the Rust converter
    examples/*.png                         a few example images
    tests/fixtures/demo/eval/NNN.png       100 held-out images (another seed); eval.json: one question each (trained
                                           wordings), expected answer, this PyTorch model's greedy answer
    tests/fixtures/demo/wordings.json      the same images asked in HELD_OUT wordings, with the same fields
    tests/fixtures/demo/conv/*.png         held-out multi-turn conversations (conversations.json): each turn's
                                           question, image (if any), expected answer, and PyTorch's greedy answer
                                           with its own earlier answers fed back, as the REPL does
"""
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from transformers import LlavaConfig, LlavaForConditionalGeneration, MistralConfig, PixtralVisionConfig

from common import FIXTURES, ROOT, need_venv
from gen_tiny_models import hf_tokenizer, tiny_tekken

SEED = 2024
EVAL_SEED = 999
CONV_SEED = 4242
MAX_SIDE = 128
VOCAB = 2048
STEPS = int(os.environ.get("DEMO_STEPS", 3500))
BATCH = 32

TEXT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, vocab_size=VOCAB, rms_norm_eps=1e-5, rope_theta=1e6, max_position_embeddings=32768,
            tie_word_embeddings=False, sliding_window=None)
VISION = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_channels=3,
              image_size=MAX_SIDE, patch_size=16, rope_theta=10000.0, hidden_act="silu", head_dim=32)

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220), "yellow": (235, 200, 20),
           "purple": (140, 50, 180), "orange": (245, 130, 20)}
SHAPES = ["circle", "square", "triangle", "star"]
NUMBER_WORDS = ["", "One", "Two", "Three", "Four"]
# Wordings trained on (each also lower-cased or without its final mark now and then, see ask()).
QUESTIONS = {
    "shape": ["What shape is this?", "What shape is it?", "Which shape is in the image?", "Name the shape.",
              "What shape is in this image?", "What shape is in the picture?", "What shape is in this picture?",
              "What is the shape?", "What is the shape in the image?", "What's the shape in this picture?",
              "Which shape is this?", "What kind of shape is this?", "What shape do you see?", "Tell me the shape.",
              "What shape are they?", "Identify the shape.", "What is this shape?", "Can you name the shape?",
              "Could you tell me what shape this is?"],
    "colour": ["What colour is the shape?", "What color is it?", "Which colour is this shape?",
               "What color is the shape in this image?", "What colour is it?", "What color is the shape?",
               "What is the colour of the shape?", "What is the color?", "Which color is it?", "What colour is this?",
               "Name the colour.", "What colour is the shape in the picture?", "What colour are the shapes?",
               "Tell me the color.", "What is its colour?", "What color is the shape in this picture?",
               "Could you tell me the colour?", "Can you name the color?"],
    "describe": ["Describe the image.", "What is in the picture?", "Describe this image in a few words.",
                 "What is in this image?", "What do you see?", "Describe the picture.", "What's in the image?",
                 "Describe it.", "What is shown in the picture?", "Describe what you see.",
                 "Tell me what is in the image.", "Describe this image.", "Could you describe the picture?",
                 "Can you describe it?"],
    "count": ["How many shapes are there?", "Count the shapes.", "How many are there?",
              "How many shapes are in the image?", "How many shapes do you see?",
              "How many shapes are in this picture?",
              "What is the number of shapes?", "Count them.", "How many shapes?", "How many objects are there?",
              "Can you count them?", "Could you count the shapes?"],
    "digit": ["What number is written?", "Which digit is this?", "Read the number.", "What digit is written?",
              "What number is this?", "What number is in the image?", "Which number is shown?", "What is the digit?",
              "Read the digit.", "What number do you see?", "What's the number in this picture?",
              "Can you tell me the number?", "Could you read the digit?"],
}
# Wordings never trained on: the unseen-wordings fixture asks these (a test checks none is a trained one).
HELD_OUT = {
    "shape": ["What shape is shown?", "What is the shape in this image?", "Which shape do you see in the picture?",
              "Can you tell me the shape?", "What shape is drawn here?", "what shape is that"],
    "colour": ["What color is this shape?", "What is the color of the shape in this picture?",
               "Which colour do you see?",
               "Can you tell me the colour?", "What colour is shown in the image?", "what color are they"],
    "describe": ["Describe this picture.", "What can you see in the image?", "Can you describe the image?",
                 "What is shown in this image?", "Give a short description of the picture."],
    "count": ["How many shapes can you see?", "How many shapes are in this image?", "Can you count the shapes?",
              "How many shapes are shown in the picture?", "Count the shapes in the image."],
    "digit": ["What digit is shown?", "Which number is written in the image?", "Can you read the number?",
              "What is the number in this picture?", "Read the digit in the image."],
}
GREETING = "Hello! Show me an image and ask about its shape, colour, count or digit."
GREETINGS = [("Hi", GREETING), ("Hello", GREETING), ("Hello!", GREETING), ("Hi!", GREETING), ("Hey", GREETING),
             ("Hello there", GREETING), ("Who are you?", GREETING), ("What can you do?", GREETING)]
TEXT_ONLY = GREETINGS + [("Thanks!", "You are welcome."), ("Thank you", "You are welcome.")]


def normal(q):
    return q.lower().rstrip("?.!")


def ask(rng, task):
    """A trained wording of `task`, now and then lower-cased or without its final mark."""
    q = rng.choice(QUESTIONS[task])
    if rng.random() < 0.1:
        q = q[0].lower() + q[1:]
    if rng.random() < 0.1:
        q = q.rstrip("?.")
    return q


def draw_shape(d, kind, cx, cy, r, fill):
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "square":
        d.rectangle([cx - r * 0.85, cy - r * 0.85, cx + r * 0.85, cy + r * 0.85], fill=fill)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.8), (cx - r * 0.95, cy + r * 0.8)], fill=fill)
    else:
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        d.polygon(pts, fill=fill)


def jitter(rng, c):
    return tuple(max(0, min(255, v + rng.randint(-20, 20))) for v in c)


def canvas(rng, lo=48, hi=192):
    w = rng.randint(lo, hi)
    h = max(lo, min(hi, int(w * math.exp(rng.uniform(-0.5, 0.5)))))
    bg = tuple(rng.randint(215, 255) for _ in range(3))
    im = Image.new("RGB", (w, h), bg)
    return im, ImageDraw.Draw(im), w, h


def shape_answers(kind, colour, n):
    """{task: answer} for an image of `n` shapes `kind` of one colour."""
    if n == 1:
        article = "An" if colour[0] in "aeiou" else "A"
        return {"shape": f"A {kind}.", "colour": f"{colour.capitalize()}.", "describe": f"{article} {colour} {kind}.",
                "count": "1"}
    return {"shape": f"{kind.capitalize()}s.", "colour": f"{colour.capitalize()}.",
            "describe": f"{NUMBER_WORDS[n]} {colour} {kind}s.", "count": str(n)}


def big_shape(rng):
    im, d, w, h = canvas(rng)
    kind, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    r = min(w, h) * rng.uniform(0.28, 0.45)
    draw_shape(d, kind, rng.uniform(r, w - r), rng.uniform(r, h - r), r, jitter(rng, COLOURS[colour]))
    return im, shape_answers(kind, colour, 1)


def small_shapes(rng):
    """1-4 copies of one small shape."""
    while True:
        im, d, w, h = canvas(rng, 80, 192)
        n = rng.randint(1, 4)
        r = min(w, h) * rng.uniform(0.12, 0.17)
        centres = []
        for _ in range(200):
            if len(centres) == n:
                break
            c = (rng.uniform(r, w - r), rng.uniform(r, h - r))
            if all(math.hypot(c[0] - e[0], c[1] - e[1]) > 2.3 * r for e in centres):
                centres.append(c)
        if len(centres) == n:
            break
    kind, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    for cx, cy in centres:
        draw_shape(d, kind, cx, cy, r, jitter(rng, COLOURS[colour]))
    return im, shape_answers(kind, colour, n)


def digit_image(rng):
    im, d, w, h = canvas(rng, 48, 160)
    digit = rng.randint(0, 9)
    size = int(min(h * rng.uniform(0.55, 0.85), w * 1.1))
    font = ImageFont.load_default(size=max(size, 12))
    x0, y0, x1, y1 = d.textbbox((0, 0), str(digit), font=font)
    tx = rng.uniform(0, max(0.0, w - (x1 - x0))) - x0
    ty = rng.uniform(0, max(0.0, h - (y1 - y0))) - y0
    ink = rng.choice([(0, 0, 0), (40, 40, 40)] + list(COLOURS.values()))
    d.text((tx, ty), str(digit), fill=ink, font=font)
    return im, {"digit": str(digit)}


def image_for(rng, task):
    """(image, {task: answer}) for a question of `task`: counts on small shapes, shape questions on either kind."""
    if task == "digit":
        return digit_image(rng)
    if task == "count" or rng.random() < 0.5:
        return small_shapes(rng)
    return big_shape(rng)


def any_image(rng):
    return image_for(rng, "digit" if rng.random() < 0.25 else rng.choice(["shape", "count"]))


TASKS = list(QUESTIONS)


class Encoder:
    """Tokens and pixels from mistral-common. A conversation is assembled per message: v3 (no system prompt) is
    `<s>` then `[INST] user [/INST] answer </s>` per exchange, which check_template() compares with mistral-common's
    own encoding of whole conversations."""

    def __init__(self, tekken):
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
        self.mt = MistralTokenizer.from_file(tekken)
        self.tok = self.mt.instruct_tokenizer.tokenizer

    def user(self, q, image):
        """One user message -> (its tokens after `<s>`, its pixels or None)."""
        from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
        from mistral_common.protocol.instruct.messages import UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        content = [ImageChunk(image=image), TextChunk(text=q)] if image is not None else q
        enc = self.mt.encode_chat_completion(ChatCompletionRequest(messages=[UserMessage(content=content)]))
        assert enc.tokens[0] == self.tok.bos_id
        return enc.tokens[1:], (np.asarray(enc.images[0], dtype=np.float32) if image is not None else None)

    def conversation(self, turns):
        """turns [(question, answer, image or None)] -> (ids, labels, [pixels of each image in order])."""
        ids, labels, pixels = [self.tok.bos_id], [-100], []
        for q, a, image in turns:
            new, px = self.user(q, image)
            if px is not None:
                pixels.append(px)
            ans = self.tok.encode(a, bos=False, eos=True)
            ids += new + ans
            labels += [-100] * len(new) + ans
        return ids, labels, pixels

    def check_template(self, turns):
        from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
        from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        msgs = []
        for q, a, image in turns:
            msgs.append(UserMessage(content=[ImageChunk(image=image), TextChunk(text=q)] if image is not None else q))
            msgs.append(AssistantMessage(content=a))
        enc = self.mt.encode_chat_completion(ChatCompletionRequest(messages=msgs[:-1]))
        ids, _, pixels = self.conversation(turns)
        last_answer = len(self.tok.encode(turns[-1][1], bos=False, eos=True))
        assert enc.tokens == ids[:len(ids) - last_answer], "per-message assembly differs from mistral-common"
        assert len(enc.images) == len(pixels) and all((np.asarray(a) == b).all() for a, b in zip(enc.images, pixels))


def training_turns(rng):
    """One training conversation: [(question, answer, image or None)]."""
    if rng.random() < 0.04:
        return [(*rng.choice(TEXT_ONLY), None)]
    turns = []
    if rng.random() < 0.3:
        turns.append((*rng.choice(GREETINGS), None))
    for _ in range(rng.choices([1, 2, 3, 4], [0.5, 0.3, 0.15, 0.05])[0]):
        im, answers = any_image(rng)
        tasks = rng.sample(list(answers), len(answers))[:rng.choices([1, 2, 3], [0.5, 0.35, 0.15])[0]]
        for j, task in enumerate(tasks):
            turns.append((ask(rng, task), answers[task], im if j == 0 else None))
        if rng.random() < 0.05:
            turns.append((*rng.choice(TEXT_ONLY[-2:]), None))
    return turns


def collate(samples):
    n = max(len(s[0]) for s in samples)
    ids = torch.tensor([s[0] + [11] * (n - len(s[0])) for s in samples])
    labels = torch.tensor([s[1] + [-100] * (n - len(s[1])) for s in samples])
    imgs = [p for s in samples for p in s[2]]
    if not imgs:
        return ids, labels, None, None
    hmax, wmax = max(p.shape[1] for p in imgs), max(p.shape[2] for p in imgs)
    pv = torch.zeros(len(imgs), 3, hmax, wmax)
    for i, p in enumerate(imgs):
        pv[i, :, :p.shape[1], :p.shape[2]] = torch.from_numpy(p)
    sizes = torch.tensor([[p.shape[1], p.shape[2]] for p in imgs])
    return ids, labels, pv, sizes


def batches(rng, enc):
    """Batches of BATCH conversations of similar length (drawn 4 batches at a time, sorted): less padding."""
    while True:
        pool = sorted((enc.conversation(training_turns(rng)) for _ in range(4 * BATCH)), key=lambda s: len(s[0]))
        order = [pool[i:i + BATCH] for i in range(0, len(pool), BATCH)]
        rng.shuffle(order)
        yield from order


def embed(model, ids, pv, sizes, chunk=8):
    """Input embeddings with the image features in the [IMG] positions, as LlavaForConditionalGeneration does, but
    the ViT run on `chunk` images at a time: HF's Pixtral packs all images of a call into one sequence with a
    block-diagonal mask, quadratic in the images of the batch (11 s for one batch of 98 images on one core)."""
    emb = model.get_input_embeddings()(ids)
    if pv is None:
        return emb
    feats = []
    for i in range(0, len(pv), chunk):
        s = sizes[i:i + chunk]
        h, w = int(s[:, 0].max()), int(s[:, 1].max())
        out = model.model.get_image_features(pixel_values=pv[i:i + chunk, :, :h, :w], vision_feature_layer=-1,
                                             vision_feature_select_strategy="full", image_sizes=s)
        feats.extend(out.pooler_output)
    feats = torch.cat(feats).to(emb.dtype)
    mask = (ids == model.config.image_token_id).unsqueeze(-1).expand_as(emb)
    assert int(mask.sum()) == feats.numel(), "image tokens and features differ"
    return emb.masked_scatter(mask, feats)


def build_model():
    torch.manual_seed(SEED)
    cfg = LlavaConfig(text_config=MistralConfig(**TEXT), vision_config=PixtralVisionConfig(**VISION),
                      image_token_index=10, projector_hidden_act="gelu", vision_feature_layer=-1,
                      vision_feature_select_strategy="full", multimodal_projector_bias=True, tie_word_embeddings=False)
    return LlavaForConditionalGeneration(cfg)


def init_from_gguf(model, path):
    """Load a converted model (text GGUF + `.mmproj.gguf`), dequantized, into `model`: the inverse of the
    converter's mapping (convert/src/mapping.rs), q/k permuted back to HF's rotate-half layout."""
    from gguf import GGUFReader, quants
    sd = model.state_dict()
    if "model.language_model.embed_tokens.weight" in sd:
        p, head = "model.language_model.", "lm_head.weight"
        v, pr = "model.vision_tower.", "model.multi_modal_projector."
    else:
        p, head = "language_model.model.", "language_model.lm_head.weight"
        v, pr = "vision_tower.", "multi_modal_projector."
    text = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    vision = {"ln1": "attention_norm", "attn_q": "attention.q_proj", "attn_k": "attention.k_proj",
              "attn_v": "attention.v_proj", "attn_out": "attention.o_proj", "ln2": "ffn_norm",
              "ffn_gate": "feed_forward.gate_proj", "ffn_up": "feed_forward.up_proj",
              "ffn_down": "feed_forward.down_proj"}
    fixed = {"token_embd.weight": p + "embed_tokens.weight", "output_norm.weight": p + "norm.weight",
             "output.weight": head, "v.patch_embd.weight": v + "patch_conv.weight",
             "v.pre_ln.weight": v + "ln_pre.weight",
             "mm.1.weight": pr + "linear_1.weight", "mm.1.bias": pr + "linear_1.bias",
             "mm.2.weight": pr + "linear_2.weight", "mm.2.bias": pr + "linear_2.bias"}
    heads = {"attn_q": TEXT["num_attention_heads"], "attn_k": TEXT["num_key_value_heads"]}
    done = set()
    for f in (path, path[:-len(".gguf")] + ".mmproj.gguf"):
        for t in GGUFReader(f).tensors:
            if t.name == "v.token_embd.img_break":  # a copy of token_embd's [IMG_BREAK] row
                continue
            w = quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(reversed(t.shape.tolist())))
            w = torch.from_numpy(w.copy())
            part = t.name.split(".")
            n_heads = None
            if t.name in fixed:
                name = fixed[t.name]
            elif part[0] == "blk":
                name = f"{p}layers.{part[1]}.{text[part[2]]}.weight"
                n_heads = heads.get(part[2])
            else:
                name = f"{v}transformer.layers.{part[2]}.{vision[part[3]]}.weight"
                n_heads = VISION["num_attention_heads"] if part[3] in ("attn_q", "attn_k") else None
            if n_heads:  # interleaved pairs -> rotate-half (HF's permute_for_rope)
                rows, cols = w.shape
                w = w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)
            assert sd[name].numel() == w.numel(), (t.name, name)
            sd[name].copy_(w.reshape(sd[name].shape))
            done.add(name)
    missing = set(k for k in sd if "rotary" not in k and "inv_freq" not in k) - done
    assert not missing, missing


@torch.no_grad()
def greedy(model, enc, ids, pixels, max_new=48):
    """Greedy answer to the prompt `ids` with its images `pixels` ([3, h, w] arrays) -> (text, ids without EOS)."""
    kw = {}
    if pixels:
        h, w = max(p.shape[1] for p in pixels), max(p.shape[2] for p in pixels)
        pv = torch.zeros(len(pixels), 3, h, w)
        for i, p in enumerate(pixels):
            pv[i, :, :p.shape[1], :p.shape[2]] = torch.from_numpy(p)
        kw = dict(pixel_values=pv, image_sizes=torch.tensor([p.shape[1:] for p in pixels]))
    out = []
    seq = list(ids)
    for _ in range(max_new):
        logits = model(input_ids=torch.tensor([seq]), **kw).logits[0, -1]
        t = int(logits.argmax())
        if t == enc.tok.eos_id:
            break
        out.append(t)
        seq.append(t)
    return enc.tok.decode(out).strip(), out


def eval_set(n=100):
    """The held-out images: another seed, every image task in turn; one trained and one held-out wording each."""
    rng = random.Random(EVAL_SEED)
    items = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        im, answers = image_for(rng, task)
        items.append((task, im, rng.choice(QUESTIONS[task]), answers[task]))
    wrng = random.Random(EVAL_SEED + 1)
    unseen = [(task, im, wrng.choice(HELD_OUT[task]), a) for task, im, _, a in items]
    return items, unseen


def conversation_set(n=30):
    """Held-out conversations (another seed): a greeting first in every other one, 2-3 questions about a first
    image, then one or two more images, each in a later user message, with 1-2 questions each."""
    rng = random.Random(CONV_SEED)
    convs = []
    for c in range(n):
        turns = []
        if c % 2 == 0:
            turns.append((*rng.choice(GREETINGS), None))
        for k in range(2 if c % 3 else 3):
            im, answers = any_image(rng)
            want = (2 + (k == 0 and c % 4 == 1)) if k == 0 else rng.randint(1, 2)
            tasks = rng.sample(list(answers), len(answers))[:want]
            for j, task in enumerate(tasks):
                turns.append((rng.choice(QUESTIONS[task]), answers[task], im if j == 0 else None))
        convs.append(turns)
    return convs


def evaluate(model, enc, items):
    model.eval()
    answers, per = [], {}
    for task, im, q, a in items:
        ids, px = enc.user(q, im)
        got, _ = greedy(model, enc, [enc.tok.bos_id] + ids, [px] if px is not None else [])
        answers.append(got)
        ok, n = per.get(task, (0, 0))
        per[task] = (ok + (got == a), n + 1)
    model.train()
    total = sum(v[0] for v in per.values())
    return answers, total / len(items), {k: f"{v[0]}/{v[1]}" for k, v in per.items()}


def converse(model, enc, convs):
    """Each conversation turn by turn, PyTorch's greedy answers fed back (as ids, then `</s>`), as the REPL does.
    -> (answers per conversation, accuracy on the turns after the first)."""
    model.eval()
    out, right, later = [], 0, 0
    for turns in convs:
        ids, pixels, got = [enc.tok.bos_id], [], []
        for i, (q, a, im) in enumerate(turns):
            new, px = enc.user(q, im)
            ids += new
            if px is not None:
                pixels.append(px)
            text, gen = greedy(model, enc, ids, pixels)
            ids += gen + [enc.tok.eos_id]
            got.append(text)
            if i > 0:
                right += text == a
                later += 1
        out.append(got)
    model.train()
    return out, right / later


def main():
    need_venv()
    torch.set_num_threads(int(os.environ.get("DEMO_THREADS", os.cpu_count())))
    scratch = os.path.join(ROOT, "scratch", "pixtral-demo")
    resume = os.environ.get("DEMO_RESUME") == "1"
    if not resume:
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(scratch)
    tekken = os.path.join(scratch, "tekken.json")
    tiny_tekken(tekken, VOCAB, MAX_SIDE)
    enc = Encoder(tekken)
    trained = {normal(q) for qs in QUESTIONS.values() for q in qs}
    assert not trained & {normal(q) for qs in HELD_OUT.values() for q in qs}, "a held-out wording is trained on"
    check_rng = random.Random(7)
    for _ in range(20):
        enc.check_template(training_turns(check_rng))
    model = (LlavaForConditionalGeneration.from_pretrained(scratch, torch_dtype=torch.float32) if resume
             else build_model()).train()
    if os.environ.get("DEMO_INIT") and not resume:
        init_from_gguf(model, os.environ["DEMO_INIT"])
        print(f"initialised from {os.environ['DEMO_INIT']}", flush=True)
    items, unseen = eval_set()
    convs = conversation_set()
    opt = torch.optim.AdamW(model.parameters(), lr=float(os.environ.get("DEMO_LR", 5e-4)), weight_decay=0.01,
                            betas=(0.9, 0.98))
    warm = min(200, max(1, STEPS // 10))
    cosine = lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, STEPS))))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * cosine(s))
    rng = random.Random(SEED + 1 if resume else SEED)  # a resumed run sees new images
    data = batches(rng, enc)
    t0 = time.time()
    for step in range(STEPS):
        ids, labels, pv, sizes = collate(next(data))
        loss = model(inputs_embeds=embed(model, ids, pv, sizes), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.4f}  {time.time() - t0:.0f} s", flush=True)
        if step % 500 == 499 or step == STEPS - 1:
            _, acc, per = evaluate(model, enc, items[:50])
            _, acc_u, _ = evaluate(model, enc, unseen[50:])
            _, acc_c = converse(model, enc, convs[:10])
            print(f"  held-out (50): {acc:.3f} {per}; unseen wordings (50): {acc_u:.3f}; "
                  f"later turns (10 conversations): {acc_c:.3f}  {time.time() - t0:.0f} s", flush=True)
            model.save_pretrained(scratch, safe_serialization=True)  # DEMO_RESUME=1 DEMO_STEPS=0 finishes from here
    model.eval()
    answers, acc, per = evaluate(model, enc, items)
    print(f"held-out accuracy (PyTorch, F32): {acc:.3f} {per}")
    answers_u, acc_u, per_u = evaluate(model, enc, unseen)
    print(f"unseen wordings (PyTorch, F32): {acc_u:.3f} {per_u}")
    conv_answers, acc_c = converse(model, enc, convs)
    print(f"conversations, turns after the first (PyTorch, F32): {acc_c:.3f}")

    model.save_pretrained(scratch, safe_serialization=True)
    hf_tokenizer(tekken, scratch)
    with open(os.path.join(scratch, "preprocessor_config.json"), "w") as f:
        json.dump({"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                   "patch_size": {"height": 16, "width": 16}, "size": {"longest_edge": MAX_SIDE},
                   "image_processor_type": "PixtralImageProcessor"}, f, indent=1)

    demo = os.path.join(FIXTURES, "demo")
    for sub in ("eval", "conv"):
        shutil.rmtree(os.path.join(demo, sub), ignore_errors=True)
        os.makedirs(os.path.join(demo, sub))
    records, records_u = [], []
    for i, ((task, im, q, a), got, (_, _, qu, _), got_u) in enumerate(zip(items, answers, unseen, answers_u)):
        name = f"{i:03}.png"
        im.save(os.path.join(demo, "eval", name), optimize=True)
        # the saved PNG is what the Rust test reads: same pixels (lossless), so the same answer
        records.append({"image": name, "task": task, "question": q, "answer": a, "torch": got})
        records_u.append({"image": name, "task": task, "question": qu, "answer": a, "torch": got_u})
    with open(os.path.join(demo, "eval.json"), "w") as f:
        json.dump({"accuracy_torch": acc, "items": records}, f, indent=1)
    with open(os.path.join(demo, "wordings.json"), "w") as f:
        json.dump({"accuracy_torch": acc_u, "trained": QUESTIONS, "items": records_u}, f, indent=1)
    conv_records = []
    for c, (turns, got) in enumerate(zip(convs, conv_answers)):
        rec, k = [], 0
        for (q, a, im), g in zip(turns, got):
            name = None
            if im is not None:
                name = f"{c:02}-{k}.png"
                im.save(os.path.join(demo, "conv", name), optimize=True)
                k += 1
            rec.append({"image": name, "question": q, "answer": a, "torch": g})
        conv_records.append({"turns": rec})
    with open(os.path.join(demo, "conversations.json"), "w") as f:
        json.dump({"accuracy_later_turns_torch": acc_c, "conversations": conv_records}, f, indent=1)

    ex = os.path.join(ROOT, "examples")
    for name, kind, colour, w, h in [("red-circle.png", "circle", "red", 160, 120),
                                     ("blue-triangle.png", "triangle", "blue", 120, 160),
                                     ("green-star.png", "star", "green", 200, 200)]:
        im = Image.new("RGB", (w, h), (245, 245, 245))
        draw_shape(ImageDraw.Draw(im), kind, w / 2, h / 2, min(w, h) * 0.35, COLOURS[colour])
        im.save(os.path.join(ex, name), optimize=True)
    im = Image.new("RGB", (160, 160), (245, 245, 245))
    d = ImageDraw.Draw(im)
    for cx, cy in [(38, 40), (118, 46), (74, 118)]:
        draw_shape(d, "square", cx, cy, 22, COLOURS["orange"])
    im.save(os.path.join(ex, "three-squares.png"), optimize=True)

    out = os.path.join(ROOT, "examples", "demo", "pixtral-demo.gguf")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cargo = ["cargo", "run", "--release", "--quiet", "--", "convert", scratch, "--outtype", "q8_0",
             "--vision-type", "f16", "--out", out, "--force"]
    print(" ".join(cargo))
    subprocess.run(cargo, check=True, cwd=ROOT)
    size = sum(os.path.getsize(os.path.join(os.path.dirname(out), f)) for f in os.listdir(os.path.dirname(out)))
    print(f"demo model: {size / 1e6:.2f} MB; held-out accuracy {acc:.3f}, unseen wordings {acc_u:.3f}, "
          f"later turns {acc_c:.3f}")


if __name__ == "__main__":
    sys.exit(main())
