"""Quality and speed of the contamination check (`clipdata dedup`): hash views, index, verifier.

    .venv/bin/python bench/dedup.py quality      # recall per transformation, false pairs: the whole
                                                 # clipdata dedup job (bench/dedup_quality.py)
    .venv/bin/python bench/dedup.py hashes       # the pHash stage alone: recall, candidates per pair,
                                                 # radius sweep, views (before the copy descriptor)
    .venv/bin/python bench/dedup.py speed        # index vs numpy brute force, hashing images/s
    .venv/bin/python bench/dedup.py scale        # the whole job on many generated images, projected
                                                 # to 400M x 100k (bench/dedup_scale.py)

Needs scikit-image (its bundled sample photos, files inside the wheel; nothing is downloaded):
`.venv/bin/pip install scikit-image`.

hashes (was `quality` before the copy descriptor decided the candidates): 1,692 originals (232 tiles of skimage's photos, 800 dead-leaves images:
1,032 photo-like; 300 synthetic web images, 120 drawings, 120 logos, 120 texts on white; lookalike
pairs among the last four), each transformed 13 ways, the copy on the test side or on the training
side (stored through the downloader's resizer), hashed with dedup's views (23 per test image, 2 per
stored image) and searched with dedup's index; false positives over all 2.86M test x stored pairs
of different originals. Recall is the issue's measure on the photo-like originals; the low-entropy
ones are reported beside it.
Measured 2026-11-22, radius 14, 2 cores (1,339 s; 40 photo-like and 40 other copies verified per
cell), test / train side copy:
  photo-like, hash + verify: 1.00 for JPEG q30-90, resize 0.25-2x, brightness +-20%, mirror, text
    overlay; crop5 1.00 / 0.95; crop10 1.00 / 0.975; crop20 0.975 / 0.95 (hash alone over all
    1,032: crop5 0.997 / 0.997, crop10 0.952 / 0.990, crop20 0.964 / 0.979, overlay 0.995 / 0.990)
  other (web clip art, drawings, logos, text), hash + verify: 0.93-1.00 for re-encodes, resizes,
    brightness, mirror, crops up to 10% (crop10 test 0.85); crop20 0.80 / 0.95; overlay 0.75 / 0.60
    (a caption over a drawing or a logo covers much of its structure)
  false positives: hash only 9.6e-3 (27,398 candidates, 85% of them logos, web clip art, text,
    drawings); hash + verify 7.3e-6 (21 pairs: web clip art, logos, two brick-wall tiles); the
    verifier alone accepts 26 of 432 lookalike pairs (a logo with another word, clip art on the
    same background)
  views: the 5 views before the crop windows (now `--views fast`) and one training hash found crop10
    0.83 and crop20 0.56 of the time (mean of both directions, all originals) at 7.0e-3 hash FP;
    the 85%/80% windows and the training centre view take that to 0.97 / 0.96 at 9.6e-3 (before
    the windows: crop10 0.59-0.78, crop20 0.07-0.15 at 2.2e-3)
  tone test by groups (background and shape insides apart): hash + verify false positives 1.8e-5
    -> 7.3e-6 on these candidates, the copies' verdicts unchanged
  verify(): 21.2 pairs/s per process (median 45 ms, p99 94 ms)
speed: 10M random training hashes against 100k test hashes, radius 14, 2 FAISS threads on 2 busy
  cores: HashIndex (flat) 580 s (1.7e9 pairs/s); numpy popcount 8.5e7 pairs/s on a 50k-hash
  slice, ~11,800 s extrapolated: the index is 20x the numpy limit and returns the same pairs.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps  # noqa: E402

from clipdata.pipeline.demo import synthetic_web  # noqa: E402
from clipdata.pipeline.foundation.imaging import to_rgb  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Originals: distinct images, no two of them near duplicates of each other.


@dataclass
class Original:
    name: str        # "photo:astronaut:3", "web:17", "logo:4b", ...
    category: str    # photo | leaves | web | drawing | logo | text
    group: int       # originals made as lookalikes of each other share a group; else unique
    image: Image.Image


# skimage's bundled photos (files inside its wheel). The stereo pair's right view, the tiny
# microaneurysms crop and the synthetic test charts are left out.
# retina.jpg is used inside its fundus circle only: its black surround makes tiles that are all the
# same black corner with an orange arc.
PHOTO_BOXES = {"retina.jpg": (260, 260, 1150, 1150)}
PHOTOS = ("astronaut.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
          "coins.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
          "retina.jpg", "rocket.jpg", "brick.png", "grass.png", "gravel.png")
TILE_SIDES = (80, 160)   # tile sides drawn in this range: varied sizes and aspect ratios
MIN_TILE_STD = 12.0      # a flatter tile (black sky, retina's surround) is not a distinct picture


def _skimage_file(name: str) -> str:
    try:
        import skimage.data
    except ImportError:
        sys.exit("bench/dedup.py needs scikit-image for its sample photos: pip install scikit-image")
    return os.path.join(os.path.dirname(skimage.data.__file__), name)


def _cuts(length: int, rng: random.Random) -> list[tuple[int, int]]:
    """[start, end) segments partitioning 0..length, each TILE_SIDES long (a short rest dropped)."""
    out, start = [], 0
    while length - start >= TILE_SIDES[0]:
        side = min(length - start, rng.randint(*TILE_SIDES))
        out.append((start, start + side))
        start += side
    return out


def photo_tiles(rng: random.Random) -> list[Original]:
    """Non-overlapping tiles of the sample photos: every tile is a picture of its own."""
    out = []
    for name in PHOTOS:
        with Image.open(_skimage_file(name)) as im:
            photo = to_rgb(im)
        if name in PHOTO_BOXES:
            photo = photo.crop(PHOTO_BOXES[name])
        for y0, y1 in _cuts(photo.height, rng):
            for x0, x1 in _cuts(photo.width, rng):
                tile = photo.crop((x0, y0, x1, y1))
                if np.asarray(tile.convert("L"), dtype=np.float32).std() >= MIN_TILE_STD:
                    out.append(Original(f"photo:{name.split('.')[0]}:{x0},{y0}", "photo", 0, tile))
    return out


def dead_leaves(n: int, rng: random.Random) -> list[Original]:
    """The dead-leaves model of natural images: occluding discs with a power-law size spread,
    shaded, blurred and grainy; its statistics (1/f spectrum, edges at every scale) are a
    photograph's, and the sample photos alone give too few distinct pictures."""
    out = []
    for i in range(n):
        w, h = _size(rng)
        np_rng = np.random.default_rng(rng.getrandbits(64))
        image = Image.new("RGB", (w, h), tuple(int(v) for v in np_rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        r_min, r_max = max(3.0, 0.015 * max(w, h)), 0.5 * max(w, h)
        palette = np_rng.integers(0, 256, (6, 3))  # a photo has a few dominant hues
        for _ in range(int(np_rng.integers(300, 900))):
            # radius density ~ r^-3 between r_min and r_max (scale invariance), by inversion
            u = np_rng.random()
            r = (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5
            x, y = np_rng.uniform(-r, w + r), np_rng.uniform(-r, h + r)
            colour = np.clip(palette[np_rng.integers(6)] + np_rng.normal(0, 30, 3), 0, 255)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in colour))
        arr = np.asarray(image.filter(ImageFilter.GaussianBlur(np_rng.uniform(0.5, 1.5))), dtype=np.float32)
        yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
        light = 1 + 0.25 * np.sin(np_rng.uniform(0, 6.3) + np_rng.uniform(1, 4) * (xx * np.cos(i) + yy * np.sin(i)))
        arr = arr * light[..., None] + np_rng.normal(0, 4, (h, w, 1))
        out.append(Original(f"leaves:{i}", "leaves", 0, Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))))
    return out


