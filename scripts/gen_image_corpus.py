"""A corpus of small images, one per decode path, with mistral-common's preprocessed pixels as reference
(tests/image.rs, `decode_paths_equal_mistral_common`; no Python at test time).

tests/fixtures/images/corpus/cases.json   one entry per file: name, what it exercises, PIL's mode and
                                          `info["transparency"]` on open, the bound, and (for a documented
                                          deviation, docs/images.md) what we do instead
tests/fixtures/images/corpus/<file>       the image: PNG / GIF written byte by byte here (every colour type,
                                          bit depth, tRNS form, Adam7, eXIf; GIF frames, palettes, disposal),
                                          WebP and JPEG by PIL (JPEG YCCK by flipping the Adobe transform byte)
tests/fixtures/images/corpus/<file>.npy   mistral-common's pixels (3, h, w) at max side 1024, via
                                          `ImageEncoder(ImageChunk(image=Image.open(file)))`
tests/fixtures/images/corpus/<file>.ours.npy   deviations only: the same pipeline on the image we decode to,
                                          so the test pins our documented behaviour too

Images are 16x16 (one patch, no resampling: the pixels reach the normalisation untouched), a few 32x16 or 32x32.
Run: .venv/bin/python scripts/gen_image_corpus.py
"""
import io
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image
from mistral_common.protocol.instruct.chunk import ImageChunk
from mistral_common.tokens.tokenizers.image import ImageConfig, ImageEncoder, SpecialImageIDs, transform_image

from common import FIXTURES, need_venv

OUT = os.path.join(FIXTURES, "images", "corpus")
LOSSLESS = 1e-4  # float rounding only (tests/image.rs)
# JPEG: libjpeg-turbo (PIL) and zune-jpeg (here) differ in IDCT and upsampling rounding: at most 3 8-bit steps on
# these files (0.044); the bound is tests/image.rs's JPEG bound, about 4 steps (one step is 1/255/std, about 0.015)
JPEG = 0.06
# lossy WebP: image-webp upsamples chroma like libwebp's default ("fancy") and matches it exactly on these files
WEBP_LOSSY = LOSSLESS


# ---- PNG, byte by byte ----
def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _pack_row(samples, depth):
    if depth == 16:
        return samples.astype(">u2").tobytes()
    if depth == 8:
        return samples.astype(np.uint8).tobytes()
    per, out = 8 // depth, bytearray()
    for i in range(0, len(samples), per):
        v = 0
        for j, s in enumerate(samples[i:i + per]):
            v |= int(s) << (8 - depth * (j + 1))
        out.append(v)
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png(samples, color_type, depth, plte=None, trns=None, exif=None, interlace=False):
    """samples: (h, w, channels) or (h, w) integers as stored (palette indices, gray, RGB, ...)."""
    s = np.asarray(samples)
    s = s.reshape(s.shape[0], s.shape[1], -1)
    h, w = s.shape[:2]
    if interlace:
        passes = [s[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7]
    else:
        passes = [s]
    raw = b"".join(b"\0" + _pack_row(p[y].reshape(-1), depth) for p in passes if p.size for y in range(p.shape[0]))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace)))
    if plte is not None:
        out += _chunk(b"PLTE", bytes(np.asarray(plte, np.uint8).reshape(-1)))
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    if exif is not None:
        out += _chunk(b"eXIf", exif)
    return out + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def exif_orientation(value):
    """A little-endian TIFF header with one IFD entry: Orientation (0x0112) = value."""
    return b"II*\0" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) + struct.pack("<I", 0)


# ---- GIF, byte by byte ----
def _lzw_flat(indices, min_code_size):
    """An LZW stream that never grows its code table: a clear code before each run that would widen the codes."""
    clear, end, width = 1 << min_code_size, (1 << min_code_size) + 1, min_code_size + 1
    run = (1 << min_code_size) - 2
    codes = []
    for i, v in enumerate(indices):
        if i % run == 0:
            codes.append(clear)
        codes.append(int(v))
    codes.append(end)
    acc, n, out = 0, 0, bytearray()
    for c in codes:
        acc |= c << n
        n += width
        while n >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            n -= 8
    if n:
        out.append(acc)
    return bytes(out)


