"""A synthetic web of labelled images, served on 127.0.0.1: the embedded default every stage runs on.

The images are coloured shapes ("red circle", "blue star", ...) drawn with PIL at random places,
sizes and rotations on varied backgrounds, so a tiny CLIP model trained on a few thousand of them
for a few hundred CPU steps reaches zero-shot accuracy far above chance. Their alt texts are
written the way the web writes them (clip-art phrasing, file names, empty alts, HTML entities,
mojibake), and the pool carries the faults a downloader meets (dead links, HTML pages, truncated
files, duplicates, bad URLs, opt-outs, rate limits). Everything is deterministic given a seed, and
the manifests (`web.json`, `test_set.json`) are the ground truth the demo and the tests check.

    web = build_web("demo/web", n_images=3000, seed=0, vocabulary=words)   # files + web.json
    with serve("demo/web") as base_url:                 # http://127.0.0.1:PORT, a real server
        write_pool(web, base_url, "demo/pool.parquet")  # url, caption: what curate reads
        ...                                             # curate, download while it runs
    build_test_set("demo/test", 480, seed=1, planted_from=web, planted_count=24,
                   lookalike_count=24)                  # ImageNet-style folders + test_set.json

Layout of a web folder:
    img/000123.jpg|png|webp   one image per manifest id (faults included, when they have a file)
    web.json                  the manifest: every pool row with its class, caption and fault
    routes.json               per-path behaviour the server applies (content type, headers, 429)
"""
from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import math
import os
import random
import socket
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from clipdata.pipeline.foundation.imaging import to_rgb


# ---------------------------------------------------------------------------------------------
# Classes: a class is a (shape, colour) pair, its text "red circle".

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "ring", "diamond", "hexagon",
          "arrow")

# Well apart in hue or lightness, so a small model can tell them apart after JPEG and jitter.
COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (240, 210, 20),
    "green": (40, 165, 60),
    "blue": (30, 80, 220),
    "purple": (130, 50, 180),
    "pink": (245, 120, 190),
    "black": (25, 25, 25),
}

# Up to how many degrees each shape is turned. Squares, crosses, diamonds and hearts stay nearly
# upright: a square turned 45 degrees is what people call a diamond, a cross an "x".
MAX_ROTATION = {"circle": 0, "ring": 0, "square": 25, "cross": 25, "diamond": 15, "heart": 25,
                "triangle": 180, "star": 180, "hexagon": 180, "arrow": 180}


def class_text(shape: str, colour: str) -> str:
    return f"{colour} {shape}"


def class_folder(shape: str, colour: str) -> str:
    """The folder-safe name of a class: "red_circle"."""
    return f"{colour}_{shape}"


def make_classes(shapes: Sequence[str] = SHAPES, colours: Sequence[str] = tuple(COLOURS)
                 ) -> list[tuple[str, str]]:
    """Every (shape, colour) pair, colours outermost: the class order of every manifest."""
    for shape in shapes:
        if shape not in MAX_ROTATION:
            raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    for colour in colours:
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
    return [(shape, colour) for colour in colours for shape in shapes]


# ---------------------------------------------------------------------------------------------
# Drawing


@dataclass
class ImageSpec:
    """Everything an image is drawn from; `seed` drives only the noise of textured backgrounds."""
    shape: str
    colour: str
    rgb: list           # the colour's RGB after jitter
    width: int
    height: int
    background: dict    # {"kind": plain|gradient|noise|photo|transparent, ...}
    cx: int             # centre of the shape, pixels
    cy: int
    radius: int
    rotation: float     # degrees
    outline: bool       # a dark rim around the shape
    distractor: dict | None  # a second, small shape: {shape, colour, rgb, cx, cy, radius, rotation}
    seed: int


def _unit_polygon(shape: str) -> list[tuple[float, float]] | None:
    """The shape's outline inside the unit circle, y down; None for the round ones."""
    if shape in ("circle", "ring"):
        return None
    if shape == "square":
        return [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]
    if shape == "diamond":
        return [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]
    if shape == "triangle":
        return [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (-90, 30, 150)]
    if shape == "hexagon":
        return [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in range(0, 360, 60)]
    if shape == "star":
        return [((1 if k % 2 == 0 else 0.42) * math.cos(math.radians(-90 + 36 * k)),
                 (1 if k % 2 == 0 else 0.42) * math.sin(math.radians(-90 + 36 * k))) for k in range(10)]
    if shape == "cross":
        a = 0.32
        return [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a),
                (-1, a), (-1, -a), (-a, -a)]
    if shape == "arrow":
        return [(-1, -0.28), (0.15, -0.28), (0.15, -0.65), (1, 0), (0.15, 0.65), (0.15, 0.28),
                (-1, 0.28)]
    if shape == "heart":
        # The classic parametric heart, x in [-16, 16], y in [-17, 12] before scaling.
        points = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((x / 16.5, -(y + 2.5) / 16.5))
        return points
    raise ValueError(f"unknown shape {shape!r}")


_POLYGONS = {shape: _unit_polygon(shape) for shape in MAX_ROTATION}
_SUPERSAMPLE = 2  # the mask is drawn at 2x and reduced: smooth edges at little cost