def web_images(n: int, rng: random.Random) -> list[Original]:
    """synthetic_web's shapes on backgrounds; two thirds come in lookalike pairs: the same picture
    with the shape moved by at least a third of the picture, or in another colour."""
    classes = synthetic_web.make_classes()
    out = []
    while len(out) < n:
        shape, colour = rng.choice(classes)
        w = rng.randint(96, 400)
        h = w if rng.random() < 0.6 else max(64, int(w * rng.uniform(0.6, 1.6)))
        spec = synthetic_web.make_spec(shape, colour, rng, w, h, transparent=rng.random() < 0.1,
                                       distractor_classes=classes)
        out.append(Original(f"web:{len(out)}", "web", 0, to_rgb(synthetic_web.draw_image(spec))))
        if rng.random() < 0.5:
            twin = _moved(spec, rng) if rng.random() < 0.6 else None
            twin = twin or _recoloured(spec, rng)
            out.append(Original(f"web:{len(out)}", "web", 0, to_rgb(synthetic_web.draw_image(twin))))
            out[-1].group = out[-2].group = -len(out)  # marked as a lookalike pair
    return out[:n]


def _moved(spec, rng: random.Random):
    """The shape moved by at least a third of the picture's smaller side (shrunk if it does not
    fit otherwise), texture redrawn; None when the picture is too small for that."""
    need = min(spec.width, spec.height) / 3
    for radius in (spec.radius, int(spec.radius * 0.7), int(spec.radius * 0.5)):
        margin = radius + radius // 12 + 2
        if margin * 2 > min(spec.width, spec.height) or radius < 6:
            continue
        spots = [(rng.randint(margin, spec.width - margin), rng.randint(margin, spec.height - margin))
                 for _ in range(30)]
        far = [p for p in spots if math.hypot(p[0] - spec.cx, p[1] - spec.cy) >= need]
        if far:
            x, y = rng.choice(far)
            return dataclasses.replace(spec, cx=x, cy=y, radius=radius, distractor=None,
                                       seed=rng.getrandbits(32))
    return None


def _recoloured(spec, rng: random.Random):
    colour = rng.choice([c for c in synthetic_web.COLOURS if c != spec.colour])
    rgb = [min(255, max(0, v + rng.randint(-10, 10))) for v in synthetic_web.COLOURS[colour]]
    return dataclasses.replace(spec, colour=colour, rgb=rgb)


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: no system fonts needed


SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]


def _word(rng: random.Random, lo: int = 1, hi: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(lo, hi)))


def _size(rng: random.Random) -> tuple[int, int]:
    w = rng.randint(128, 360)
    return (w, w) if rng.random() < 0.5 else (w, max(96, int(w * rng.uniform(0.55, 1.5))))


def _drawing(size, elements, colour) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for kind, pts, width in elements:
        if kind == "line":
            draw.line(pts, fill=colour, width=width, joint="curve")
        elif kind == "ellipse":
            (x0, y0), (x1, y1) = pts
            draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=colour, width=width)
        else:
            (x0, y0), (x1, y1) = pts
            draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=colour, width=width)
    return image


def drawings(n: int, rng: random.Random) -> list[Original]:
    """Line drawings on white; half in lookalike pairs: the same drawing at 60% of its size moved
    by at least a third of the picture, or in another colour."""
    out = []
    while len(out) < n:
        w, h = _size(rng)
        colour = (0, 0, 0) if rng.random() < 0.6 else tuple(rng.randint(0, 160) for _ in range(3))
        elements = []
        for _ in range(rng.randint(3, 7)):
            kind = rng.choice(("line", "line", "ellipse", "rect"))
            k = rng.randint(2, 5) if kind == "line" else 2
            elements.append((kind, [(rng.uniform(0.08, 0.92) * w, rng.uniform(0.08, 0.92) * h)
                                    for _ in range(k)], rng.randint(2, 5)))
        out.append(Original(f"drawing:{len(out)}", "drawing", 0, _drawing((w, h), elements, colour)))
        if rng.random() < 0.5:
            twin_colour = colour
            if rng.random() < 0.5:
                # scaled to 60% about its centre, then shifted: a corner of the picture
                sx, sy = rng.choice((-1, 1)) * 0.2 * w, rng.choice((-1, 1)) * 0.2 * h
                twin = [(k, [(w / 2 + 0.6 * (x - w / 2) + sx, h / 2 + 0.6 * (y - h / 2) + sy) for x, y in pts], wd)
                        for k, pts, wd in elements]
            else:
                twin = elements
                while max(abs(a - b) for a, b in zip(twin_colour, colour)) < 120:
                    twin_colour = tuple(rng.choice((0, 60, 200, 255)) for _ in range(3))
                    twin_colour = twin_colour if min(twin_colour) < 200 else colour
            out.append(Original(f"drawing:{len(out)}", "drawing", 0, _drawing((w, h), twin, twin_colour)))
            out[-1].group = out[-2].group = -len(out) - 100_000
    return out[:n]


