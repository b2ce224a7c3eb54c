"""Train the demo model: a tiny Pixtral (same architecture and code path as Pixtral 12B) that answers questions
about synthetic images, so `pixtral run` / `pixtral chat` work on a fresh clone with no download.

    .venv/bin/python scripts/train_demo.py          # seeded, CPU, ~15 minutes on 2 cores

Images are drawn on the fly: coloured shapes (circle, square, triangle, star) at varied sizes, aspect ratios and
positions, 1-4 copies to count, and printed digits. Questions and answers:

    shape     "What shape is this?"            -> "A circle."
    colour    "What colour is the shape?"      -> "Red."
    describe  "Describe the image."            -> "A red circle."
    count     "How many shapes are there?"     -> "3"
    digit     "What number is written?"        -> "7"
    (text)    "Hello"                          -> a greeting that says what it can do

Absolute positions ("top left") were tried and dropped: the ViT has no absolute position signal (RoPE-2D is
relative), and a tiny one did not learn them from borders in minutes (4-5 of 8 right after 2000 steps).

A quarter of the training conversations have a second turn about the same image (the REPL's case).
Tokens and pixels come from mistral-common, as at inference: the real Tekken file cut to 1000 specials + 1048
BPE ranks (vocab 2048), images at most 128 px a side (8x8 patches of 16).

Writes
    scratch/pixtral-demo/                      the trained model, HF Llava layout, F32 (input of `pixtral convert`)
    examples/demo/pixtral-demo.gguf        Q8_0 text + pixtral-demo.mmproj.gguf (F16 vision), via the Rust converter
    examples/*.png                         a few example images
    tests/fixtures/demo/eval/NNN.png       100 held-out images (another seed) and eval.json with the questions,
                                           expected answers and this PyTorch model's greedy answers
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
QUESTIONS = {
    "shape": ["What shape is this?", "What shape is it?", "Which shape is in the image?", "Name the shape."],
    "colour": ["What colour is the shape?", "What color is it?", "Which colour is this shape?"],
    "describe": ["Describe the image.", "What is in the picture?", "Describe this image in a few words."],
    "count": ["How many shapes are there?", "Count the shapes.", "How many are there?"],
    "digit": ["What number is written?", "Which digit is this?", "Read the number."],
}
GREETING = "Hello! Show me an image and ask about its shape, colour, count or digit."
TEXT_ONLY = [("Hi", GREETING), ("Hello", GREETING), ("Hello!", GREETING), ("Who are you?", GREETING),
             ("What can you do?", GREETING), ("Thanks!", "You are welcome.")]


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


def single_shape(rng):
    im, d, w, h = canvas(rng)
    kind, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    r = min(w, h) * rng.uniform(0.28, 0.45)
    draw_shape(d, kind, rng.uniform(r, w - r), rng.uniform(r, h - r), r, jitter(rng, COLOURS[colour]))
    return im, kind, colour


def sample_image(rng, task):
    """(image, answer) for one task."""
    if task in ("shape", "colour", "describe"):
        im, kind, colour = single_shape(rng)
        return im, {"shape": f"A {kind}.", "colour": f"{colour.capitalize()}.", "describe": f"A {colour} {kind}."}[task]
    if task == "count":
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
        return im, str(n)
    # digit
    im, d, w, h = canvas(rng, 48, 160)
    digit = rng.randint(0, 9)
    size = int(min(h * rng.uniform(0.55, 0.85), w * 1.1))
    font = ImageFont.load_default(size=max(size, 12))
    x0, y0, x1, y1 = d.textbbox((0, 0), str(digit), font=font)
    tx = rng.uniform(0, max(0.0, w - (x1 - x0))) - x0
    ty = rng.uniform(0, max(0.0, h - (y1 - y0))) - y0
    ink = rng.choice([(0, 0, 0), (40, 40, 40)] + list(COLOURS.values()))
    d.text((tx, ty), str(digit), fill=ink, font=font)
    return im, str(digit)


TASKS = list(QUESTIONS)


class Encoder:
    def __init__(self, tekken):
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
        self.mt = MistralTokenizer.from_file(tekken)
        self.tok = self.mt.instruct_tokenizer.tokenizer

    def conversation(self, turns, image):
        """turns [(question, answer)], the image in the first user message -> (ids, labels, pixels)."""
        from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
        from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        msgs, ids, labels, pixels = [], [], [], None
        for i, (q, a) in enumerate(turns):
            content = [ImageChunk(image=image), TextChunk(text=q)] if i == 0 and image is not None else q
            msgs.append(UserMessage(content=content))
            enc = self.mt.encode_chat_completion(ChatCompletionRequest(messages=msgs))
            assert enc.tokens[:len(ids)] == ids, "multi-turn prefix property"
            if enc.images:
                pixels = np.asarray(enc.images[0], dtype=np.float32)
            new = enc.tokens[len(ids):]
            ans = self.tok.encode(a, bos=False, eos=True)
            ids += new + ans
            labels += [-100] * len(new) + ans
            msgs.append(AssistantMessage(content=a))
        return ids, labels, pixels

    def prompt(self, q, image):
        from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
        from mistral_common.protocol.instruct.messages import UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest
        content = [ImageChunk(image=image), TextChunk(text=q)] if image is not None else q
        enc = self.mt.encode_chat_completion(ChatCompletionRequest(messages=[UserMessage(content=content)]))
        return enc.tokens, (np.asarray(enc.images[0], dtype=np.float32) if enc.images else None)


def training_sample(rng, enc):
    if rng.random() < 0.05:
        return enc.conversation([rng.choice(TEXT_ONLY)], None)
    task = rng.choice(TASKS)
    if task in ("shape", "colour", "describe") and rng.random() < 0.35:
        # two turns about one single-shape image: two of shape / colour / describe
        im, kind, colour = single_shape(rng)
        answers = {"shape": f"A {kind}.", "colour": f"{colour.capitalize()}.", "describe": f"A {colour} {kind}."}
        t1, t2 = rng.sample(list(answers), 2)
        return enc.conversation([(rng.choice(QUESTIONS[t1]), answers[t1]), (rng.choice(QUESTIONS[t2]), answers[t2])], im)
    im, a = sample_image(rng, task)
    return enc.conversation([(rng.choice(QUESTIONS[task]), a)], im)


def collate(samples):
    n = max(len(s[0]) for s in samples)
    ids = torch.tensor([s[0] + [11] * (n - len(s[0])) for s in samples])
    labels = torch.tensor([s[1] + [-100] * (n - len(s[1])) for s in samples])
    imgs = [s[2] for s in samples if s[2] is not None]
    if not imgs:
        return ids, labels, None, None
    hmax, wmax = max(p.shape[1] for p in imgs), max(p.shape[2] for p in imgs)
    pv = torch.zeros(len(imgs), 3, hmax, wmax)
    for i, p in enumerate(imgs):
        pv[i, :, :p.shape[1], :p.shape[2]] = torch.from_numpy(p)
    sizes = torch.tensor([[p.shape[1], p.shape[2]] for p in imgs])
    return ids, labels, pv, sizes


def build_model():
    torch.manual_seed(SEED)
    cfg = LlavaConfig(text_config=MistralConfig(**TEXT), vision_config=PixtralVisionConfig(**VISION),
                      image_token_index=10, projector_hidden_act="gelu", vision_feature_layer=-1,
                      vision_feature_select_strategy="full", multimodal_projector_bias=True, tie_word_embeddings=False)
    return LlavaForConditionalGeneration(cfg)


@torch.no_grad()
def greedy(model, enc, ids, pixels, max_new=24):
    kw = {}
    if pixels is not None:
        kw = dict(pixel_values=torch.from_numpy(pixels)[None], image_sizes=torch.tensor([pixels.shape[1:]]))
    out = []
    seq = list(ids)
    for _ in range(max_new):
        logits = model(input_ids=torch.tensor([seq]), **kw).logits[0, -1]
        t = int(logits.argmax())
        if t == enc.tok.eos_id:
            break
        out.append(t)
        seq.append(t)
    return enc.tok.decode(out)


def eval_set(n=100):
    """The held-out questions: another seed, every image task in turn."""
    rng = random.Random(EVAL_SEED)
    items = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        im, a = sample_image(rng, task)
        items.append((task, im, rng.choice(QUESTIONS[task]), a))
    return items


def evaluate(model, enc, items):
    model.eval()
    answers, per = [], {}
    for task, im, q, a in items:
        ids, px = enc.prompt(q, im)
        got = greedy(model, enc, ids, px)
        answers.append(got)
        ok, n = per.get(task, (0, 0))
        per[task] = (ok + (got == a), n + 1)
    model.train()
    total = sum(v[0] for v in per.values())
    return answers, total / len(items), {k: f"{v[0]}/{v[1]}" for k, v in per.items()}


def main():
    need_venv()
    torch.set_num_threads(os.cpu_count())
    scratch = os.path.join(ROOT, "scratch", "pixtral-demo")
    # DEMO_RESUME=1: continue from the model in scratch/pixtral-demo (more steps at DEMO_LR) instead of from scratch
    resume = os.environ.get("DEMO_RESUME") == "1"
    if not resume:
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(scratch)
    tekken = os.path.join(scratch, "tekken.json")
    tiny_tekken(tekken, VOCAB, MAX_SIDE)
    enc = Encoder(tekken)
    model = (LlavaForConditionalGeneration.from_pretrained(scratch, torch_dtype=torch.float32) if resume
             else build_model()).train()
    items = eval_set()
    opt = torch.optim.AdamW(model.parameters(), lr=float(os.environ.get("DEMO_LR", 5e-4)), weight_decay=0.01,
                            betas=(0.9, 0.98))
    warm = 200
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / STEPS)))))
    rng = random.Random(SEED + 1 if resume else SEED)  # a resumed run sees new images
    t0 = time.time()
    for step in range(STEPS):
        ids, labels, pv, sizes = collate([training_sample(rng, enc) for _ in range(BATCH)])
        kw = dict(pixel_values=pv, image_sizes=sizes) if pv is not None else {}
        loss = model(input_ids=ids, labels=labels, **kw).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.4f}  {time.time() - t0:.0f} s", flush=True)
        if step % 500 == 499:
            _, acc, per = evaluate(model, enc, items[:50])
            print(f"  held-out (50): {acc:.3f} {per}", flush=True)
            if acc == 1.0 and step + 1 >= STEPS // 2:
                print("  all right: stopping early", flush=True)
                break
    model.eval()
    answers, acc, per = evaluate(model, enc, items)
    print(f"held-out accuracy (PyTorch, F32): {acc:.3f} {per}")

    model.save_pretrained(scratch, safe_serialization=True)
    hf_tokenizer(tekken, scratch)
    with open(os.path.join(scratch, "preprocessor_config.json"), "w") as f:
        json.dump({"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                   "patch_size": {"height": 16, "width": 16}, "size": {"longest_edge": MAX_SIDE},
                   "image_processor_type": "PixtralImageProcessor"}, f, indent=1)

    ev = os.path.join(FIXTURES, "demo", "eval")
    shutil.rmtree(ev, ignore_errors=True)
    os.makedirs(ev)
    records = []
    for i, ((task, im, q, a), got) in enumerate(zip(items, answers)):
        name = f"{i:03}.png"
        im.save(os.path.join(ev, name), optimize=True)
        # the saved PNG is what the Rust test reads: same pixels (lossless), so the same answer
        records.append({"image": name, "task": task, "question": q, "answer": a, "torch": got})
    with open(os.path.join(FIXTURES, "demo", "eval.json"), "w") as f:
        json.dump({"accuracy_torch": acc, "items": records}, f, indent=1)

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
    print(f"demo model: {size / 1e6:.2f} MB; held-out accuracy {acc:.3f}")


if __name__ == "__main__":
    sys.exit(main())