def shape_mask(shape: str, radius: int, rotation: float) -> Image.Image:
    """An "L" mask of size (2 * radius + 2) with the shape centred in it, anti-aliased."""
    s = _SUPERSAMPLE
    side = 2 * radius + 2
    mask = Image.new("L", (side * s, side * s), 0)
    draw = ImageDraw.Draw(mask)
    c, r = side * s / 2, radius * s
    if shape == "circle":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=255)
    elif shape == "ring":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=255)
        inner = 0.55 * r
        draw.ellipse((c - inner, c - inner, c + inner, c + inner), fill=0)
    else:
        cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
        draw.polygon([(c + r * (x * cos - y * sin), c + r * (x * sin + y * cos))
                      for x, y in _POLYGONS[shape]], fill=255)
    return mask.reduce(s)


def _paste_shape(image: Image.Image, shape: str, rgb, cx: int, cy: int, radius: int,
                 rotation: float, outline: bool) -> None:
    if outline:
        # A slightly larger copy in a dark shade of the colour, under the shape: a rim.
        rim = max(1, radius // 12)
        dark = tuple(int(v * 0.45) for v in rgb)
        _paste_mask(image, shape_mask(shape, radius + rim, rotation), dark, cx, cy)
    _paste_mask(image, shape_mask(shape, radius, rotation), tuple(rgb), cx, cy)


def _paste_mask(image: Image.Image, mask: Image.Image, rgb, cx: int, cy: int) -> None:
    fill = tuple(rgb) + ((255,) if image.mode == "RGBA" else ())
    image.paste(fill, (cx - mask.width // 2, cy - mask.height // 2), mask)


def _background(spec: ImageSpec, rng: random.Random) -> Image.Image:
    bg, size = spec.background, (spec.width, spec.height)
    kind = bg["kind"]
    if kind == "transparent":
        return Image.new("RGBA", size, (0, 0, 0, 0))
    if kind == "plain":
        return Image.new("RGB", size, tuple(bg["colours"][0]))
    if kind == "gradient":
        # Drawn at 32x32 and stretched: a smooth gradient costs the same at 64 px and 2000 px.
        c0, c1 = (np.array(c, dtype=np.float32) for c in bg["colours"])
        axis = np.linspace(-1, 1, 32, dtype=np.float32)
        angle = math.radians(bg["angle"])
        t = (axis[None, :] * math.cos(angle) + axis[:, None] * math.sin(angle)) / 2 ** 0.5 / 2 + 0.5
        small = c0 + t[..., None] * (c1 - c0)
        return Image.fromarray(small.clip(0, 255).astype(np.uint8), "RGB").resize(size, Image.BILINEAR)
    np_rng = np.random.default_rng(rng.getrandbits(64))
    if kind == "noise":
        # Grey per-pixel noise on a light colour: like paper or a scanned page.
        base = np.array(bg["colours"][0], dtype=np.int16)
        noise = np_rng.integers(-bg["amplitude"], bg["amplitude"] + 1, (spec.height, spec.width, 1),
                                dtype=np.int16)
        return Image.fromarray((base + noise).clip(0, 255).astype(np.uint8), "RGB")
    if kind == "photo":
        # Blurry blobs of mid-tone colours plus grain: the busy background of a snapshot.
        grid = np_rng.integers(60, 200, (bg["grid"], bg["grid"], 3)).astype(np.uint8)
        blurred = np.asarray(Image.fromarray(grid, "RGB").resize(size, Image.BICUBIC), dtype=np.int16)
        noise = np_rng.integers(-12, 13, (spec.height, spec.width, 1), dtype=np.int16)
        return Image.fromarray((blurred + noise).clip(0, 255).astype(np.uint8), "RGB")
    raise ValueError(f"unknown background kind {kind!r}")


def draw_image(spec: ImageSpec, rng: random.Random | None = None) -> Image.Image:
    """The image a spec describes: RGB, or RGBA on a transparent background. Same spec and rng
    state, same pixels; without an rng, the spec's own seed is used."""
    rng = rng if rng is not None else random.Random(spec.seed)
    image = _background(spec, rng)
    d = spec.distractor
    if d:
        _paste_shape(image, d["shape"], d["rgb"], d["cx"], d["cy"], d["radius"], d["rotation"], False)
    _paste_shape(image, spec.shape, spec.rgb, spec.cx, spec.cy, spec.radius, spec.rotation,
                 spec.outline)
    return image


def _jitter(rgb, rng: random.Random, amount: int = 18) -> list[int]:
    return [min(255, max(0, v + rng.randint(-amount, amount))) for v in rgb]


def _light_colour(rng: random.Random) -> list[int]:
    if rng.random() < 0.5:
        return [255, 255, 255]
    return [rng.randint(215, 255) for _ in range(3)]


def _make_background(kind: str, rng: random.Random) -> dict:
    if kind == "plain":
        return {"kind": kind, "colours": [_light_colour(rng)]}
    if kind == "gradient":
        return {"kind": kind, "colours": [_light_colour(rng), _light_colour(rng)],
                "angle": rng.uniform(0, 360)}
    if kind == "noise":
        return {"kind": kind, "colours": [[rng.randint(205, 240) for _ in range(3)]],
                "amplitude": rng.randint(8, 20)}
    if kind == "photo":
        return {"kind": kind, "grid": rng.randint(3, 6)}
    return {"kind": kind}


def _pick_background_kind(rng: random.Random, large: bool, transparent: bool) -> str:
    if transparent:
        return "transparent"
    u = rng.random()
    if large:  # full-size per-pixel noise would make a 3-megapixel image slow to draw
        return "plain" if u < 0.6 else "gradient"
    return "plain" if u < 0.45 else "gradient" if u < 0.7 else "noise" if u < 0.92 else "photo"


def make_spec(shape: str, colour: str, rng: random.Random, width: int, height: int,
              transparent: bool = False, distractor_classes: Sequence[tuple[str, str]] = (),
              distractor_chance: float = 0.2, backgrounds: Sequence[str] | None = None) -> ImageSpec:
    """A random layout for one image of a class; `distractor_classes` are the classes a second,
    small shape may come from (the image's own class is never used); `backgrounds` limits the
    background kinds drawn from (default: the web's mix)."""
    large = width * height > 1_000_000
    kind = rng.choice(list(backgrounds)) if backgrounds else _pick_background_kind(rng, large, transparent)
    background = _make_background(kind, rng)
    m = min(width, height)
    radius = max(8, int(m * rng.uniform(0.2, 0.4)))
    # The whole shape (and its rim) stays inside the image.
    margin = radius + radius // 12 + 2
    cx = rng.randint(margin, max(margin, width - margin))
    cy = rng.randint(margin, max(margin, height - margin))
    rotation = round(rng.uniform(-MAX_ROTATION[shape], MAX_ROTATION[shape]), 1)
    outline = rng.random() < 0.2
    distractor = None
    others = [c for c in distractor_classes if c != (shape, colour)]
    if others and rng.random() < distractor_chance:
        d_shape, d_colour = rng.choice(others)
        d_radius = max(5, int(m * rng.uniform(0.08, 0.13)))
        d_margin = d_radius + 2
        for _ in range(10):  # a spot clear of the main shape, if there is one
            dx = rng.randint(d_margin, max(d_margin, width - d_margin))
            dy = rng.randint(d_margin, max(d_margin, height - d_margin))
            if math.hypot(dx - cx, dy - cy) > margin + d_radius:
                turn = MAX_ROTATION[d_shape]
                distractor = {"shape": d_shape, "colour": d_colour,
                              "rgb": _jitter(COLOURS[d_colour], rng), "cx": dx, "cy": dy,
                              "radius": d_radius, "rotation": round(rng.uniform(-turn, turn), 1)}
                break
    return ImageSpec(shape=shape, colour=colour, rgb=_jitter(COLOURS[colour], rng), width=width,
                     height=height, background=background, cx=cx, cy=cy, radius=radius,
                     rotation=rotation, outline=outline, distractor=distractor,
                     seed=rng.getrandbits(32))


def spec_from_dict(d: dict) -> ImageSpec:
    """The spec a manifest stored."""
    return ImageSpec(**d)


def encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    out = io.BytesIO()
    if fmt == "jpeg":
        image.save(out, "JPEG", quality=quality)
    elif fmt == "png":
        image.save(out, "PNG", compress_level=1)  # fast; size does not matter here
    elif fmt == "webp":
        image.save(out, "WEBP", quality=quality, method=0)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return out.getvalue()


EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                 ".webp": "image/webp", ".html": "text/html; charset=utf-8",
                 ".json": "application/json", ".parquet": "application/octet-stream"}


def _image_size(rng: random.Random, large: bool) -> tuple[int, int]:
    if large:  # exercises resizing and the decoded-pixel cap downstream
        return rng.randint(1600, 2400), rng.randint(1200, 1800)
    side = rng.randint(64, 256) if rng.random() < 0.75 else rng.randint(256, 512)
    if rng.random() < 0.3:  # non-square, either way round
        other = max(48, int(side * rng.uniform(0.6, 1.6)))
        return (side, other) if rng.random() < 0.5 else (other, side)
    return side, side


# ---------------------------------------------------------------------------------------------
# Captions: alt text as the web writes it.

CLASS_TEMPLATES = (
    "{a} {colour} {shape} on a {background} background",
    "{Colour} {shape} sticker, vector clip art",
    "photo of {a} {colour} {shape} | free download",
    "{colour} {shape} icon png",
    "{colour} {shape}",
    "{A} {colour} {shape}.",
    "simple {colour} {shape} shape isolated on {background}",
    "{colour} {shape} clipart",
    "flat {colour} {shape} symbol - vector illustration",
    "{Colour} {shape} emoji",
    "cute {colour} {shape} drawing for kids",
    "the {shape} is {colour}",
    "{colour} {shape} logo design template",
    "Stock image: {colour} {shape} #{number}",
    "{Colour} {Shape} Wall Decal",
    "a picture of {a} {colour} {shape}",
)
WITH_DISTRACTOR_TEMPLATES = (
    "{a} {colour} {shape} and a small {d_colour} {d_shape}",
    "{colour} {shape} with a little {d_colour} {d_shape}",
)
SHAPE_ONLY_TEMPLATES = ("{shape} icon", "geometric {shape} shape", "{Shape} clip art free",
                        "outline of a {shape}")
# Names cameras, scanners and editors give files: no colour or shape word, no number 0..99 as a
# separate word (query lists hold "0".."99").
NO_MATCH_TEMPLATES = ("IMG_{n4}", "DSC{n5}.JPG", "untitled", "untitled-{n1}", "P{n7}",
                      "image-{hex}", "{hex}.png", "scan0{n3}")
EMPTY_CAPTIONS = ("", " ", "   ", "\n", "\t ", "&nbsp;")
FILLERS = ("free", "hd", "wallpaper", "vector", "download", "best", "new", "design", "art", "graphic")
BACKGROUND_WORDS = {"plain": "plain", "gradient": "gradient", "noise": "textured", "photo": "colorful",
                    "transparent": "transparent"}

# What each caption kind is; the first three name the image's class.
CAPTION_KINDS = {
    "class": "colour and shape words in a clip-art style template",
    "html-entities": "a class caption with HTML entities (&amp; &quot; &#8211;)",
    "mojibake": "a class caption with UTF-8 read as cp1252 (cafÃ©), which ftfy repairs",
    "shape-only": "names the shape but not the colour",
    "no-match": "a file name (IMG_2034, untitled): no query-list entry",
    "empty": "empty or whitespace-only (or &nbsp;)",
    "vocabulary-only": "vocabulary words only: matches queries, says nothing of the image",
}
CLASS_CAPTION_KINDS = ("class", "html-entities", "mojibake")
CAPTION_FRACTIONS = {"html-entities": 0.03, "mojibake": 0.03, "shape-only": 0.05,
                     "no-match": 0.05, "empty": 0.03, "vocabulary-only": 0.04}

_HTML_NOISE = ("{caption} &amp; free vector", "&quot;{caption}&quot;", "{caption} &#8211; clip art",
               "{caption} &#x2605; icon", "{caption} &lt;3")
_MOJIBAKE_NOISE = ("{caption} – café design", "{caption}™", "{caption} © 2019", "naïve {caption}",
                   "{caption} • déjà vu")


def _words(rng: random.Random, vocabulary: Sequence[str] | None, k: int) -> list[str]:
    pool = vocabulary if vocabulary else FILLERS
    return [rng.choice(pool) for _ in range(k)]


def _class_caption(spec: ImageSpec, rng: random.Random, vocabulary) -> str:
    d = spec.distractor
    if d and rng.random() < 0.4:
        template = rng.choice(WITH_DISTRACTOR_TEMPLATES)
    else:
        template = rng.choice(CLASS_TEMPLATES)
    bg = spec.background
    background = "white" if bg["kind"] == "plain" and bg["colours"][0] == [255, 255, 255] \
        else BACKGROUND_WORDS[bg["kind"]]
    article = "an" if spec.colour[0] in "aeiou" else "a"
    caption = template.format(
        colour=spec.colour, Colour=spec.colour.capitalize(), shape=spec.shape,
        Shape=spec.shape.capitalize(), background=background, a=article, A=article.capitalize(),
        number=rng.randint(1000, 99999), d_colour=d["colour"] if d else "",
        d_shape=d["shape"] if d else "")
    # Filler words around the description, as alt text stuffed for search engines does.
    if rng.random() < (0.3 if vocabulary else 0.15):
        words = " ".join(_words(rng, vocabulary, rng.randint(1, 4)))
        caption = f"{caption} {words}" if rng.random() < 0.6 else f"{words}: {caption}"
    if rng.random() < 0.03:
        caption = caption.upper()
    return caption


def make_caption(spec: ImageSpec, kind: str, rng: random.Random,
                 vocabulary: Sequence[str] | None = None) -> str:
    """Alt text of the given kind (CAPTION_KINDS) for an image."""
    if kind == "class":
        return _class_caption(spec, rng, vocabulary)
    if kind == "html-entities":
        return rng.choice(_HTML_NOISE).format(caption=_class_caption(spec, rng, vocabulary))
    if kind == "mojibake":
        clean = rng.choice(_MOJIBAKE_NOISE).format(caption=_class_caption(spec, rng, vocabulary))
        return clean.encode("utf-8").decode("cp1252")
    if kind == "shape-only":
        return rng.choice(SHAPE_ONLY_TEMPLATES).format(shape=spec.shape, Shape=spec.shape.capitalize())
    if kind == "no-match":
        return rng.choice(NO_MATCH_TEMPLATES).format(
            n1=rng.randint(100, 999), n3=rng.randint(100, 999), n4=rng.randint(1000, 9999),
            n5=rng.randint(10000, 99999), n7=rng.randint(1000000, 9999999),
            hex=f"{rng.getrandbits(32):08x}")
    if kind == "empty":
        return rng.choice(EMPTY_CAPTIONS)
    if kind == "vocabulary-only":
        return " ".join(_words(rng, vocabulary, rng.randint(2, 6)))
    raise ValueError(f"unknown caption kind {kind!r}")


# ---------------------------------------------------------------------------------------------
# The web: image files, faults, the manifest.

# Pool rows added on top of the n_images good ones, at fault_fraction; each kind at least once.
FAULT_KINDS = {
    "dead-link": "404 Not Found",
    "html": "a .jpg URL answered 200 with an HTML page (text/html)",
    "truncated": "a JPEG cut in half",
    "random-bytes": "random bytes named .jpg",
    "empty-file": "a zero-byte .jpg",
    "duplicate": "the same (url, caption) as another row: exact dedup drops it",
    "ftp-url": "an ftp:// URL",
    "data-url": "a data: URL holding a tiny PNG",
    "malformed-url": "not a usable http URL (no host, bad port, unclosed bracket, space, ...)",
    "opt-out": "a valid image served with X-Robots-Tag: noai",
    "retry-after": "a valid image whose first GET is answered 429 with Retry-After: 1",
}
# Faults whose file is a valid image; a downloader should end with the image (retry-after,
# duplicate) or skip it on purpose (opt-out).
VALID_IMAGE_FAULTS = ("duplicate", "opt-out", "retry-after")
_MALFORMED = ("http://", "http:///img/{key}.jpg", "http://[127.0.0.1/img/{key}.jpg",
              "htp:/127.0.0.1/img/{key}.jpg", "img/{key}.jpg", "http://127.0.0.1:99999/img/{key}.jpg",
              "http://127.0.0.1/img/ {key}.jpg")
FORMAT_FRACTIONS = {"png": 0.28, "webp": 0.12}  # the rest JPEG
LARGE_FRACTION = 0.005
TRANSPARENT_FRACTION = 0.5  # of PNG and WebP images


def _quota(n: int, fractions: dict[str, float], rest: str, rng: random.Random) -> list[str]:
    """n labels holding round(f * n) of each (at least one when n allows), the rest `rest`,
    shuffled: exact proportions, so small webs still hold every kind."""
    labels = []
    for label, fraction in fractions.items():
        if fraction > 0:
            labels += [label] * max(1, round(fraction * n))
    labels = labels[:n] + [rest] * max(0, n - len(labels))
    rng.shuffle(labels)
    return labels


def build_web(folder: str, n_images: int, seed: int, vocabulary: Sequence[str] | None = None,
              fault_fraction: float = 0.05, shapes: Sequence[str] = SHAPES,
              colours: Sequence[str] = tuple(COLOURS),
              fault_kinds: Sequence[str] = tuple(FAULT_KINDS), workers: int = 1) -> dict:
    """Write n_images good images (balanced over the classes) plus fault rows under `folder`,
    and the manifest `folder/web.json`, which is also returned:

        {"folder", "seed", "classes": ["red circle", ...], "shapes", "colours",
         "n_images", "n_faults", "images": [entry, ...]}       # entries in pool row order

    An entry: id, key ("000123"), url (a path such as "/img/000123.jpg" that write_pool joins to
    the server's base URL; faults with odd URLs hold them whole), path (file relative to folder,
    or None), class, shape, colour, caption, caption_kind, fault (None or a FAULT_KINDS key),
    format, width, height, mode, spec (the ImageSpec as a dict), duplicate_of (for duplicates).

    `workers` > 1 draws in that many processes; the files and manifest are the same either way,
    since every image is drawn from its own seed.
    """
    for kind in fault_kinds:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    classes = make_classes(shapes, colours)
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    rng = random.Random(f"web:{seed}")

    # Plans fixed up front, so each image's own rng (seeded by its id) is all it needs.
    class_plan = [classes[i % len(classes)] for i in range(n_images)]
    rng.shuffle(class_plan)
    formats = _quota(n_images, FORMAT_FRACTIONS, "jpeg", rng)
    sizes = _quota(n_images, {"large": LARGE_FRACTION}, "small", rng)
    caption_fractions = dict(CAPTION_FRACTIONS)
    if not vocabulary:
        caption_fractions.pop("vocabulary-only")
    caption_plan = _quota(n_images, caption_fractions, "class", rng)

    jobs = []
    for i in range(n_images):
        shape, colour = class_plan[i]
        large = sizes[i] == "large"
        fmt = "jpeg" if large and formats[i] == "webp" else formats[i]  # large WebP encodes slowly
        jobs.append((i, f"web:{seed}:{i}", shape, colour, fmt, large, caption_plan[i]))
    if workers > 1:
        # Contiguous chunks, so the vocabulary travels to the workers a few times, not per image.
        size = -(-len(jobs) // (4 * workers))
        chunks = [jobs[k:k + size] for k in range(0, len(jobs), size)]
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            drawn = pool.map(_draw_images, *zip(*[(folder, c, vocabulary, classes) for c in chunks]))
            entries = [entry for chunk in drawn for entry in chunk]
    else:
        entries = _draw_images(folder, jobs, vocabulary, classes)

    n_faults = max(len(fault_kinds), round(fault_fraction * n_images)) if fault_kinds else 0
    for j in range(n_faults):
        kind = fault_kinds[j % len(fault_kinds)]
        i = n_images + j
        entries.append(_fault_entry(folder, i, kind, j // len(fault_kinds), f"web:{seed}:{i}",
                                    entries[:n_images], classes, vocabulary))

    rng.shuffle(entries)  # faults spread through the pool, as on the web
    web = {"folder": os.path.abspath(folder), "seed": seed,
           "classes": [class_text(s, c) for s, c in classes], "shapes": list(shapes),
           "colours": list(colours), "n_images": n_images, "n_faults": n_faults,
           "images": entries}
    with open(os.path.join(folder, "routes.json"), "w") as f:
        json.dump(_routes(entries), f, indent=1, sort_keys=True)
    with open(os.path.join(folder, "web.json"), "w") as f:
        json.dump(web, f, separators=(",", ":"))
    return web


def _draw_images(folder, jobs, vocabulary, classes) -> list[dict]:
    return [_image_entry(folder, *job, vocabulary, classes) for job in jobs]


def _image_entry(folder, i, seed_text, shape, colour, fmt, large, caption_kind, vocabulary,
                 classes) -> dict:
    rng = random.Random(seed_text)
    width, height = _image_size(rng, large)
    transparent = fmt in ("png", "webp") and rng.random() < TRANSPARENT_FRACTION
    spec = make_spec(shape, colour, rng, width, height, transparent, distractor_classes=classes)
    image = draw_image(spec)
    quality = rng.randint(60, 95)
    key = f"{i:06d}"
    path = f"img/{key}.{EXTENSIONS[fmt]}"
    with open(os.path.join(folder, path), "wb") as f:
        f.write(encode(image, fmt, quality))
    return {"id": i, "key": key, "url": "/" + path, "path": path,
            "class": class_text(shape, colour), "shape": shape, "colour": colour,
            "caption": make_caption(spec, caption_kind, rng, vocabulary),
            "caption_kind": caption_kind, "fault": None, "format": fmt, "width": width,
            "height": height, "mode": image.mode, "spec": dict(vars(spec)), "duplicate_of": None}


def _fault_entry(folder, i, kind, occurrence, seed_text, good, classes, vocabulary) -> dict:
    """The `occurrence`-th fault of its kind, for pool row id i."""
    rng = random.Random(seed_text)
    key = f"{i:06d}"
    if kind == "duplicate":
        source = rng.choice(good)
        return dict(source, id=i, key=key, fault=kind, duplicate_of=source["id"])
    shape, colour = rng.choice(classes)
    if kind in ("truncated", "opt-out", "retry-after"):
        fmt = "jpeg"
        entry = _image_entry(folder, i, seed_text + ":image", shape, colour, fmt, False,
                             "class", vocabulary, classes)
        entry["fault"] = kind
        if kind == "truncated":
            full = os.path.join(folder, entry["path"])
            with open(full, "rb") as f:
                data = f.read()
            with open(full, "wb") as f:
                f.write(data[: len(data) // 2])
        return entry
    # The rest have no image behind them; the caption still names a class, so curation keeps
    # them and the failure shows where it belongs (download, or the URL check).
    spec = make_spec(shape, colour, rng, 128, 128)
    entry = {"id": i, "key": key, "url": None, "path": None, "class": class_text(shape, colour),
             "shape": shape, "colour": colour, "caption": make_caption(spec, "class", rng, vocabulary),
             "caption_kind": "class", "fault": kind, "format": None, "width": None, "height": None,
             "mode": None, "spec": None, "duplicate_of": None}
    if kind == "dead-link":
        entry["url"] = f"/img/{key}.jpg"  # no such file
    elif kind in ("html", "random-bytes", "empty-file"):
        path = f"img/{key}.jpg"
        body = {"html": _html_page(entry["caption"]).encode(),
                "random-bytes": rng.randbytes(rng.randint(200, 5000)),
                "empty-file": b""}[kind]
        with open(os.path.join(folder, path), "wb") as f:
            f.write(body)
        entry.update(url="/" + path, path=path)
    elif kind == "ftp-url":
        entry["url"] = f"ftp://127.0.0.1/img/{key}.jpg"
    elif kind == "data-url":
        tiny = encode(Image.new("RGB", (4, 4), COLOURS[colour]), "png")
        entry["url"] = "data:image/png;base64," + base64.b64encode(tiny).decode()
    elif kind == "malformed-url":
        entry["url"] = _MALFORMED[occurrence % len(_MALFORMED)].format(key=key)  # each in turn
    return entry


def _html_page(caption: str) -> str:
    # What a hotlink-protected image URL often answers: a page about the image, not the image.
    return ("<!DOCTYPE html>\n<html><head><title>Image viewer</title></head>\n<body><h1>"
            f"{caption.replace('<', '&lt;')}</h1><p>Click to view full size.</p></body></html>\n")


def _routes(entries: list[dict]) -> dict:
    """Per-path behaviour for the server, from the faults that need more than a file."""
    routes = {}
    for e in entries:
        if e["fault"] == "html":
            routes[e["url"]] = {"content_type": "text/html; charset=utf-8"}
        elif e["fault"] == "opt-out":
            routes[e["url"]] = {"headers": {"X-Robots-Tag": "noai, noimageai"}}
        elif e["fault"] == "retry-after":
            routes[e["url"]] = {"first_status": 429, "headers_first": {"Retry-After": "1"}}
    return routes


def load_web(folder: str) -> dict:
    with open(os.path.join(folder, "web.json")) as f:
        return json.load(f)


def pool_url(entry: dict, base_url: str) -> str:
    """The pool URL of a manifest entry: paths joined to the server, odd URLs kept whole."""
    url = entry["url"]
    return base_url.rstrip("/") + url if url.startswith("/") else url


def write_pool(web: dict, base_url: str, path: str) -> pa.Table:
    """The candidate pool `path` (parquet: url, caption), one row per manifest entry, in order,
    with URLs pointing at the server now running at base_url ("http://127.0.0.1:PORT")."""
    table = pa.table({"url": pa.array([pool_url(e, base_url) for e in web["images"]], pa.string()),
                      "caption": pa.array([e["caption"] for e in web["images"]], pa.string())})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pq.write_table(table, path)
    return table


# ---------------------------------------------------------------------------------------------
# The server


class _Handler(BaseHTTPRequestHandler):
    """Files under `root`, with the per-path behaviour of `routes`; HTTP/1.1 keep-alive."""
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries a Content-Length
    timeout = 30  # idle keep-alive connections let their thread go eventually
    root: str = ""
    routes: dict = {}
    seen: set = set()  # paths already answered, for first_status
    lock = threading.Lock()

    def do_GET(self):
        self._respond(body=True)

    def do_HEAD(self):
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        route = self.routes.get(path, {})
        if "first_status" in route and body:
            with self.lock:
                first = path not in self.seen
                self.seen.add(path)
            if first:
                return self._send(route["first_status"], b"try again later\n", "text/plain",
                                  route.get("headers_first", {}), body)
        file = self._file(path)
        if file is None:
            return self._send(404, b"not found\n", "text/plain", {}, body)
        with open(file, "rb") as f:
            data = f.read()
        content_type = route.get("content_type") or CONTENT_TYPES.get(
            os.path.splitext(file)[1].lower(), "application/octet-stream")
        self._send(200, data, content_type, route.get("headers", {}), body)

    def _file(self, path: str) -> str | None:
        try:
            full = os.path.realpath(os.path.join(self.root, path.lstrip("/")))
        except ValueError:  # a NUL byte in the path
            return None
        if not full.startswith(self.root + os.sep) or not os.path.isfile(full):
            return None  # missing, a folder, or outside the root ("/../")
        return full

    def _send(self, status, data: bytes, content_type: str, headers: dict, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format, *args):  # quiet: the demo prints its own progress
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: 64+ clients connect at once

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections, so no handler thread outlives the server."""
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address):
        # A client that hangs up mid-response (a downloader's deadline) is normal here.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(folder: str) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 at a free port from a background thread; yields the base
    URL ("http://127.0.0.1:PORT") and stops the server, and its connections, on exit."""
    root = os.path.realpath(folder)
    routes_file = os.path.join(root, "routes.json")
    routes = {}
    if os.path.exists(routes_file):
        with open(routes_file) as f:
            routes = json.load(f)
    handler = type("Handler", (_Handler,), {"root": root, "routes": routes, "seen": set(),
                                             "lock": threading.Lock()})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="synthetic-web", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()


# ---------------------------------------------------------------------------------------------
# Test sets: labelled folders for zero-shot eval and the contamination check.

TRANSFORMS = ("jpeg", "resize", "crop10", "mirror", "brightness")


def transform(image: Image.Image, name: str, rng: random.Random) -> tuple[Image.Image, dict]:
    """A near-duplicate of an RGB image and the parameters used: how test sets come to hold
    copies of training images (re-encoded, rescaled, cropped, flipped, re-exposed)."""
    if name == "jpeg":
        quality = rng.randint(30, 70)
        out = Image.open(io.BytesIO(encode(image, "jpeg", quality))).convert("RGB")
        return out, {"name": name, "quality": quality}
    if name == "resize":
        scale = round(rng.uniform(0.5, 0.8), 3)
        size = (max(32, round(image.width * scale)), max(32, round(image.height * scale)))
        return image.resize(size, Image.BICUBIC), {"name": name, "scale": scale}
    if name == "crop10":
        # 5-10% of each dimension cut away, split at random between the two sides.
        fw, fh = rng.uniform(0.05, 0.10), rng.uniform(0.05, 0.10)
        cut_w, cut_h = round(image.width * fw), round(image.height * fh)
        left, top = rng.randint(0, cut_w), rng.randint(0, cut_h)
        box = (left, top, image.width - (cut_w - left), image.height - (cut_h - top))
        return image.crop(box), {"name": name, "box": list(box)}
    if name == "mirror":
        return ImageOps.mirror(image), {"name": name}
    if name == "brightness":
        factor = round(rng.choice([rng.uniform(0.75, 0.9), rng.uniform(1.1, 1.25)]), 3)
        return ImageEnhance.Brightness(image).enhance(factor), {"name": name, "factor": factor}
    raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")


NEW_TEST_BACKGROUNDS = ("noise", "photo")


def _plantable(web: dict) -> list[dict]:
    """Web images a test image may be copied from: valid, small, captioned with their class, so
    they reach the training shards."""
    return [e for e in web["images"] if e["fault"] is None and e["caption_kind"] == "class"
            and max(e["width"], e["height"]) <= 512]


def build_test_set(folder: str, n_images: int, seed: int, planted_from: dict | None = None,
                   planted_count: int = 0, transforms: Sequence[str] = TRANSFORMS,
                   lookalike_count: int = 0, shapes: Sequence[str] | None = None,
                   colours: Sequence[str] | None = None) -> dict:
    """An ImageNet-style labelled folder `folder/<class folder>/<id>.png`, balanced over the
    classes, with `classes.json` (folder name -> class text) and the manifest `test_set.json`,
    which is also returned:

        {"folder", "seed", "classes": {"red_circle": "red circle", ...},
         "images": [{"id", "path", "class", "class_folder", "shape", "colour",
                     "kind": "new" | "planted" | "lookalike",
                     "source": web image id or None,       # planted from / looks like
                     "transform": {"name", ...params} or None, "width", "height"}]}

    Every image is new except `planted_count` transformed copies of web images (`planted_from`,
    the web manifest; transforms taken in turn) and `lookalike_count` lookalikes: a web image's
    class, background and colour redrawn with the shape moved elsewhere, which a duplicate
    detector should *not* report. Classes default to those of planted_from, else all.
    """
    if (planted_count or lookalike_count) and planted_from is None:
        raise ValueError("planted_count and lookalike_count need planted_from (a web manifest)")
    for name in transforms:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
    if planted_count and not transforms:
        raise ValueError("planted_count needs at least one transform")
    if planted_count + lookalike_count > n_images:
        raise ValueError(f"{planted_count} planted + {lookalike_count} lookalikes > {n_images} images")
    if shapes is None:
        shapes = planted_from["shapes"] if planted_from else SHAPES
    if colours is None:
        colours = planted_from["colours"] if planted_from else tuple(COLOURS)
    classes = make_classes(shapes, colours)
    rng = random.Random(f"test:{seed}")

    # Balanced slots; the planted and lookalike slots take a web image of the slot's class.
    slots = [classes[i % len(classes)] for i in range(n_images)]
    rng.shuffle(slots)
    kinds = ["planted"] * planted_count + ["lookalike"] * lookalike_count
    kinds += ["new"] * (n_images - len(kinds))
    rng.shuffle(kinds)
    candidates: dict[tuple, list[dict]] = {}
    if planted_from is not None:
        for e in _plantable(planted_from):
            candidates.setdefault((e["shape"], e["colour"]), []).append(e)
        for group in candidates.values():
            rng.shuffle(group)

    os.makedirs(folder, exist_ok=True)
    folders = {class_folder(s, c): class_text(s, c) for s, c in classes}
    for name in folders:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    entries = []
    planted_seen = 0
    for i, (kind, (shape, colour)) in enumerate(zip(kinds, slots)):
        irng = random.Random(f"test:{seed}:{i}")
        source, params = None, None
        if kind == "new":
            # A texture of its own (grain or photo-like blobs), as every photograph has: one
            # shape of one colour on a plain or graded background is the same picture as some
            # web image up to position and scale, which a copy detector rightly reports (the
            # demo's held-out set showed 17% "overlap" that way).
            spec = make_spec(shape, colour, irng, irng.randint(96, 256), irng.randint(96, 256),
                             distractor_classes=classes, backgrounds=NEW_TEST_BACKGROUNDS)
            image = draw_image(spec)
        else:
            source = _take_source(candidates, (shape, colour), irng)
            shape, colour = source["shape"], source["colour"]
            if kind == "planted":
                with Image.open(os.path.join(planted_from["folder"], source["path"])) as im:
                    original = to_rgb(im)
                image, params = transform(original, transforms[planted_seen % len(transforms)], irng)
                planted_seen += 1
            else:
                image = to_rgb(draw_image(_lookalike_spec(spec_from_dict(source["spec"]), irng)))
        name = class_folder(shape, colour)
        key = f"{i:06d}"
        path = f"{name}/{key}.png"
        image.save(os.path.join(folder, path), "PNG", compress_level=1)
        entries.append({"id": key, "path": path, "class": class_text(shape, colour),
                        "class_folder": name, "shape": shape, "colour": colour, "kind": kind,
                        "source": source["id"] if source else None, "transform": params,
                        "width": image.width, "height": image.height})

    test_set = {"folder": os.path.abspath(folder), "seed": seed, "classes": folders,
                "images": entries}
    with open(os.path.join(folder, "classes.json"), "w") as f:
        json.dump(folders, f, indent=1)
    with open(os.path.join(folder, "test_set.json"), "w") as f:
        json.dump(test_set, f, indent=1)
    return test_set


def _take_source(candidates: dict, cls: tuple, rng: random.Random) -> dict:
    """An unused web image of the class, else of any class that has one left."""
    if candidates.get(cls):
        return candidates[cls].pop()
    left = sorted(c for c, group in candidates.items() if group)
    if not left:
        raise ValueError("the web has too few valid, class-captioned images to plant from; "
                         "build a larger web or plant fewer")
    return candidates[rng.choice(left)].pop()


def _lookalike_spec(spec: ImageSpec, rng: random.Random) -> ImageSpec:
    """The same class, colour, background and size, the shape smaller, turned and moved as far
    as it will go, no distractor, a fresh texture: the same kind of picture drawn again."""
    m = min(spec.width, spec.height)
    radius = min(spec.radius, int(0.3 * m))
    margin = radius + radius // 12 + 2
    best = None
    for _ in range(20):
        cx = rng.randint(margin, max(margin, spec.width - margin))
        cy = rng.randint(margin, max(margin, spec.height - margin))
        distance = math.hypot(cx - spec.cx, cy - spec.cy)
        if best is None or distance > best[0]:
            best = (distance, cx, cy)
    limit = MAX_ROTATION[spec.shape]
    rotation = round(rng.uniform(-limit, limit), 1)
    return dataclasses.replace(spec, cx=best[1], cy=best[2], radius=radius, rotation=rotation,
                               distractor=None, seed=rng.getrandbits(32))