def _sub_blocks(data):
    return b"".join(bytes([len(data[i:i + 255])]) + data[i:i + 255] for i in range(0, len(data), 255)) + b"\0"


def _palette(colors, bits):
    return bytes(np.asarray(colors, np.uint8).reshape(-1)) + b"\0" * (3 * ((1 << bits) - len(colors)))


def gif(screen, frames, global_pal=None, bits=2, bg=0):
    """frames: dicts x, y, idx ((h, w) indices); optional trns, disposal, local_pal, interlace."""
    w, h = screen
    flags = 0x80 | ((bits - 1) << 4) | (bits - 1) if global_pal is not None else 0
    out = b"GIF89a" + struct.pack("<HHBBB", w, h, flags, bg, 0)
    if global_pal is not None:
        out += _palette(global_pal, bits)
    if len(frames) > 1:
        out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for f in frames:
        idx = np.asarray(f["idx"])
        fh, fw = idx.shape
        trns = f.get("trns")
        out += b"!\xf9\x04" + struct.pack("<BHB", (f.get("disposal", 0) << 2) | (trns is not None), 10, trns or 0) + b"\0"
        lp = f.get("local_pal")
        iflags = (0x80 | (bits - 1) if lp is not None else 0) | (0x40 if f.get("interlace") else 0)
        out += b"," + struct.pack("<HHHHB", f["x"], f["y"], fw, fh, iflags)
        if lp is not None:
            out += _palette(lp, bits)
        if f.get("interlace"):
            idx = idx[list(range(0, fh, 8)) + list(range(4, fh, 8)) + list(range(2, fh, 4)) + list(range(1, fh, 2))]
        mcs = max(2, bits)
        out += bytes([mcs]) + _sub_blocks(_lzw_flat(idx.reshape(-1), mcs))
    return out + b";"


# ---- pixel patterns ----
def ramp(h, w, mul=1, add=0):
    return (np.arange(h * w).reshape(h, w) * mul + add) % 256


def colors(h, w):
    """Every pixel a different colour, all channels busy."""
    i = np.arange(h * w).reshape(h, w)
    return np.stack([(i * 7 + 3) % 256, (i * 13 + 100) % 256, (255 - i) % 256], -1)


