"""The synthetic web's pictures: a class is a (shape, colour) pair ("red circle"), drawn with PIL
at a random place, size and rotation on a varied background; encoded as the web serves them."""
from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

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


def make_background(kind: str, rng: random.Random) -> dict:
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
    background = make_background(kind, rng)
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


def image_size(rng: random.Random, large: bool) -> tuple[int, int]:
    if large:  # exercises resizing and the decoded-pixel cap downstream
        return rng.randint(1600, 2400), rng.randint(1200, 1800)
    side = rng.randint(64, 256) if rng.random() < 0.75 else rng.randint(256, 512)
    if rng.random() < 0.3:  # non-square, either way round
        other = max(48, int(side * rng.uniform(0.6, 1.6)))
        return (side, other) if rng.random() < 0.5 else (other, side)
    return side, side
