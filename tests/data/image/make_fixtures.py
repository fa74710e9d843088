#!/usr/bin/python3
"""Regenerate the image-module fixtures in this directory with Debian's Pillow.

Run with Debian's interpreter (python3-pil), from anywhere:
    /usr/bin/python3 tests/data/image/make_fixtures.py

What it writes (all small, deterministic):
  exif_<k>.jpg|png|webp 24x16 upright picture stored with EXIF orientation k = 1..8 (the
                        stored pixels are the inverse transform, so every file *displays*
                        the same picture: red top-left, green top-right, blue bottom-left,
                        white bottom-right); PNG and WebP are lossless
  exif_6_rgba.png       the same, orientation 6, bottom-right quadrant transparent
  gray.png, gray_alpha.png, rgba.png, palette.png, rgba.webp   colour-mode cases (values in the test)
  in_*.png              resize inputs (noise, edges and gradients)
  resize_*.png          PIL Image.resize((w, h), Image.BICUBIC) of an input
  pre_*.png             CLIP preprocessing of an input before normalisation: torchvision
                        Resize(size) (shorter side to size, other side int(size*long/short))
                        with PIL bicubic, then CenterCrop(size) (top = int(round((h-size)/2)))
  cases.txt             one line per case: "resize <in> <out> <w> <h>" or "preprocess <in> <out> <size>"
"""
import os
import random

import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
BICUBIC = Image.BICUBIC


def path(name):
    return os.path.join(HERE, name)


def noise(w, h, seed):
    rng = random.Random(seed)
    im = Image.new("RGB", (w, h))
    im.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(w * h)])
    return im


def pattern(w, h, seed):
    """Gradients, hard edges, thin lines and a noise block: every regime of the filter."""
    rng = random.Random(seed)
    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            r = (x * 255) // max(1, w - 1)
            g = (y * 255) // max(1, h - 1)
            b = 255 if ((x // 37) + (y // 29)) % 2 else 0
            if x % 50 == 7 or y % 41 == 3:
                r, g, b = 255 - r, 255 - g, 255 - b
            px[x, y] = (r, g, b)
    bw, bh = min(96, w // 3), min(96, h // 3)
    for y in range(h // 3, h // 3 + bh):
        for x in range(w // 3, w // 3 + bw):
            px[x, y] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    return im


def clip_preprocess_uint8(im, size):
    # torchvision.transforms.Resize(size) on a PIL image: shorter side to size, the other
    # int(size * long / short) (truncation), PIL bicubic (antialiased).
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    ow, oh = (new_short, new_long) if w <= h else (new_long, new_short)
    if (ow, oh) != (w, h):
        im = im.resize((ow, oh), BICUBIC)
    # torchvision.transforms.CenterCrop(size): Python's round (half to even).
    top = int(round((oh - size) / 2.0))
    left = int(round((ow - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def exif_fixtures():
    w, h = 24, 16
    upright = Image.new("RGB", (w, h))
    px = upright.load()
    for y in range(h):
        for x in range(w):
            left, top = x < w // 2, y < h // 2
            px[x, y] = {(True, True): (255, 0, 0), (False, True): (0, 255, 0),
                        (True, False): (0, 0, 255), (False, False): (255, 255, 255)}[(left, top)]
    # ImageOps.exif_transpose applies these to the stored pixels to get the upright view;
    # store the inverse so the display is `upright`.
    T = Image.Transpose
    to_upright = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
                  6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}
    inverse = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
               6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}
    from PIL import ImageOps
    for k in range(1, 9):
        stored = upright if k == 1 else upright.transpose(inverse[k])
        exif = Image.Exif()
        exif[0x0112] = k
        assert k == 1 or stored.transpose(to_upright[k]).tobytes() == upright.tobytes(), k
        stored.save(path(f"exif_{k}.jpg"), quality=95, exif=exif.tobytes())
        stored.save(path(f"exif_{k}.png"), exif=exif.tobytes())
        stored.save(path(f"exif_{k}.webp"), lossless=True, exact=True, exif=exif.tobytes())
        for ext in ("jpg", "png", "webp"):
            shown = ImageOps.exif_transpose(Image.open(path(f"exif_{k}.{ext}")))
            assert shown.size == (w, h), (k, ext, shown.size)
            assert shown.getpixel((2, 2))[0] > 200 and shown.getpixel((w - 3, h - 3))[2] > 200, (k, ext)
    # With alpha (the decoder's alpha path must honour the orientation too): a
    # transparent bottom-right quadrant.
    rgba = upright.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (w // 2, h // 2, w, h))
    exif = Image.Exif()
    exif[0x0112] = 6
    rgba.transpose(inverse[6]).save(path("exif_6_rgba.png"), exif=exif.tobytes())


def mode_fixtures():
    g = Image.new("L", (4, 2))
    g.putdata([0, 50, 100, 150, 200, 250, 255, 7])
    g.save(path("gray.png"))
    la = Image.new("LA", (2, 1))
    la.putdata([(100, 255), (100, 0)])
    la.save(path("gray_alpha.png"))
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(10, 20, 30, 255), (10, 20, 30, 0), (200, 100, 0, 128)])
    rgba.save(path("rgba.png"))
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    p.putdata([0, 1])
    p.save(path("palette.png"))
    # Lossless WebP, with alpha: same pixels as rgba.png.
    rgba.save(path("rgba.webp"), lossless=True, exact=True)


def main():
    exif_fixtures()
    mode_fixtures()
    inputs = {
        "in_64x64.png": noise(64, 64, 1),
        "in_37x53.png": noise(37, 53, 2),
        "in_20x20.png": noise(20, 20, 3),
        "in_45x64.png": noise(45, 64, 4),
        "in_640x480.png": pattern(640, 480, 5),
    }
    for name, im in inputs.items():
        im.save(path(name), optimize=True)
    resize_cases = [
        ("in_64x64.png", 32, 32),     # 2x shrink
        ("in_640x480.png", 298, 224),  # CLIP-224 shorter side
        ("in_37x53.png", 23, 31),     # odd, non-integer factors
        ("in_37x53.png", 50, 20),     # grow x, shrink y
        ("in_20x20.png", 32, 32),     # upscale (plain a=-0.5 cubic)
        ("in_64x64.png", 64, 17),     # only the vertical pass
    ]
    pre_cases = [("in_640x480.png", 224), ("in_45x64.png", 32), ("in_37x53.png", 24), ("in_64x64.png", 64)]
    lines = []
    for name, w, h in resize_cases:
        out = f"resize_{name[3:-4]}_to_{w}x{h}.png"
        inputs[name].resize((w, h), BICUBIC).save(path(out), optimize=True)
        lines.append(f"resize {name} {out} {w} {h}")
    for name, size in pre_cases:
        out = f"pre_{name[3:-4]}_{size}.png"
        clip_preprocess_uint8(inputs[name], size).save(path(out), optimize=True)
        lines.append(f"preprocess {name} {out} {size}")
    with open(path("cases.txt"), "w") as f:
        f.write(f"# made by make_fixtures.py with Pillow {PIL.__version__}\n")
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
