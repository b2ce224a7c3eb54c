"""Images for the hardening tests (tests/hostile.rs) that the Rust side cannot easily make itself.

tests/fixtures/hostile/cmyk.jpg        a 16x8 CMYK JPEG, two solid halves
tests/fixtures/hostile/cmyk.json       PIL's RGB for the centre of each half (mistral-common converts with PIL)
tests/fixtures/hostile/anim.gif        a 3-frame animated GIF: red, green, blue frames
"""
import json
import os

from PIL import Image

from common import FIXTURES

OUT = os.path.join(FIXTURES, "hostile")


def main():
    os.makedirs(OUT, exist_ok=True)
    im = Image.new("CMYK", (16, 8), (0, 200, 200, 20))
    im.paste((200, 0, 100, 50), (8, 0, 16, 8))
    p = os.path.join(OUT, "cmyk.jpg")
    im.save(p, quality=95)
    back = Image.open(p)
    assert back.mode == "CMYK"
    rgb = back.convert("RGB")
    with open(os.path.join(OUT, "cmyk.json"), "w") as f:
        json.dump({"left": list(rgb.getpixel((3, 4))), "right": list(rgb.getpixel((12, 4)))}, f)
    frames = [Image.new("RGB", (10, 6), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    frames[0].save(os.path.join(OUT, "anim.gif"), save_all=True, append_images=frames[1:], duration=100, loop=0)
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