def red_blue_quarter(n):
    a = np.zeros((n, n, 3), np.uint16)
    a[...] = (255, 0, 0)
    a[: n // 2, n // 2:] = (0, 0, 255)
    return a


def pil_bytes(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


PAL4 = [(10, 20, 30), (200, 0, 0), (0, 200, 0), (0, 0, 200)]


def cases():
    """(file, bytes, what it exercises, bound, deviation or None, the image we decode to for a deviation)."""
    c = []

    def add(name, data, what, bound=LOSSLESS, deviation=None, ours=None):
        c.append((name, data, what, bound, deviation, ours))

    n16 = (16, 16)
    # -- PNG: tRNS in each colour type --
    add("png_rgb_trns.png", png(red_blue_quarter(32), 2, 8, trns=struct.pack(">HHH", 255, 0, 0)),
        "truecolor + tRNS marking red transparent (issue 12 §4): PIL opens RGB with info['transparency']; "
        "mistral-common keeps RGB as is, red stays red")
    rgb16 = (colors(*n16).astype(np.uint16) * 257) ^ (np.arange(256).reshape(16, 16, 1) * 37 % 256)
    add("png_rgb16_trns.png", png(rgb16, 2, 16, trns=struct.pack(">HHH", *rgb16[3, 5])),
        "16-bit truecolor + tRNS: high byte of each sample, tRNS ignored like 8-bit")
    add("png_gray8_trns.png", png(ramp(*n16), 0, 8, trns=struct.pack(">H", 100)),
        "8-bit gray + tRNS 100: PIL 'L' + transparency, convert('RGBA') makes 100 transparent: white")
    add("png_gray4_trns.png", png(ramp(*n16) % 16, 0, 4, trns=struct.pack(">H", 0)),
        "4-bit gray + tRNS 0 (scaled by 17): sample 0 transparent")
    add("png_gray2_trns.png", png(ramp(*n16) % 4, 0, 2, trns=struct.pack(">H", 1)),
        "2-bit gray + tRNS 1: PIL compares the value scaled to 8 bits (0, 85, 170, 255) with 1: nothing transparent")
    add("png_gray1_trns.png", png(ramp(*n16) % 3 == 1, 0, 1, trns=struct.pack(">H", 0)),
        "1-bit gray + tRNS 0: black transparent")
    g16 = (np.arange(256).reshape(16, 16) * 257 + np.arange(256).reshape(16, 16) * 3) % 65536
    hi = Image.fromarray((g16 >> 8).astype(np.uint8), "L")
    add("png_gray16.png", png(g16, 0, 16), "16-bit gray: PIL 'I;16'; convert('RGBA') clips at 255", LOSSLESS,
        "16-bit gray: we take the high byte of each sample, PIL clips the 16-bit value at 255", hi)
    hi_t = hi.convert("RGBA")
    a = np.array(hi_t)
    a[g16 == g16[2, 7], 3] = 0
    add("png_gray16_trns.png", png(g16, 0, 16, trns=struct.pack(">H", int(g16[2, 7]))),
        "16-bit gray + tRNS", LOSSLESS,
        "16-bit gray + tRNS: high byte; the sample equal to tRNS is transparent (PNG's rule), where PIL compares "
        "the clipped value with tRNS mod 256", Image.fromarray(a, "RGBA"))
    # -- PNG: alpha, 8 and 16 bits --
    add("png_la8.png", png(np.stack([ramp(*n16, 7, 5), ramp(*n16)], -1), 4, 8),
        "gray + alpha, every alpha value: composited on white")
    la16 = np.stack([ramp(*n16, 7, 5) * 257 + 99, ramp(*n16) * 257 + 200], -1)
    add("png_la16.png", png(la16, 4, 16), "16-bit gray + alpha: PIL opens as RGBA from the high bytes")
    rgba = np.concatenate([colors(*n16), ramp(*n16, 1, 0)[..., None]], -1)
    add("png_rgba8.png", png(rgba, 6, 8), "RGBA, every alpha value: PIL's paste on white, then RGB")
    add("png_rgba16.png", png(rgba.astype(np.uint16) * 257 + 77, 6, 16), "16-bit RGBA: high bytes, then as RGBA")
    # -- PNG: palettes --
    pal = [(i * 16, 255 - i * 16, (i * 40) % 256) for i in range(16)]
    add("png_pal8_trns.png", png(ramp(*n16) % 16, 3, 8, plte=pal, trns=bytes(range(0, 200, 20))),
        "8-bit palette, tRNS shorter than PLTE with graded alphas: PIL puts them into the palette")
    add("png_pal4_trns1.png", png(ramp(*n16) % 16, 3, 4, plte=pal, trns=b"\xff\xff\xff\x00"),
        "4-bit palette, one fully transparent entry: PIL info['transparency'] = 3")
    add("png_pal1.png", png(ramp(*n16) % 3 == 0, 3, 1, plte=[(30, 60, 90), (250, 200, 10)]), "1-bit palette")
    add("png_gray2.png", png(ramp(*n16) % 4, 0, 2), "2-bit gray, no tRNS: scaled by 85")
    add("png_rgb_adam7.png", png(colors(*n16), 2, 8, interlace=True), "Adam7-interlaced RGB")
    add("png_exif6.png", png(colors(16, 32), 2, 8, exif=exif_orientation(6)),
        "eXIf Orientation=6 (rotate 90): mistral-common does not apply it (no exif_transpose), nor do we")
    frames = [Image.fromarray(colors(*n16).astype(np.uint8)), Image.new("RGB", n16, (0, 255, 0))]
    add("png_apng.png", pil_bytes(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "APNG: PIL opens the first frame (the default image)")
    # -- GIF --
    idx = ramp(*n16, 1, 0) % 4
    add("gif_full.gif", gif(n16, [dict(x=0, y=0, idx=idx)], PAL4), "one full frame, global palette")
    add("gif_trns.gif", gif(n16, [dict(x=0, y=0, idx=idx, trns=2)], PAL4),
        "transparency index 2: PIL 'P' + info['transparency']: white")
    part = ramp(8, 6, 1, 0) % 4
    add("gif_partial_bg.gif", gif(n16, [dict(x=3, y=5, idx=part)], PAL4, bg=3),
        "first frame smaller than the screen, background index 3, no transparency: PIL fills with index 0 "
        "(colour 0), not the background")
    add("gif_partial_trns.gif", gif(n16, [dict(x=3, y=5, idx=part, trns=3)], PAL4, bg=1),
        "partial first frame with transparency index: PIL fills the rest with that index: white")
    lpal = [(50, 50, 50), (60, 0, 0), (0, 70, 0), (0, 0, 80)]
    add("gif_local_pal.gif", gif(n16, [dict(x=2, y=1, idx=part, local_pal=lpal)], PAL4),
        "partial first frame with a local palette: the rest is colour 0 of the local palette")
    add("gif_anim_disposal.gif", gif(n16, [dict(x=0, y=0, idx=idx, disposal=2),
                                            dict(x=4, y=4, idx=part, disposal=3, trns=0),
                                            dict(x=0, y=0, idx=3 - idx, disposal=1)], PAL4, bg=2),
        "3 frames, disposal 2 / 3 / 1: the first frame only")
    add("gif_interlaced.gif", gif(n16, [dict(x=0, y=0, idx=idx, interlace=True)], PAL4), "interlaced frame")
    add("gif_no_palette.gif", gif(n16, [dict(x=0, y=0, idx=idx)], None),
        "no colour table at all: PIL opens 'L' with the index as the gray level")
    add("gif_short_palette.gif", gif(n16, [dict(x=0, y=0, idx=idx)], PAL4[1:3], bits=1),
        "a 2-colour table and indices 2, 3 past it: PIL reads them black")
    add("gif_outside_screen.gif", gif((12, 12), [dict(x=4, y=4, idx=ramp(12, 12, 1, 0) % 4)], PAL4),
        "first frame reaching past the 12x12 screen: PIL grows the image to 16x16")
    # -- WebP (PIL / libwebp writes them) --
    rgba8 = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    rgb8 = Image.fromarray(colors(*n16).astype(np.uint8), "RGB")
    add("webp_lossless_alpha.webp", pil_bytes(rgba8, "WEBP", lossless=True, exact=True), "lossless WebP with alpha")
    add("webp_lossless.webp", pil_bytes(rgb8, "WEBP", lossless=True), "lossless WebP, no alpha")
    add("webp_lossy_alpha.webp", pil_bytes(rgba8, "WEBP", quality=90), "lossy WebP with alpha (ALPH chunk)", WEBP_LOSSY)
    add("webp_lossy.webp", pil_bytes(rgb8, "WEBP", quality=90), "lossy WebP, no alpha", WEBP_LOSSY)
    anim = [Image.new("RGBA", n16, (255, 0, 0, 128)), rgba8]
    add("webp_anim.webp", pil_bytes(anim[0], "WEBP", save_all=True, append_images=anim[1:], lossless=True,
                                    background=(0, 0, 255, 255)),
        "animated WebP: the first frame; the background colour is a hint both ignore")
    # -- JPEG (PIL / libjpeg-turbo writes them; decoders differ, so a bound from the data) --
    photo = Image.fromarray(np.clip(colors(*n16) // 2 + 60, 0, 255).astype(np.uint8))
    add("jpeg_420.jpg", pil_bytes(photo, "JPEG", quality=92), "baseline YCbCr 4:2:0", JPEG)
    add("jpeg_444_progressive.jpg", pil_bytes(photo, "JPEG", quality=92, subsampling=0, progressive=True),
        "progressive YCbCr 4:4:4", JPEG)
    add("jpeg_gray.jpg", pil_bytes(photo.convert("L"), "JPEG", quality=92), "grayscale", JPEG)
    cmyk = Image.fromarray(np.stack([ramp(*n16, 3, 0), ramp(*n16, 5, 40), ramp(*n16, 11, 90),
                                     ramp(*n16, 1, 0) // 4], -1).astype(np.uint8), "CMYK")
    cmyk_bytes = pil_bytes(cmyk, "JPEG", quality=95)
    add("jpeg_cmyk.jpg", cmyk_bytes, "Adobe CMYK (APP14 transform 0, inverted samples)", JPEG)
    at = cmyk_bytes.index(b"Adobe")
    assert cmyk_bytes[at + 11] == 0, "PIL wrote an unexpected Adobe transform"
    ycck = cmyk_bytes[: at + 11] + b"\x02" + cmyk_bytes[at + 12:]
    add("jpeg_ycck.jpg", ycck, "Adobe YCCK (APP14 transform 2): the CMYK file's transform byte flipped, "
        "so both decoders read the same scans as Y, Cb, Cr, K", JPEG)
    ex = Image.Exif()
    ex[0x0112] = 6
    add("jpeg_exif6.jpg", pil_bytes(Image.fromarray(np.clip(colors(16, 32) // 2 + 60, 0, 255).astype(np.uint8)),
                                    "JPEG", quality=92, exif=ex.tobytes()),
        "EXIF Orientation=6: not applied by mistral-common, nor by us", JPEG)
    return c


def mc_pixels(im, max_side=1024):
    """mistral-common's pixels through its public image path (ImageChunk -> ImageEncoder)."""
    enc = ImageEncoder(ImageConfig(image_patch_size=16, max_image_size=max_side),
                       SpecialImageIDs(img=10, img_break=12, img_end=13))
    px = np.asarray(enc(ImageChunk(image=im)).image, dtype=np.float32)
    gw, gh = enc._image_to_num_tokens(im)
    direct = transform_image(im, (gw * 16, gh * 16)).astype(np.float32)
    assert np.array_equal(px, direct), "ImageEncoder and transform_image disagree"
    return px


def main():
    need_venv()
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    table = []
    for name, data, what, bound, deviation, ours in cases():
        path = os.path.join(OUT, name)
        with open(path, "wb") as f:
            f.write(data)
        im = Image.open(path)
        mode, trns = im.mode, im.info.get("transparency")
        px = mc_pixels(Image.open(path))
        np.save(path + ".npy", px)
        entry = {"file": name, "what": what, "pil_mode": mode, "pil_size": list(im.size),
                 "pil_transparency": trns if not isinstance(trns, bytes) else list(trns), "bound": bound}
        if deviation:
            entry["deviation"] = deviation
            theirs = px
            px = mc_pixels(ours)
            np.save(path + ".ours.npy", px)
            entry["deviation_max_abs"] = float(np.abs(theirs - px).max())
        table.append(entry)
        print(f"{name:28s} {mode:5s} {str(im.size):9s} trns={entry['pil_transparency']!s:12.12s} {len(data):5d} B")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(table, f, indent=1)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{len(table)} cases, {total / 1024:.0f} KiB in {OUT}")


if __name__ == "__main__":
    main()
