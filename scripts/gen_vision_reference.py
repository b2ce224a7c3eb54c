"""Reference outputs of the image path (no Python at test time).

tests/fixtures/images/*.png|jpg          test images (RGB, RGBA, gray, palette with transparency, a large
                                         photo-like image, a JPEG), drawn with a fixed seed
tests/fixtures/images/<name>.<M>.npy     mistral-common's preprocessed pixels (3, h, w) at max side M
tests/fixtures/images/grids.json         mistral-common's (gw, gh) for 200+ sizes at several max sides
tests/fixtures/images/corpus/            one small image per decode path and mistral-common's pixels
                                         (scripts/gen_image_corpus.py, which also runs alone)
tests/fixtures/tiny/vision/<case>.*      for the tiny model: prompt ids (mistral-common, with images), pixel
                                         values, HF vision embeddings after the adapter, HF logits at every position
"""
import json
import os

import numpy as np
import torch
from PIL import Image, ImageDraw
from mistral_common.tokens.tokenizers.image import ImageConfig, ImageEncoder, SpecialImageIDs, transform_image

import gen_image_corpus
from common import FIXTURES

IMG = os.path.join(FIXTURES, "images")
rng = np.random.default_rng(77)


def photo_like(w, h):
    """Smooth gradients + blobs + noise: resampling-sensitive like a photo, deterministic."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 100 * np.sin(x / 37.0) * np.cos(y / 23.0)
    g = 127 + 100 * np.sin((x + y) / 51.0)
    b = 127 + 100 * np.cos(np.hypot(x - w / 3, y - h / 2) / 19.0)
    img = np.stack([r, g, b], -1)
    img[(x.astype(int) // 40 + y.astype(int) // 40) % 7 == 0] = (250, 250, 250)  # sharp edges
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def shapes(w, h, mode):
    im = Image.new("RGB", (w, h), (30, 60, 200))
    d = ImageDraw.Draw(im)
    d.ellipse([w * 0.1, h * 0.1, w * 0.6, h * 0.7], fill=(220, 20, 30))
    d.rectangle([w * 0.5, h * 0.4, w * 0.95, h * 0.95], fill=(250, 240, 10))
    if mode == "RGBA":
        a = Image.new("L", (w, h), 0)
        ImageDraw.Draw(a).ellipse([0, 0, w - 1, h - 1], fill=200)
        im.putalpha(a)
    elif mode == "L":
        im = im.convert("L")
    elif mode == "P":
        im = im.convert("P", palette=Image.ADAPTIVE, colors=8)
        im.info["transparency"] = 0
    return im


def write_images():
    os.makedirs(IMG, exist_ok=True)
    images = {
        "rgb_100x60.png": shapes(100, 60, "RGB"),
        "rgba_37x150.png": shapes(37, 150, "RGBA"),
        "gray_64x64.png": shapes(64, 64, "L"),
        "palette_45x31.png": shapes(45, 31, "P"),
        "photo_1100x700.png": photo_like(1100, 700),
        "photo_80x50.jpg": photo_like(80, 50),
    }
    for name, im in images.items():
        kw = {"quality": 92} if name.endswith(".jpg") else {}
        if name.startswith("palette"):
            kw["transparency"] = 0
        im.save(os.path.join(IMG, name), **kw)
    return list(images)


def mc_pixels(path, max_side):
    enc = ImageEncoder(ImageConfig(image_patch_size=16, max_image_size=max_side), SpecialImageIDs(img=10, img_break=12, img_end=13))
    im = Image.open(path)
    w, h = enc._image_to_num_tokens(im)
    return transform_image(im, (w * 16, h * 16)).astype(np.float32), (w, h)


VISION_CASES = {
    "img1": {"system": None, "chunks": [("image", "rgb_100x60.png"), ("text", "What shape is this?")]},
    "img2": {"system": "Be brief.", "chunks": [("image", "rgba_37x150.png"), ("text", "Compare it with"),
                                               ("image", "gray_64x64.png"), ("text", "please.")]},
}


def tiny_vision_reference():
    """mistral-common ids + pixels, then HF (its own preprocessing replaced by those pixels): adapter outputs
    for all images as one sequence, and logits at every position."""
    from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
    from mistral_common.protocol.instruct.messages import SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
    from transformers import LlavaForConditionalGeneration

    tiny = os.path.join(FIXTURES, "tiny")
    out = os.path.join(tiny, "vision")
    os.makedirs(out, exist_ok=True)
    mt = MistralTokenizer.from_file(os.path.join(tiny, "mistral", "tekken.json"))
    model = LlavaForConditionalGeneration.from_pretrained(os.path.join(tiny, "hf"), torch_dtype=torch.float32).eval()
    for name, case in VISION_CASES.items():
        chunks = [ImageChunk(image=Image.open(os.path.join(IMG, v))) if k == "image" else TextChunk(text=v)
                  for k, v in case["chunks"]]
        msgs = ([SystemMessage(content=case["system"])] if case["system"] else []) + [UserMessage(content=chunks)]
        enc = mt.encode_chat_completion(ChatCompletionRequest(messages=msgs))
        images = [torch.from_numpy(np.asarray(im, dtype=np.float32)) for im in enc.images]
        hmax = max(i.shape[1] for i in images)
        wmax = max(i.shape[2] for i in images)
        pixel_values = torch.zeros(len(images), 3, hmax, wmax)
        for i, im in enumerate(images):
            pixel_values[i, :, : im.shape[1], : im.shape[2]] = im
        image_sizes = torch.tensor([[im.shape[1], im.shape[2]] for im in images])
        with torch.no_grad():
            feats = model.get_image_features(pixel_values=pixel_values, image_sizes=image_sizes,
                                             vision_feature_layer=-1, vision_feature_select_strategy="full")
            feats = getattr(feats, "pooler_output", feats)
            emb = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats], 0).float().numpy()
            logits = model(input_ids=torch.tensor([enc.tokens]), pixel_values=pixel_values,
                           image_sizes=image_sizes).logits[0].float().numpy()
        np.save(os.path.join(out, f"{name}.emb.npy"), emb.astype(np.float32))
        np.save(os.path.join(out, f"{name}.logits.npy"), logits.astype(np.float32))
        grids = [[im.shape[2] // 16, im.shape[1] // 16] for im in images]
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"ids": enc.tokens, "system": case["system"], "chunks": case["chunks"], "grids": grids}, f, indent=1)
        print(name, len(enc.tokens), "tokens, grids", grids, "embeddings", emb.shape)


def main():
    names = write_images()
    for name in names:
        # 1024: the small images as they are; 128 / 256: downscaling (the large one only at 256 to stay small)
        for m in ([256] if name.startswith("photo_1100") else [1024, 128]):
            px, _ = mc_pixels(os.path.join(IMG, name), m)
            np.save(os.path.join(IMG, f"{name}.{m}.npy"), px)
    sizes = [(1, 1), (1, 5000), (5000, 1), (17, 17), (1024, 1024), (1025, 1023), (4000, 3000), (384, 50), (16, 16),
             (15, 17), (33, 31), (2048, 1), (1, 2048), (1023, 1025), (3000, 4000), (1280, 720), (720, 1280)]
    sizes += [(int(a), int(b)) for a, b in rng.integers(1, 6000, (200, 2))]
    grids = []
    for m in [1024, 512, 128]:
        enc = ImageEncoder(ImageConfig(image_patch_size=16, max_image_size=m), SpecialImageIDs(img=10, img_break=12, img_end=13))
        for w, h in sizes:
            gw, gh = enc._image_to_num_tokens(Image.new("RGB", (w, h)))
            grids.append({"w": w, "h": h, "max_side": m, "gw": gw, "gh": gh})
    with open(os.path.join(IMG, "grids.json"), "w") as f:
        json.dump(grids, f)
    print("images and grids written:", len(grids), "grid cases")
    gen_image_corpus.main()
    tiny_vision_reference()


if __name__ == "__main__":
    main()