def _logo(size, background, shape, shape_colour, box, word, text_colour, font_size, text_xy) -> Image.Image:
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    getattr(draw, {"circle": "ellipse", "square": "rectangle"}.get(shape, "rounded_rectangle"))(
        box, fill=shape_colour, **({"radius": (box[2] - box[0]) // 5} if shape == "rounded" else {}))
    draw.text(text_xy, word, fill=text_colour, font=_font(font_size))
    return image


def logos(n: int, rng: random.Random) -> list[Original]:
    """A coloured mark beside a word, on white or a light flat colour; half in lookalike pairs:
    another word in the same layout, or the same logo in other colours."""
    out = []
    while len(out) < n:
        w, h = _size(rng)
        background = (255, 255, 255) if rng.random() < 0.7 else tuple(rng.randint(220, 255) for _ in range(3))
        side = int(min(w, h) * rng.uniform(0.25, 0.45))
        x0, y0 = int(w * rng.uniform(0.05, 0.2)), (h - side) // 2 + rng.randint(-h // 8, h // 8)
        args = dict(size=(w, h), background=background, shape=rng.choice(("circle", "square", "rounded")),
                    shape_colour=tuple(rng.randint(0, 230) for _ in range(3)),
                    box=(x0, y0, x0 + side, y0 + side), word=_word(rng, 2, 3),
                    text_colour=tuple(rng.randint(0, 120) for _ in range(3)),
                    font_size=max(12, int(side * rng.uniform(0.35, 0.6))),
                    text_xy=(x0 + side + int(w * 0.04), y0 + side // 4))
        out.append(Original(f"logo:{len(out)}", "logo", 0, _logo(**args)))
        if rng.random() < 0.5:
            if rng.random() < 0.5:
                twin = dict(args, word=_word(rng, 2, 3))
            else:
                twin = dict(args, shape_colour=tuple(rng.randint(0, 230) for _ in range(3)),
                            text_colour=tuple(rng.randint(0, 120) for _ in range(3)))
            out.append(Original(f"logo:{len(out)}", "logo", 0, _logo(**twin)))
            out[-1].group = out[-2].group = -len(out) - 200_000
    return out[:n]


def _text_image(size, lines, font_size, colour, background) -> Image.Image:
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    for i, line in enumerate(lines):
        draw.text((int(size[0] * 0.06), int(size[1] * 0.08) + i * int(font_size * 1.4)), line, fill=colour, font=font)
    return image


def texts(n: int, rng: random.Random) -> list[Original]:
    """Lines of words on white (a scanned page, a quote card); half in lookalike pairs: the same
    layout with other words."""
    out = []
    while len(out) < n:
        w, h = _size(rng)
        font_size = rng.randint(12, 26)
        n_lines = max(1, min(8, int(h * 0.84 / (font_size * 1.4))))
        n_lines = rng.randint(1, n_lines)

        def lines():
            return [" ".join(_word(rng) for _ in range(rng.randint(2, 5))) for _ in range(n_lines)]

        colour = (0, 0, 0) if rng.random() < 0.7 else tuple(rng.randint(0, 140) for _ in range(3))
        background = (255, 255, 255) if rng.random() < 0.7 else tuple(rng.randint(225, 255) for _ in range(3))
        out.append(Original(f"text:{len(out)}", "text", 0, _text_image((w, h), lines(), font_size, colour, background)))
        if rng.random() < 0.5:
            out.append(Original(f"text:{len(out)}", "text", 0, _text_image((w, h), lines(), font_size, colour, background)))
            out[-1].group = out[-2].group = -len(out) - 300_000
    return out[:n]


def make_originals(seed: int = 0, n_leaves: int = 250, n_web: int = 300, n_drawing: int = 120,
                   n_logo: int = 120, n_text: int = 120, photos: bool = True) -> list[Original]:
    """`photos`: the tiles of scikit-image's sample photos (the suite's small runs go without)."""
    rng = random.Random(seed)
    originals = ((photo_tiles(rng) if photos else []) + dead_leaves(n_leaves, rng) + web_images(n_web, rng) + drawings(n_drawing, rng)
                 + logos(n_logo, rng) + texts(n_text, rng))
    for i, o in enumerate(originals):
        if o.group == 0:
            o.group = i + 1
    return originals


# ---------------------------------------------------------------------------------------------
# Transformations: how a copy differs from the picture it copies.

TRANSFORMS = ("jpeg30", "jpeg50", "jpeg90", "resize0.25", "resize0.5", "resize2", "crop5", "crop10",
              "crop20", "bright+20", "bright-20", "mirror", "overlay")


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _overlay(image: Image.Image, rng: random.Random) -> Image.Image:
    """A caption or watermark: a few words, white with a dark outline, across top, middle or bottom."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    size = max(10, image.height // rng.randint(7, 10))
    text = " ".join(_word(rng) for _ in range(rng.randint(1, 3))).upper()
    font = _font(size)
    tw = draw.textlength(text, font=font)
    x = max(0, int((image.width - tw) * rng.uniform(0.0, 1.0)))
    y = int(image.height * rng.choice((0.05, 0.45, 0.8)))
    draw.text((x, y), text, fill=(255, 255, 255), font=font, stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
    return out


def apply(image: Image.Image, name: str, rng: random.Random) -> Image.Image:
    if name == "none":
        return image
    if name.startswith("jpeg"):
        return _jpeg(image, int(name[4:]))
    if name.startswith("resize"):
        scale = float(name[6:])
        size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
        return image.resize(size, Image.BICUBIC if scale > 1 else Image.LANCZOS)
    if name.startswith("crop"):
        # `crop10`: 10% of each side cut away, split at random between its two ends.
        f = int(name[4:]) / 100
        cut_w, cut_h = round(image.width * f), round(image.height * f)
        left, top = rng.randint(0, cut_w), rng.randint(0, cut_h)
        return image.crop((left, top, image.width - (cut_w - left), image.height - (cut_h - top)))
    if name.startswith("bright"):
        return ImageEnhance.Brightness(image).enhance(1 + int(name[6:]) / 100)
    if name == "mirror":
        return ImageOps.mirror(image)
    if name == "overlay":
        return _overlay(image, rng)
    raise ValueError(f"unknown transformation {name!r}")


class Stored(NamedTuple):
    """A training image as a shard holds it: the stored picture decoded, its two pHashes (hex)
    and the original's size the shard records (original_width, original_height)."""
    image: Image.Image
    phash: str
    phash_centre: str
    original_size: tuple[int, int]


class Store:
    """What `clipdata download` keeps of an image: img2dataset's resize (256, border, JPEG q95),
    decoded again, as the training side holds it."""

    def __init__(self):
        from clipdata.pipeline.download.images import ImageConfig, make_resizer
        self.config = ImageConfig()
        self.resizer = make_resizer(self.config)

    def __call__(self, image: Image.Image) -> Stored:
        from clipdata.pipeline.download.images import store_image
        buf = io.BytesIO()
        image.save(buf, "PNG", compress_level=1)
        stored = store_image(buf.getvalue(), self.resizer, self.config)
        if stored.error:
            raise RuntimeError(stored.error)
        return Stored(Image.open(io.BytesIO(stored.data)).convert("RGB"), stored.phash, stored.phash_centre,
                      (stored.original_width, stored.original_height))


def _train_hashes(stored: Stored) -> np.ndarray:
    """The stored copy's training views (hashing.TRAIN_VIEWS), as the shard parquet holds them."""
    return np.array([int(stored.phash, 16), int(stored.phash_centre, 16)], dtype=np.uint64)


# ---------------------------------------------------------------------------------------------
# Copies: for each transformation, a test image and the training copy of each original.

DIRECTIONS = ("test", "train")  # which side holds the transformed copy


def copy_pair(original: Original, index: int, transform: str, direction: str, store: Store, seed: int = 0
              ) -> tuple[Image.Image, Stored]:
    """(test image, the stored training image) of one original: with direction "test" the test
    image is the transformed copy and the training side stored the original; with "train" the
    other way round. Deterministic."""
    rng = random.Random(f"{seed}:{index}:{transform}:{direction}")
    copy = apply(original.image, transform, rng)
    test, train_source = (copy, original.image) if direction == "test" else (original.image, copy)
    return test, store(train_source)


# ---------------------------------------------------------------------------------------------
# Quality: hash retrieval and verification of every copy, false positives over unrelated pairs

R_MAX = 24                 # the sweep's largest radius: candidates are searched once at it
SWEEP = (6, 8, 10, 12, 14, 16, 18, 20, 22, 24)
_WORLD: dict = {}          # originals and the store, shared with forked workers


def _init_world(originals: list[Original], seed: int) -> None:
    _WORLD.update(originals=originals, store=Store(), seed=seed)


def _pool(workers: int):
    import multiprocessing
    return multiprocessing.get_context("fork").Pool(workers)


def _map(fn, jobs, workers: int, chunksize: int = 16) -> list:
    if workers <= 1:
        return [fn(job) for job in jobs]
    with _pool(workers) as pool:
        return pool.map(fn, jobs, chunksize=chunksize)


def _original_hashes(i: int) -> tuple[dict, np.ndarray]:
    """(views of the original as a test image, training views of its stored copy)."""
    from clipdata.dedup import hashing
    o = _WORLD["originals"][i]
    return hashing.views(o.image, names=hashing.VIEW_NAMES), _train_hashes(_WORLD["store"](o.image))


def _copy_hash(job: tuple[int, str, str]):
    """The hash side of one copy: views of the test copy ("test"), or the stored copy's training
    views ("train"); the other side is the original's, computed once."""
    from clipdata.dedup import hashing
    i, transform, direction = job
    o = _WORLD["originals"][i]
    rng = random.Random(f"{_WORLD['seed']}:{i}:{transform}:{direction}")
    copy = apply(o.image, transform, rng)
    if direction == "test":
        return hashing.views(copy, names=hashing.VIEW_NAMES)
    return _train_hashes(_WORLD["store"](copy))


def _verify_job(job: tuple) -> tuple[bool, float, float, bool]:
    """(duplicate, score, seconds, pixels alone) of one pair: ("copy", i, transform, direction)
    or ("pair", i, j): test original i against the stored original j. `duplicate` is what
    clipdata dedup decides: the screen on the stored image's thumbnail, then the pixels for
    what it passes; `pixels alone` is verify() without the screen."""
    from clipdata.dedup import verify
    from clipdata.pipeline.foundation import thumbs
    originals, store = _WORLD["originals"], _WORLD["store"]
    if job[0] == "copy":
        _, i, transform, direction = job
        test, train = copy_pair(originals[i], i, transform, direction, store, _WORLD["seed"])
    else:
        _, i, j = job
        test, train = originals[i].image, store(originals[j].image)
    # both with the size the shard records, as clipdata dedup calls them (the recorded box)
    t = time.perf_counter()
    verdict = _WORLD.get("verify", verify.verify)(test, train.image, original_size=train.original_size)
    seconds = time.perf_counter() - t
    screened = verify.screen(verify.reduce_for_screen(test), thumbs.decode(thumbs.encode(train.image)),
                             original_size=train.original_size)
    return (bool(screened.duplicate and verdict.duplicate), float(verdict.score), seconds,
            bool(verdict.duplicate), bool(screened.duplicate))


def _nearest(stacked, train: np.ndarray, radius: int) -> tuple:
    """Candidate pairs of dedup's own search (HashIndex over the test views, candidate_pairs with
    both training views of each stored image: train is (n, 2))."""
    from clipdata.dedup.index import HashIndex, candidate_pairs
    index = HashIndex(stacked.hashes)
    n = len(train)
    return candidate_pairs(index, stacked.owner, np.concatenate([train[:, 0], train[:, 1]]), radius,
                           view_index=stacked.view, train_owner=np.tile(np.arange(n), 2),
                           train_view=np.repeat([0, 1], n))


def _min_distance_all_pairs(test_views: list[dict], train: np.ndarray, names, train_views=(0, 1)) -> np.ndarray:
    """(n_test, n_train) uint8: the smallest Hamming distance over each test image's views and
    the stored image's training views (columns of train), by numpy popcount over every pair
    (the hash-only false-positive count needs all of them)."""
    from clipdata.dedup.hashing import hamming
    out = np.full((len(test_views), len(train)), 255, np.uint8)
    for name in names:
        h = np.array([v[name] for v in test_views], dtype=np.uint64)
        for col in train_views:
            out = np.minimum(out, hamming(h[:, None], train[None, :, col]))
    return out


@dataclass
class Hashed:
    """The hash stage of the quality run: distances of every copy and every unrelated pair."""
    positive: dict        # (transform, direction) -> int array: distance of each original's own copy (255: not found)
    view_distance: dict   # (transform, direction) -> (n, views, 2) uint8: distance of the copy per test view
                          # (every view) and training view (image, centre)
    test_views: dict      # (transform, direction) -> per original {view: hash}, every view
    train_hashes: dict    # (transform, direction) -> (n, 2) uint64: training views per original
    fp_distance: np.ndarray   # (n, n) smallest distance over the views, test original i x stored original j
    groups: np.ndarray        # group of each original: unrelated pairs are those of different groups
    categories: np.ndarray    # category of each original
    seconds: float


def hash_stage(originals: list, workers: int, log=print) -> Hashed:
    from clipdata.dedup import hashing
    from clipdata.dedup.index import stack_views
    t = time.perf_counter()
    n = len(originals)
    names = hashing.DEFAULT_VIEWS
    base = _map(_original_hashes, range(n), workers)
    base_views = [v for v, _ in base]
    base_train = np.stack([h for _, h in base])
    jobs = [(i, tr, d) for tr in TRANSFORMS for d in DIRECTIONS for i in range(n)]
    hashed = _map(_copy_hash, jobs, workers, 32)
    # Retrieval with dedup's own search, both directions: the copy's own original must be among
    # the candidates of its pair (i, i).
    positive, view_distance, all_views, all_train = {}, {}, {}, {}
    for k, (tr, d) in enumerate((tr, d) for tr in TRANSFORMS for d in DIRECTIONS):
        part = hashed[k * n:(k + 1) * n]
        test_views = part if d == "test" else base_views
        train = base_train if d == "test" else np.stack(part)
        found = _nearest(stack_views([{k: v[k] for k in names} for v in test_views], names), train, R_MAX)
        own = found.test == found.train
        dist = np.full(n, 255, np.int64)
        dist[found.test[own]] = found.distance[own]
        positive[tr, d] = dist
        view_distance[tr, d] = np.stack([
            np.stack([hashing.hamming(np.array([v[name] for v in test_views], np.uint64), train[:, col])
                      for col in (0, 1)], axis=1) for name in hashing.VIEW_NAMES], axis=1)
        all_views[tr, d], all_train[tr, d] = test_views, train
    fp_distance = _min_distance_all_pairs(base_views, base_train, names)
    found = _nearest(stack_views([{k: v[k] for k in names} for v in base_views], names), base_train, R_MAX)
    if not np.array_equal(np.sort(found.distance), np.sort(fp_distance[fp_distance <= R_MAX]).astype(np.int32)):
        raise AssertionError("the index search and numpy popcount disagree")
    groups = np.array([o.group for o in originals])
    seconds = time.perf_counter() - t
    log(f"{len(jobs)} copies made and hashed, {n} x {n} pairs searched, {seconds:.0f} s")
    return Hashed(positive, view_distance, all_views, all_train, fp_distance, groups,
                  np.array([o.category for o in originals]), seconds)


@dataclass
class Verified:
    """The verification stage: a sample of every transformation's copies, the unrelated
    candidates the search returns, every lookalike pair."""
    copies: dict          # (transform, direction) -> {original: duplicate}
    unrelated: dict       # (i, j) -> duplicate, unrelated candidates within `radius`
    lookalike: dict       # (i, j) -> duplicate, same group, different originals
    radius: int           # unrelated candidates were verified up to this distance
    pair_seconds: list    # verify() time of each pair
    seconds: float
    screen: dict          # copies the pixels accept and the screen rejects; unrelated candidates it passes


PHOTO_LIKE = ("photo", "leaves")   # the recall is measured on photo-like images


def _spread(indices: list[int], k: int) -> list[int]:
    """k of the indices, evenly spaced."""
    return indices[::max(1, len(indices) // k)][:k]


def verify_stage(hashed: Hashed, workers: int, sample_size: int, radius: int, log=print) -> Verified:
    """sample_size copies of each transformation and direction verified among the photo-like
    originals, as many among the others (drawings, logos, text, web clip art)."""
    t = time.perf_counter()
    n = len(hashed.groups)
    photo_like = [i for i in range(n) if hashed.categories[i] in PHOTO_LIKE]
    rest = [i for i in range(n) if hashed.categories[i] not in PHOTO_LIKE]
    sample = _spread(photo_like, sample_size) + _spread(rest, sample_size)
    copy_jobs = [("copy", i, tr, d) for tr in TRANSFORMS for d in DIRECTIONS for i in sample]
    unrelated = hashed.groups[:, None] != hashed.groups[None, :]
    fp_pairs = [(int(i), int(j)) for i, j in zip(*np.nonzero((hashed.fp_distance <= radius) & unrelated))]
    same = ~unrelated & ~np.eye(n, dtype=bool)
    look_pairs = [(int(i), int(j)) for i, j in zip(*np.nonzero(same))]
    log(f"verifying {len(copy_jobs)} copies, {len(fp_pairs)} unrelated candidates within {radius} bits, "
        f"{len(look_pairs)} lookalike pairs ...")
    jobs = copy_jobs + [("pair", i, j) for i, j in fp_pairs + look_pairs]
    results = _map(_verify_job, jobs, workers, 4)
    copies = {}
    for job, (dup, *_) in zip(copy_jobs, results):
        copies.setdefault((job[2], job[3]), {})[job[1]] = dup
    rest = results[len(copy_jobs):]
    seconds = time.perf_counter() - t
    log(f"verified {len(results)} pairs, {seconds:.0f} s")
    copy_results = results[:len(copy_jobs)]
    screen = {"copies_pixels_accept": sum(r[3] for r in copy_results),
              "copies_screen_lost": sum(r[3] and not r[4] for r in copy_results),
              "unrelated": len(fp_pairs), "unrelated_screen_passed": sum(r[4] for r in rest[:len(fp_pairs)])}
    return Verified(copies, {p: r[0] for p, r in zip(fp_pairs, rest)},
                    {p: r[0] for p, r in zip(look_pairs, rest[len(fp_pairs):])}, radius,
                    [r[2] for r in results], seconds, screen)


def _categories(originals) -> str:
    counts = {}
    for o in originals:
        counts[o.category] = counts.get(o.category, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items())


# ---------------------------------------------------------------------------------------------
# Speed: the index against numpy brute force, hashing against a plain imagehash loop


def speed_search(n_train: int, n_test: int, radius: int, brute_rows: int, batch: int = 1 << 20,
                 seed: int = 0, log=print) -> dict:
    """Range search of n_train random hashes against n_test (HashIndex, flat), all of them, and
    numpy popcount brute force (index.brute_force_pairs) over the first brute_rows training
    hashes, extrapolated to all."""
    import faiss

    from clipdata.dedup.index import HashIndex, brute_force_pairs
    rng = np.random.default_rng(seed)
    test = rng.integers(0, np.iinfo(np.uint64).max, n_test, dtype=np.uint64, endpoint=True)
    train = rng.integers(0, np.iinfo(np.uint64).max, n_train, dtype=np.uint64, endpoint=True)
    t = time.perf_counter()
    index = HashIndex(test)
    build = time.perf_counter() - t
    t = time.perf_counter()
    found, head = 0, None
    for start in range(0, n_train, batch):
        m = index.range_search(train[start:start + batch], radius)
        found += len(m.query)
        if head is None:
            head = m
    search = time.perf_counter() - t
    rows = min(brute_rows, n_train)
    t = time.perf_counter()
    brute = brute_force_pairs(test, train[:rows], radius)
    brute_s = time.perf_counter() - t
    # the same pairs on the slice
    mine = head if rows <= batch else index.range_search(train[:rows], radius)
    keep = mine.query < rows
    same = (np.array_equal(mine.query[keep], brute.query) and np.array_equal(mine.index[keep], brute.index))
    pairs = n_train * n_test
    return {"n_train": n_train, "n_test": n_test, "radius": radius, "threads": faiss.omp_get_max_threads(),
            "build_s": build, "index_s": search, "index_pairs_per_s": pairs / search, "found": found,
            "brute_rows": rows, "brute_s": brute_s, "brute_pairs_per_s": rows * n_test / brute_s,
            "brute_all_s": brute_s * n_train / rows, "same_pairs": same}


def speed_hashing(originals: list, n: int) -> dict:
    """Images/s: dedup's test-side path (hashing.views, DEFAULT_VIEWS), its training-side path
    (one phash from the encoded bytes, hashing.hashes_from_image_bytes), and a plain
    `imagehash.phash(image)` loop, on the same images."""
    import imagehash

    from clipdata.dedup import hashing
    images = [o.image for o in originals[:n]]
    encoded = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=95)
        encoded.append(buf.getvalue())
    out = {"images": len(images), "views": len(hashing.DEFAULT_VIEWS)}
    for im in images[:20]:  # imports and caches warmed before any loop is timed
        imagehash.phash(im), hashing.views(im)
    out["imagehash_phash"] = _per_second(imagehash.phash, images)
    out["dedup_phash"] = _per_second(hashing.phash, images)
    out["dedup_views"] = _per_second(hashing.views, images)
    out["imagehash_bytes"] = _per_second(lambda data: imagehash.phash(Image.open(io.BytesIO(data))), encoded)
    t = time.perf_counter()
    hashing.hash_many(encoded, workers=1)
    out["dedup_bytes_1"] = len(images) / (time.perf_counter() - t)
    t = time.perf_counter()
    hashing.hash_many(encoded, workers=2, chunksize=16)
    out["dedup_bytes_2"] = len(images) / (time.perf_counter() - t)
    return out


# ---------------------------------------------------------------------------------------------
# Tables


def _table(header: list[str], rows: list[list], log=print) -> None:
    cells = [[str(c) for c in header]] + [[c if isinstance(c, str) else f"{c}" for c in row] for row in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    for n, row in enumerate(cells):
        log("  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            log("  ".join("-" * w for w in widths))


def _rate(k: int, n: int) -> str:
    return f"{k}/{n} = {k / n:.1e}" if n else "-"


def report_quality(originals: list, hashed: Hashed, verified: Verified, radius: int, log=print) -> dict:
    from clipdata.dedup import hashing
    n = len(originals)
    categories = np.array([o.category for o in originals])
    summary = {"radius": radius, "recall": {}, "views": hashing.DEFAULT_VIEWS}

    photo_like = np.isin(categories, PHOTO_LIKE)

    def verified_recall(tr, d, r, which=None):
        """hash + verify recall over the verified sample: which = True photo-like, False the
        others, None all."""
        sample = {i: dup for i, dup in verified.copies[tr, d].items() if which is None or photo_like[i] == which}
        ok = [hashed.positive[tr, d][i] <= r and dup for i, dup in sample.items()]
        return float(np.mean(ok)), len(ok)

    sizes = {w: verified_recall(TRANSFORMS[0], "test", radius, w)[1] for w in (True, False)}
    log(f"\nRecall per transformation at radius {radius} (test views: {len(hashing.DEFAULT_VIEWS)}, "
        f"'default'; training views: {', '.join(hashing.TRAIN_VIEWS)}). 'test': the test image is the "
        f"transformed copy and the training side stored the original; 'train': the other way round. "
        f"Photo-like: the {int(photo_like.sum())} photo tiles and dead-leaves images (hash), a sample of "
        f"{sizes[True]} per cell (hash + verify); other: the {int((~photo_like).sum())} web clip art, "
        f"drawings, logos and texts, a sample of {sizes[False]}.")
    rows = []
    for tr in TRANSFORMS:
        row = [tr]
        for which in (True, False):
            for d in DIRECTIONS:
                row.append(f"{(hashed.positive[tr, d][photo_like == which] <= radius).mean():.3f}")
            for d in DIRECTIONS:
                rec, _ = verified_recall(tr, d, radius, which)
                row.append(f"{rec:.3f}")
                summary["recall"][tr, d, "photo-like" if which else "other"] = rec
        rows.append(row)
    _table(["transformation", "photo-like: hash test", "hash train", "verified test", "verified train",
            "other: hash test", "hash train", "verified test", "verified train"], rows, log)

    log(f"\nHash recall at radius {radius} per category (both directions):")
    cats = list(dict.fromkeys(categories))
    _table(["transformation"] + cats, [[tr] + [
        f"{np.mean([(hashed.positive[tr, d][categories == c] <= radius).mean() for d in DIRECTIONS]):.2f}"
        for c in cats] for tr in TRANSFORMS], log)

    unrelated = hashed.groups[:, None] != hashed.groups[None, :]
    n_pairs = int(unrelated.sum())
    hash_fp = int(((hashed.fp_distance <= radius) & unrelated).sum())
    checked = {p: dup for p, dup in verified.unrelated.items() if hashed.fp_distance[p] <= radius}
    ver_fp = sum(checked.values())
    look_fp = sum(verified.lookalike.values())
    summary.update(pairs=n_pairs, hash_fp=hash_fp, verified_fp=ver_fp, lookalike_fp=look_fp,
                   lookalikes=len(verified.lookalike))
    log(f"\nFalse positives over all {n_pairs:,} unrelated pairs (every test original x every stored "
        f"original of another group), radius {radius}:")
    log(f"  hash only (numpy popcount over every pair):            {_rate(hash_fp, n_pairs)}")
    log(f"  hash + verify (the verifier run on the {len(checked)} unrelated candidates the search returns, "
        f"as the system runs it): {_rate(ver_fp, n_pairs)}")
    log(f"  verifier alone on the {len(verified.lookalike)} lookalike pairs (same group, another picture: "
        f"moved, recoloured, another word or text), any distance: {_rate(look_fp, len(verified.lookalike))}")
    if ver_fp or look_fp:
        by_cat = {}
        for (i, j), dup in list(checked.items()) + list(verified.lookalike.items()):
            if dup:
                by_cat[categories[i]] = by_cat.get(categories[i], 0) + 1
        log(f"  accepted by the verifier, by category: {by_cat}")
    log("  hash-only candidates by category: " + ", ".join(
        f"{c} {int(((hashed.fp_distance <= radius) & unrelated)[categories == c].sum())}" for c in cats))

    log(f"\nRadius sweep (hash + verify recall on the verified sample; verified false positives "
        f"counted up to {verified.radius} bits, where the unrelated candidates were verified):")
    rows = []
    for r in SWEEP:
        hash_rec = [(hashed.positive[k] <= r).mean() for k in hashed.positive]
        ver_rec = [verified_recall(tr, d, r)[0] for tr, d in hashed.positive]
        cand = int(((hashed.fp_distance <= r) & unrelated).sum())
        vfp = (sum(dup for p, dup in verified.unrelated.items() if hashed.fp_distance[p] <= r)
               if r <= verified.radius else None)
        worst = min(hashed.positive, key=lambda k: (hashed.positive[k] <= r).mean())
        rows.append([r, f"{min(hash_rec):.3f} ({worst[0]} {worst[1]})", f"{np.mean(hash_rec):.3f}",
                     f"{min(ver_rec):.3f}", f"{np.mean(ver_rec):.3f}", f"{cand / n_pairs:.1e}",
                     f"{cand / n * 1e6 / n:,.0f}", "-" if vfp is None else f"{vfp / n_pairs:.1e}"])
    _table(["radius", "hash recall min", "mean", "verified min", "mean", "hash FP rate",
            "candidates per test image per 1M", "verified FP rate"], rows, log)

    log(f"\nViews: hash recall at radius {radius} (mean of both directions) with each test view alone "
        f"and with the default set, against the stored copy's pHash ('image') and with its centre view "
        f"too ('+centre', what dedup searches); 'unrelated' is the hash-only FP rate of the set")
    names = list(hashing.VIEW_NAMES)
    grids = {keep: hashing.crop_grid(keep) for keep in hashing.GRID_KEEPS}
    in_grid = {v for g in grids.values() for v in g}
    default = tuple(hashing.DEFAULT_VIEWS)
    sets = ([(("image",), (0,))] + [(("image", v), (0,)) for v in names if v != "image" and v not in in_grid]
            + [(("image",) + g, (0,)) for g in grids.values()] + [(default, (0,)), (default, (0, 1))])
    labels = {("image",) + g: f"image+border_crop{keep} x9" for keep, g in grids.items()}
    labels[default] = "default"
    rows = []
    base_views, base_train = hashed.test_views[TRANSFORMS[0], "train"], hashed.train_hashes[TRANSFORMS[0], "test"]
    for views, train_cols in sets:
        cols = [names.index(v) for v in views]
        rec = {tr: np.mean([(hashed.view_distance[tr, d][:, cols][:, :, list(train_cols)].min(axis=(1, 2))
                             <= radius).mean() for d in DIRECTIONS]) for tr in TRANSFORMS}
        fp = ((_min_distance_all_pairs(base_views, base_train, views, train_cols) <= radius)
              & unrelated).sum() / n_pairs
        label = labels.get(views, "+".join(views)) + (" / +centre" if 1 in train_cols else " / image")
        rows.append([label] + [f"{rec[tr]:.2f}" for tr in TRANSFORMS] + [f"{fp:.1e}"])
    _table(["views (test / training)"] + list(TRANSFORMS) + ["unrelated"], rows, log)

    sc = verified.screen
    summary["screen"] = sc
    log(f"\nThumbnail screen (verify.screen on the stored image's 64 px thumbnail, before the pixels; the "
        f"'verified' figures above are the two together, as clipdata dedup runs them): it passed "
        f"{_rate(sc['unrelated_screen_passed'], sc['unrelated'])} of the unrelated candidates and rejected "
        f"{sc['copies_screen_lost']} of the {sc['copies_pixels_accept']} sampled copies the pixels accept")
    seconds = np.array(verified.pair_seconds)
    summary["verify_pairs_per_s"] = 1 / seconds.mean()
    log(f"\nverify(): {len(seconds)} pairs, {1 / seconds.mean():.1f} pairs/s per process "
        f"(median {np.median(seconds) * 1000:.0f} ms, p99 {np.quantile(seconds, 0.99) * 1000:.0f} ms)")
    return summary


# ---------------------------------------------------------------------------------------------
# CLI


def _per_second(fn, items) -> float:
    """Items per second of fn over items, one after another."""
    t = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - t)


def main(argv=None) -> int:
    from clipdata.dedup.index import DEFAULT_RADIUS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    job = commands.add_parser("quality", help="recall per transformation and false pairs through the whole dedup job")
    job.add_argument("--seed", type=int, default=0, help="originals and transformations (default: %(default)s)")
    job.add_argument("--workers", type=int, default=2, help="processes (default: %(default)s)")
    job.add_argument("--leaves", type=int, default=800, help="dead-leaves originals (default: %(default)s)")
    job.add_argument("--folder", default="bench_output/dedup_quality", help="work folder (default: %(default)s)")
    job.add_argument("--keep", action="store_true", help="keep the generated data and the reports")
    quality = commands.add_parser("hashes", help="the pHash stage alone: recall, false positives, radius sweep")
    quality.add_argument("--seed", type=int, default=0, help="originals and transformations (default: %(default)s)")
    quality.add_argument("--workers", type=int, default=2, help="processes (default: %(default)s)")
    quality.add_argument("--leaves", type=int, default=800, help="dead-leaves originals (default: %(default)s)")
    quality.add_argument("--radius", type=int, default=DEFAULT_RADIUS,
                         help="radius of the recall and false-positive tables (default: index.DEFAULT_RADIUS, %(default)s)")
    quality.add_argument("--verify-sample", type=int, default=40,
                         help="copies verified per transformation and direction (default: %(default)s)")
    quality.add_argument("--verify-radius", type=int, default=None,
                         help="unrelated candidates are verified up to this distance (default: --radius)")
    speed = commands.add_parser("speed", help="index vs numpy brute force; hashing images/s")
    speed.add_argument("--train", type=int, default=10_000_000, help="training hashes (default: %(default)s)")
    speed.add_argument("--test", type=int, default=100_000, help="test hashes (default: %(default)s)")
    speed.add_argument("--radius", type=int, default=DEFAULT_RADIUS, help="(default: %(default)s)")
    speed.add_argument("--brute-rows", type=int, default=50_000,
                       help="training hashes brute-forced with numpy, extrapolated to --train (default: %(default)s)")
    speed.add_argument("--images", type=int, default=400, help="images hashed (default: %(default)s)")
    scale = commands.add_parser("scale", help="clipdata dedup on generated shards; stage rates; projection")
    scale.add_argument("--train", type=int, default=1_000_000, help="training images (default: %(default)s)")
    scale.add_argument("--test", type=int, default=10_000, help="test images (default: %(default)s)")
    scale.add_argument("--planted", type=int, default=100, help="test images with a copy among the "
                       "training images (default: %(default)s)")
    scale.add_argument("--rows-per-shard", type=int, default=10_000, help="(default: %(default)s)")
    scale.add_argument("--workers", type=int, default=2, help="processes (default: %(default)s)")
    scale.add_argument("--folder", default="bench_output/dedup_scale", help="work folder (default: %(default)s)")
    scale.add_argument("--keep", action="store_true", help="keep the generated data and the report")
    scale.add_argument("--reuse", action="store_true", help="use the data an earlier --keep run of the same sizes "
                       "generated in --folder (the dedup job and the timings run again)")
    args = parser.parse_args(argv)
    from clipdata.pipeline.foundation import console
    console.configure_logging(verbose=False)     # Beam's and FAISS's log lines, as the CLI hides them
    with console.quiet_children(verbose=False):
        return _run(args)


def _run(args) -> int:
    if args.command == "scale":
        import dedup_scale
        dedup_scale.run(args.train, args.test, args.planted, args.rows_per_shard, args.workers, args.folder,
                        args.keep or args.reuse, reuse=args.reuse)
        return 0

    if args.command == "quality":
        import dedup_quality
        _skimage_file("camera.png")
        t = time.perf_counter()
        originals = make_originals(args.seed, n_leaves=args.leaves)
        print(f"{len(originals)} originals: {_categories(originals)}; {len(TRANSFORMS)} transformations, "
              f"each original copied once per direction; {args.workers} processes")
        dedup_quality.run(originals, args.workers, args.folder, args.seed, keep=args.keep)
        print(f"\ntotal {time.perf_counter() - t:.0f} s")
        return 0

    if args.command == "hashes":
        _skimage_file("camera.png")
        t = time.perf_counter()
        originals = make_originals(args.seed, n_leaves=args.leaves)
        _init_world(originals, args.seed)
        print(f"{len(originals)} originals: {_categories(originals)}; {len(TRANSFORMS)} transformations x "
              f"{len(DIRECTIONS)} directions; {args.workers} processes")
        hashed = hash_stage(originals, args.workers)
        verified = verify_stage(hashed, args.workers, args.verify_sample,
                                args.radius if args.verify_radius is None else args.verify_radius)
        report_quality(originals, hashed, verified, args.radius)
        print(f"\ntotal {time.perf_counter() - t:.0f} s")
        return 0

    import faiss
    faiss.omp_set_num_threads(min(2, os.cpu_count() or 1))
    print(f"Search: {args.train:,} random training hashes against {args.test:,} test hashes, radius "
          f"{args.radius}, {faiss.omp_get_max_threads()} FAISS threads")
    s = speed_search(args.train, args.test, args.radius, args.brute_rows)
    _table(["", "seconds", "pairs/s", "pairs found"], [
        ["HashIndex (flat), all pairs", f"{s['index_s']:.1f}", f"{s['index_pairs_per_s']:.2e}", s["found"]],
        [f"numpy popcount, first {s['brute_rows']:,} training hashes", f"{s['brute_s']:.1f}",
         f"{s['brute_pairs_per_s']:.2e}", ""],
        ["numpy popcount, all pairs (extrapolated)", f"{s['brute_all_s']:.0f}", "", ""]])
    print(f"index build {s['build_s']:.2f} s; index / numpy speed: {s['index_pairs_per_s'] / s['brute_pairs_per_s']:.1f}x; "
          f"same pairs on the slice: {s['same_pairs']}")
    from clipdata.dedup import hashing
    work = len(hashing.DEFAULT_VIEWS) * len(hashing.TRAIN_VIEWS)
    print(f"clipdata dedup hashes each test image in {len(hashing.DEFAULT_VIEWS)} views and each training image "
          f"in {len(hashing.TRAIN_VIEWS)}: {args.train:,} training images against {args.test:,} test images are "
          f"{work}x these pairs, ~{work * s['index_s'] / 3600:.1f} h at this rate on these cores "
          f"(--views fast: {len(hashing.FAST_VIEWS) * len(hashing.TRAIN_VIEWS)}x); Beam spreads it over workers.")
    originals = make_originals(0)
    random.Random(0).shuffle(originals)
    h = speed_hashing(originals, args.images)
    print(f"\nHashing {h['images']} images (the bench's originals, mixed sizes 64-400 px), one process:")
    _table(["", "images/s"], [
        ["imagehash.phash(image) loop", f"{h['imagehash_phash']:.0f}"],
        ["hashing.phash(image)", f"{h['dedup_phash']:.0f}"],
        [f"hashing.views(image): {h['views']} views (test side)", f"{h['dedup_views']:.0f}"],
        ["imagehash.phash(Image.open(jpeg bytes)) loop", f"{h['imagehash_bytes']:.0f}"],
        ["hashing.hash_many(jpeg bytes), 1 process (training side)", f"{h['dedup_bytes_1']:.0f}"],
        ["hashing.hash_many(jpeg bytes), 2 processes", f"{h['dedup_bytes_2']:.0f}"]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
