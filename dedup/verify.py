"""Pixel verification of a candidate pair: is the training image a copy of the test image?

The hash stage (hashing.py, index.py) finds candidates at a loose Hamming radius: it must, since a
crop or an overlay moves a pHash 10-20 bits, and at that radius drawings, logos and text on white
collide with unrelated ones. This decides each candidate on the pixels.

What a copy may differ by: re-encoding, rescaling, a crop of up to ~25% of each side (either image
may be the cropped one), a brightness change, a horizontal flip, a caption drawn over it, and the
downloader's resize to 256 with padding to a square (img2dataset's `border` mode: white bars with
the albumentations img2dataset pins, black with albumentations >= 2; any flat bars are handled).

How:
1. Placement. The training image's padding bars are found (`content_boxes`); the test image, and
   its mirror, is placed in the content by normalised cross-correlation (cv2.matchTemplate) over
   scales 0.74-1.35 of the size that fits and every position where the smaller picture lies
   inside the larger: at most a crop's worth of shift, so a shape moved further than a crop could
   move it is never lined up. The few best placements, plus the untouched frame (a caption drawn
   over a picture can pull the correlation elsewhere), are refined at up to 256 px to a sub-pixel
   similarity transform.
2. Comparison, on the overlap, at the resolution of the smaller picture (at most 256 px):
   - local agreement: every pixel with structure (local grey std) or colour is checked with the
     local correlation of a small window around it and with its chromaticity; `agree` is the share
     of one picture's structured or coloured pixels that agree, for whichever picture it is higher
     (a caption adds structure to one side only: the other side is still fully explained). Another
     text in the same layout, a redrawn drawing, a shape moved or recoloured, fail it.
   - global agreement: grey NCC after leaving out the 15% of pixels that disagree most.
   - colour: the coloured pixels of either picture agree in hue and saturation (`colour_agree`:
     a small shape of another colour is a minority of the structured pixels, not of the coloured
     ones), and the opponent colours differ little over the best 85% of the overlap
     (`colour_diff`: the same drawing on another background tint); where both have a colour,
     the mean hue shift is small (`hue`: a copy keeps its hues, a shape in a neighbouring
     colour, red for orange, shifts them all alike though each pixel alone is near enough).
   - tone: over the pixels that are smooth in both pictures (backgrounds, the insides of shapes),
     the colours agree once one brightness change (a gain, with a small offset, clipping at
     white) is allowed for, tried both ways (`tone_residual`): the same drawing on another
     background tint or gradient, or a shape whose inside is another shade, fails it. A pale
     background brightened until it clips to white is a real brightness copy and passes; it
     then takes the shape's inside changing by the same gain to tell a lookalike apart.
     Computed only for placements that pass every other test (it is the costliest).
   - coverage: the overlap is most of both pictures.
   A placement whose plain grey NCC is under `precheck` is not compared further: most unrelated
   candidates end there, which keeps verification at tens of pairs a second.
The thresholds are measured with `bench/dedup.py quality` (tables in its docstring): against the
committed predecessor (trimmed grey + gradient NCC and chromaticity thresholds) on the same pairs,
this verifier accepts 15x fewer unrelated candidates and 4x fewer lookalikes and keeps more copies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image

from clipdata.dedup.hashing import content_boxes, to_rgb

COARSE = 64           # side of the training content in the coarse search, px
FINE = 256            # at most this side in the comparison, px
MIN_SIDE = 24         # the comparison is never made on fewer pixels a side than this
MAX_INPUT = 512       # inputs are reduced to this side first
SCALES = np.geomspace(0.74, 1.35, 13)   # coarse placement scales around the size that fits, ~5% apart
FINE_STEPS = (-0.03, -0.015, 0.0, 0.015, 0.03)  # relative scale steps of the refinement
TOP_PLACEMENTS = 3    # coarse placements refined, besides the untouched frame
TRIM = 0.15           # share of worst-fitting pixels left out of the global NCC (a caption)
FLAT_STD = 2.0 / 255  # grey std under which a picture is flat (one colour)
FLAT_COLOUR = 0.06    # two flat pictures are one when their mean colours differ by at most this (0..1)

# Local agreement
WINDOW_SIGMA = 1.5    # px at comparison scale: the window of the local correlation
STRUCTURE_STD = 0.04  # local grey std (0..1) above which a pixel has structure
LOCAL_NCC = 0.5       # a structured pixel agrees when its local correlation is at least this
COLOURED = 0.15       # normalised opponent colour above which a pixel has a colour
HUE_COS = math.cos(math.radians(35))  # two colours agree when their hues are this close
CHROMA_RATIO = 1.6    # ... and their saturations (opponent magnitude over brightness) this close
MIN_SHARE = 0.2       # a side counts for `agree` only with at least this share of the other's structure
MATCH_BLURS = (0.0, 0.75, 1.25, 2.0, 3.0)  # px: the sharper picture is blurred to the blurrier's
MIN_COLOURED = 0.01   # coloured pixels are compared on their own when they are this share of the overlap

# Tone: the whole overlap, background included, under one brightness change
TONE_SIGMA = 2.0      # px at comparison scale: both pictures low-passed first (JPEG blocks, grain)
TONE_SAMPLE = 4096    # overlap pixels the fit uses (a fixed random sample: the statistic is what counts)
TONE_GAINS = np.linspace(0.7, 1.45, 51)  # brightness gains tried (a brightness change is a gain), every TONE_STEP-th first
TONE_OFFSET = 12.0    # levels: at most this offset besides the gain (re-encoding, colour management)
TONE_STEP = 5
TONE_FLAT = 4.0       # levels: local std under which a low-passed pixel is smooth (background, not texture)
TONE_MIN_SMOOTH = 0.1 # share of the overlap that must be smooth in both for the tone test to apply
TONE_TRIM = 0.03      # share of the smooth pixels left out (a caption's letters are not smooth; a
                      # shape's inside, which must change with the background, is a small share)
TONE_GROUP = 24.0     # levels: a pixel within this of the median colour is background, in the tone test
TONE_MIN_GROUP = 0.03 # share of the smooth pixels a group needs to count on its own
TONE_TRIM_REST = 0.10 # share of the non-background group left out (a caption's white letters are
                      # smooth inside; a shape of another shade is all of its group)
SATURATED = 250       # a level at or above which a brightening may have clipped a channel


@dataclass(frozen=True)
class Thresholds:
    agree: float = 0.80         # share of one side's structured/coloured pixels that agree
    ncc: float = 0.80           # trimmed global grey NCC
    colour_agree: float = 0.20  # share of the coloured pixels (either side) whose colours agree (JPEG q30
                                # leaves 0.26 on thin coloured lines; a recoloured shape 0-0.11)
    colour_diff: float = 0.10   # mean opponent-colour difference over the best 85% of the overlap, at most
                                # (copies: 99% under 0.075, JPEG q30 of a photo up to 0.095)
    hue: float = 15.0           # degrees: mean hue shift where both pictures have a colour, at most (copies
                                # on bench/dedup.py's originals: 99% under 7, all under 12.5 incl. JPEG q30
                                # and clipping brightenings; red against orange ~35)
    coverage: float = 0.50      # overlap / the larger picture's area, at least
    partial_agree: float = 0.0  # more `agree` asked of a partial overlap: this much more at `coverage`,
                                # none at full coverage, linear between (see PARTIAL_AGREE)
    tone: float = 6.0           # levels (0..255): RMS colour residual of the smooth pixels after a brightness
                                # change, at most (JPEG q30 of grainy dead-leaves pictures: 3-5.7; the demo's
                                # same-class drawings on other backgrounds: mostly 5-25)
    precheck: float = 0.30      # untrimmed grey NCC under which a placement is not compared further


# A partial overlap is weaker evidence: two clip arts of the same ring or heart, each with other
# small shapes around it, line up over half to three quarters of the picture with 82-89% of the
# pixels agreeing (the five false pairs of bench/dedup.py scale at 20,000 x 10,000, all accepted
# at a flat 0.80). So the agreement asked rises from 0.80 at full overlap to 0.90 (the unalike
# pairs' level) at the smallest coverage. Measured on bench/dedup.py's originals (40 copies per
# transformation and direction, a one-off script): those five pairs 4 -> 0 accepted, lookalike
# pairs 31 -> 29 of 442; photo-like copies unchanged (crop10, crop20, caption, JPEG q30: 318 of
# 320 either way); low-entropy copies 2 fewer of 40 for crop20 (test side) and for captions
# (training side), the other six cells unchanged.
PARTIAL_AGREE = 0.10
THRESHOLDS = Thresholds(partial_agree=PARTIAL_AGREE)
# A pair the copy descriptor finds unalike (cosine under --similar; overlap.py) needs more of the
# pixels: a copy is far likelier among the pairs it finds alike, so the pixels must carry more of
# the evidence. Measured on bench/dedup.py's originals (every copy whose cosine is under 0.80,
# and every unrelated pair from cosine 0.50, both directions): agree >= 0.90 accepts 16 instead
# of 57 of 9,659 unrelated pairs, and loses 20 of 2,284 20% crops and 15 of 1,320 captions on
# low-entropy pictures (~1% each; the other transformations lose 2 of ~26,000).
# (The partial-overlap rule above tops out at this level, so it does not add to it.)
UNALIKE_THRESHOLDS = replace(THRESHOLDS, agree=0.90, partial_agree=0.0)


# The tests by name, in the words a report gives a reader when one of them fails.
TEST_WORDS = {
    "agree": "the detail or its colours differ",
    "ncc": "the pictures differ once lined up",
    "coverage": "the two pictures overlap too little",
    "colour_agree": "the colours differ",
    "colour_diff": "the background or colour cast differs",
    "hue": "the colours are other hues",
    "tone": "the background or the shapes' shading differs",
    "precheck": "no placement lines the pictures up",
    "flat": "one-colour pictures of different colours",
    "too-small": "too small to compare",
}


@dataclass(frozen=True)
class Verdict:
    duplicate: bool
    score: float   # 0..1: 0.5 + the weakest test's margin over its threshold (>= 0.5: duplicate)
    method: str    # "align" (placed and compared), "flat" (one-colour pictures), "too-small"
    detail: str    # the placement found and each test's value
    failed: str | None = None  # the weakest test (a TEST_WORDS key) when not a duplicate
    values: dict | None = None  # the placement's measures: scale, mirror, coverage, agree, ...

    @property
    def reason(self) -> str:
        """One sentence for a person: why the pair is, or is not, a copy."""
        if not self.duplicate:
            return TEST_WORDS.get(self.failed or "", "not a copy")
        v = self.values or {}
        if self.method == "flat":
            return "both are one flat colour, the same one"
        how = []
        if v.get("mirror"):
            how.append("mirrored")
        scale = v.get("scale")
        if scale is not None and abs(scale - 1) > 0.03:
            how.append(f"scaled {scale:.2f}x")
        covered = v.get("coverage")
        placed = "lies in the training picture" + (f" ({', '.join(how)})" if how else "")
        parts = [f"the test picture {placed}"]
        if covered is not None:
            parts.append(f"covering {100 * covered:.0f}% of it")
        if v.get("agree") is not None:
            parts.append(f"{100 * v['agree']:.0f}% of the detail and {100 * v.get('colour_agree', 1):.0f}% "
                         "of the coloured pixels agree")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Preparation


def _array(image) -> np.ndarray:
    """uint8 RGB array of a PIL image or an (h, w, 3) / (h, w) uint8 array, at most MAX_INPUT."""
    if isinstance(image, Image.Image):
        arr = np.asarray(to_rgb(image))
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"image arrays must be uint8 RGB (h, w, 3), not {arr.dtype} {arr.shape}")
    h, w = arr.shape[:2]
    if max(h, w) > MAX_INPUT:
        f = MAX_INPUT / max(h, w)
        arr = cv2.resize(arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """0..1 float32 luma of a uint8 RGB array."""
    return (rgb.astype(np.float32) @ np.array([0.299 / 255, 0.587 / 255, 0.114 / 255], np.float32))


def _resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    w, h = max(1, int(w)), max(1, int(h))
    if arr.shape[1] == w and arr.shape[0] == h:
        return arr
    shrinking = w * h < arr.shape[0] * arr.shape[1]
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _scaled(arr: np.ndarray, scale: float) -> np.ndarray:
    return _resize(arr, *_scaled_size(arr, scale))


def _scaled_size(arr: np.ndarray, scale: float) -> tuple[int, int]:
    h, w = arr.shape[:2]
    return max(2, round(w * scale)), max(2, round(h * scale))


PYRAMID_CAP = 512     # reductions of one test image kept for its next candidates


def _memo(pyramid: dict | None, key: tuple, make):
    """make(), kept in `pyramid` under `key` when a pyramid is given: the test image's grey
    version and reductions, which every candidate of that test image asks for again (the screen
    compares one test image with hundreds of thumbnails). Keys name everything a value depends
    on besides the test image itself."""
    if pyramid is None:
        return make()
    if key not in pyramid:
        if len(pyramid) >= PYRAMID_CAP:
            pyramid.clear()
        pyramid[key] = make()
    return pyramid[key]


# ---------------------------------------------------------------------------------------------
# Placement: where the test image lies in the training image


@dataclass
class Placement:
    """The test image (mirrored first when `mirror`) scaled by `scale` (test px -> training px)
    with its top-left corner at (ox, oy) training px from the content box's corner; negative
    offsets when the test reaches beyond the box (the training copy is the cropped one)."""
    box: tuple
    mirror: bool
    scale: float
    ox: float
    oy: float
    ncc: float = 0.0
    source: str = "search"   # "search" or "frame" (the downloader's own geometry, not searched)
    exact: tuple | None = None  # (x scale, y scale) of a frame placement


def _best_offset(content: np.ndarray, test: np.ndarray) -> tuple[float, int, int]:
    """(ncc, x, y): the best offset of `test` in `content` (both grey, one scale), the smaller
    sliding inside the larger per axis (negative offsets when the test is the larger); along an
    axis where the test is larger but not along the other, its centre part is slid."""
    ch, cw = content.shape
    th, tw = test.shape
    inside_x, inside_y = tw <= cw, th <= ch
    if inside_x and inside_y:
        res = cv2.matchTemplate(content, test, cv2.TM_CCOEFF_NORMED)
        y, x = np.unravel_index(int(np.argmax(res)), res.shape)
        return float(res[y, x]), x, y
    if not inside_x and not inside_y:
        res = cv2.matchTemplate(test, content, cv2.TM_CCOEFF_NORMED)
        y, x = np.unravel_index(int(np.argmax(res)), res.shape)
        return float(res[y, x]), -x, -y
    if inside_x:
        y0 = (th - ch) // 2
        res = cv2.matchTemplate(content, np.ascontiguousarray(test[y0:y0 + ch]), cv2.TM_CCOEFF_NORMED)
        y, x = np.unravel_index(int(np.argmax(res)), res.shape)
        return float(res[y, x]), x, -y0
    x0 = (tw - cw) // 2
    res = cv2.matchTemplate(content, np.ascontiguousarray(test[:, x0:x0 + cw]), cv2.TM_CCOEFF_NORMED)
    y, x = np.unravel_index(int(np.argmax(res)), res.shape)
    return float(res[y, x]), -x0, y


def _fit_scale(box, test_shape) -> float:
    """Test px -> training px at which the test's area equals the content box's."""
    x0, y0, x1, y1 = box
    return math.sqrt((x1 - x0) * (y1 - y0) / (test_shape[0] * test_shape[1]))


def placements(test: np.ndarray, train: np.ndarray, pyramid: dict | None = None) -> list[Placement]:
    """Placements to try, most likely first: the best coarse placement of each (content box,
    mirror), the TOP_PLACEMENTS best overall, then the untouched frame of the best boxes."""
    test_g = _memo(pyramid, ("grey",), lambda: _grey(test))
    found = []
    for box in content_boxes(train):
        x0, y0, x1, y1 = box
        c = COARSE / max(x1 - x0, y1 - y0)  # training px -> coarse px
        content = _grey(_resize(train[y0:y1, x0:x1], round((x1 - x0) * c), round((y1 - y0) * c)))
        s0 = _fit_scale(box, test.shape)
        pre_size = _scaled_size(test_g, min(1.0, s0 * c * SCALES[-1] * 1.5))  # one reduction, then each scale
        pre = _memo(pyramid, ("grey", *pre_size), lambda: _resize(test_g, *pre_size))
        f_pre = pre.shape[1] / test_g.shape[1]
        for mirror in (False, True):
            t = _memo(pyramid, ("grey", *pre_size, mirror),
                      lambda: np.ascontiguousarray(pre[:, ::-1]) if mirror else pre)
            best = None
            for k in SCALES:
                size = _scaled_size(t, s0 * k * c / f_pre)
                scaled = _memo(pyramid, ("grey", *pre_size, mirror, *size), lambda: _resize(t, *size))
                ncc, x, y = _best_offset(content, scaled)
                if best is None or ncc > best.ncc:
                    best = Placement(box, mirror, s0 * k, x / c, y / c, ncc)
            found.append(best)
    found.sort(key=lambda p: -p.ncc)
    chosen = found[:TOP_PLACEMENTS]
    # The untouched frame: the test as the downloader stores it (its longer side the training
    # image's, centred: img2dataset's border mode), as it is and mirrored. A caption over a
    # low-entropy picture can pull the correlation to a wrong placement; an uncropped copy is here.
    h, w = train.shape[:2]
    th, tw = test.shape[:2]
    s = min(w / tw, h / th)
    cw, ch = max(1, round(tw * s)), max(1, round(th * s))  # albumentations' LongestMaxSize, then
    for mirror in (False, True):                          # PadIfNeeded's centring
        chosen.append(Placement((0, 0, w, h), mirror, s, (w - cw) // 2, (h - ch) // 2, 0.0, "frame",
                                (cw / tw, ch / th)))
    return chosen


def _parabola(a: float, b: float, c: float) -> float:
    """Offset in -0.5..0.5 of the peak of a parabola through (-1, a), (0, b), (1, c)."""
    den = a - 2 * b + c
    return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))


@dataclass
class Aligned:
    placement: Placement
    test: np.ndarray     # uint8 RGB: the test image warped onto the training content, comparison scale
    train: np.ndarray    # uint8 RGB: the training content at comparison scale
    mask: np.ndarray     # bool: the overlap
    coverage: float      # overlap / the larger of the two pictures' areas


def refine(test: np.ndarray, train: np.ndarray, p: Placement, pyramid: dict | None = None) -> Aligned | None:
    """The placement refined to sub-pixel precision at comparison scale, and the warped test."""
    x0, y0, x1, y1 = p.box
    bw, bh = x1 - x0, y1 - y0
    # comparison scale (training px -> compared px): at most FINE, never above either picture's
    # own resolution, so a small test is compared at its size, not blown up
    f = min(FINE / max(bw, bh), 1.0, 1.0 / p.scale)
    f = max(f, min(1.0, MIN_SIDE / max(1, min(bw, bh))))
    content_rgb = _resize(train[y0:y1, x0:x1], round(bw * f), round(bh * f))
    content = _grey(content_rgb)
    ch, cw = content.shape
    test_m = _memo(pyramid, ("rgb", p.mirror), lambda: np.ascontiguousarray(test[:, ::-1]) if p.mirror else test)
    th, tw = test_m.shape[:2]
    # The template: the content under the placed test, shrunk by the search radius r; it is
    # slid over the scaled test within +-r px (every case: test or content the larger).
    if p.exact is not None:
        return _warp(test_m, content_rgb, p, f, p.exact[0] * f, p.exact[1] * f, p.ox * f, p.oy * f, p.ncc, pyramid)
    r = max(2, round(0.02 * max(cw, ch)))
    ox, oy = p.ox * f, p.oy * f
    best = None
    for step in FINE_STEPS:
        s = p.scale * f * (1 + step)
        sw, sh = max(2, round(tw * s)), max(2, round(th * s))
        ax0, ay0 = max(0, math.ceil(ox) + r), max(0, math.ceil(oy) + r)
        ax1, ay1 = min(cw, math.floor(ox + sw) - r), min(ch, math.floor(oy + sh) - r)
        if ax1 - ax0 < 8 or ay1 - ay0 < 8:
            continue
        scaled = _memo(pyramid, ("fine", p.mirror, sw, sh), lambda: _grey(_resize(test_m, sw, sh)))
        # the template's window in the scaled test, +-r
        tx0, ty0 = round(ax0 - ox) - r, round(ay0 - oy) - r
        tx1, ty1 = round(ax1 - ox) + r, round(ay1 - oy) + r
        if tx0 < 0 or ty0 < 0 or tx1 > sw or ty1 > sh:
            continue
        res = cv2.matchTemplate(np.ascontiguousarray(scaled[ty0:ty1, tx0:tx1]),
                                np.ascontiguousarray(content[ay0:ay1, ax0:ax1]), cv2.TM_CCOEFF_NORMED)
        y, x = np.unravel_index(int(np.argmax(res)), res.shape)
        if best is None or res[y, x] > best[0]:
            best = (float(res[y, x]), res, x, y, tx0, ty0, ax0, ay0, sw, sh)
    if best is None:
        return None
    ncc, res, x, y, tx0, ty0, ax0, ay0, sw, sh = best
    dx = _parabola(res[y, x - 1], res[y, x], res[y, x + 1]) if 0 < x < res.shape[1] - 1 else 0.0
    dy = _parabola(res[y - 1, x], res[y, x], res[y + 1, x]) if 0 < y < res.shape[0] - 1 else 0.0
    # content pixel (ax0, ay0) lies on scaled-test pixel (tx0 + x + dx, ty0 + y + dy)
    off_x, off_y = ax0 - (tx0 + x + dx), ay0 - (ty0 + y + dy)
    return _warp(test_m, content_rgb, p, f, sw / tw, sh / th, off_x, off_y, ncc, pyramid)


def _warp(test_m: np.ndarray, content_rgb: np.ndarray, p: Placement, f: float, sx: float, sy: float,
          off_x: float, off_y: float, ncc: float, pyramid: dict | None = None) -> Aligned | None:
    """The (mirrored) test scaled by (sx, sy) with its corner at (off_x, off_y), on the content."""
    th, tw = test_m.shape[:2]
    ch, cw = content_rgb.shape[:2]
    # reduce the test to about the scale first (no aliasing), then the exact transform
    size = max(2, round(tw * sx)), max(2, round(th * sy))
    pre = _memo(pyramid, ("rgb", p.mirror, *size), lambda: _resize(test_m, *size)) if max(sx, sy) < 1 else test_m
    kx, ky = sx * tw / pre.shape[1], sy * th / pre.shape[0]
    # pixel centres: pre's pixel u is the scaled test's (u + 0.5) k - 0.5
    m = np.array([[kx, 0, off_x + 0.5 * (kx - 1)], [0, ky, off_y + 0.5 * (ky - 1)]], np.float32)
    warped = cv2.warpAffine(pre, m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    inside = cv2.warpAffine(np.full(pre.shape[:2], 255, np.uint8), m, (cw, ch), flags=cv2.INTER_NEAREST)
    mask = cv2.erode(inside, np.ones((3, 3), np.uint8)) > 0
    # outside the overlap, the training pixels: blurs and local windows then see no false edge
    # along the overlap's border
    warped[~mask] = content_rgb[~mask]
    overlap = int(mask.sum())
    if overlap < 64:
        return None
    refined = Placement(p.box, p.mirror, (sx * sy) ** 0.5 / f, off_x / f, off_y / f, ncc, p.source, p.exact)
    # the share of both pictures that is compared; for the downloader's frame the hypothesis is
    # that the test is the whole content, padding aside
    test_area = tw * sx * th * sy
    coverage = overlap / (test_area if p.source == "frame" else max(cw * ch, test_area))
    return Aligned(refined, warped, content_rgb, mask, min(1.0, coverage))


# ---------------------------------------------------------------------------------------------
# Comparison of the aligned pictures


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 1e-12 else 0.0


def _trimmed_ncc(x: np.ndarray, y: np.ndarray) -> float:
    """Grey NCC without the TRIM share of pixels that fit worst (a caption drawn over)."""
    sx, sy = float(x.std()), float(y.std())
    if sx < 1e-6 or sy < 1e-6:
        return 0.0
    zx, zy = (x - x.mean()) / sx, (y - y.mean()) / sy
    residual = np.abs(zx - zy)
    k = min(len(residual) - 1, int(len(residual) * (1 - TRIM)))
    keep = residual <= np.partition(residual, k)[k]
    return _ncc(zx[keep], zy[keep])


def _opponent(rgb: np.ndarray) -> np.ndarray:
    """Red-green and yellow-blue opponent colours over brightness: unchanged by a brightness
    change, near 0 on greys, whites and blacks."""
    x = rgb.astype(np.float32) / 255
    grey = x.mean(axis=-1, keepdims=True)
    opp = np.concatenate([x[..., :1] - x[..., 1:2], 0.5 * (x[..., :1] + x[..., 1:2]) - x[..., 2:]], axis=-1)
    return opp / (grey + 0.15)


def _match_sharpness(a, b, ga, gb, mask):
    """Blur the sharper picture to the blurrier one's sharpness: a training copy upscaled from a
    thumbnail (img2dataset enlarges small images to 256 px) holds less detail than its test image.
    The blur is the one that makes the two most alike (trimmed grey NCC over the mask, so that a
    caption, which any blur makes more alike its background, does not choose it)."""
    # judged at half resolution (blurs halved): a quarter of the work, the same choice
    h, w = mask.shape
    half = lambda x: cv2.resize(x, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)  # noqa: E731
    ha, hb, sub = half(ga), half(gb), half(mask.astype(np.float32)) > 0.99
    if sub.sum() < 16:
        ha, hb, sub = ga, gb, mask
    step = 0.5 if ha.shape != ga.shape else 1.0
    best = (_trimmed_ncc(ha[sub], hb[sub]), 0.0, None)
    for sigma in MATCH_BLURS[1:]:
        for side in ("a", "b"):
            g = cv2.GaussianBlur(ha if side == "a" else hb, (0, 0), sigma * step)[sub]
            ncc = _trimmed_ncc(g, hb[sub]) if side == "a" else _trimmed_ncc(ha[sub], g)
            if ncc > best[0] + 0.002:
                best = (ncc, sigma, side)
    _, sigma, side = best
    if side == "a":
        a = cv2.GaussianBlur(a, (0, 0), sigma)
        ga = cv2.GaussianBlur(ga, (0, 0), sigma)
    elif side == "b":
        b = cv2.GaussianBlur(b, (0, 0), sigma)
        gb = cv2.GaussianBlur(gb, (0, 0), sigma)
    return a, b, ga, gb, sigma


def _tone_residual(x: np.ndarray, y: np.ndarray) -> float:
    """Trimmed RMS (levels) of y - clip(g x + o) for the best gain g, one for all channels (a
    brightness change; a gain per channel would be a colour change), the small offset o the
    median over the pixels that neither side saturates. The RMS is taken over x's background
    (the pixels near its median colour) and over the rest (the insides of shapes) apart, and the
    worse one counts: one gain must explain both, or a shade of the same shape on a slightly
    different background passes on the background's many pixels alone. (The RMS over all of
    them counts too: a pair this rejects is never accepted for the grouping.)"""
    background = np.abs(x - np.median(x, axis=0)).max(axis=1) <= TONE_GROUP
    groups = [g for g in (background, ~background) if g.sum() >= max(TONE_MIN_GROUP * len(x), 16)]
    keeps = [max(1, int(g.sum() * (1 - (TONE_TRIM if g is background else TONE_TRIM_REST)))) for g in groups]
    keep_all = max(1, int(len(x) * (1 - TONE_TRIM)))

    def residual(gain: float) -> float:
        gx = gain * x
        free = (gx < SATURATED) & (y < SATURATED)
        offset = float(np.clip(np.median((y - gx)[free]), -TONE_OFFSET, TONE_OFFSET)) if free.any() else 0.0
        r = np.abs(y - np.clip(gx + offset, 0, 255)).max(axis=1)
        every = np.partition(r, keep_all - 1)[:keep_all]
        worst = float(np.sqrt((every * every).mean()))   # all smooth pixels together, as well
        for g, keep in zip(groups, keeps):
            rg = np.partition(r[g], keep - 1)[:keep]
            worst = max(worst, float(np.sqrt((rg * rg).mean())))
        return worst

    # every TONE_STEP-th gain, then the gains around the best of those
    coarse = {i: residual(TONE_GAINS[i]) for i in range(0, len(TONE_GAINS), TONE_STEP)}
    best = min(coarse, key=coarse.get)
    fine = [residual(TONE_GAINS[i]) for i in range(max(0, best - TONE_STEP + 1), min(len(TONE_GAINS), best + TONE_STEP))
            if i not in coarse]
    return min([coarse[best], *fine])


def _local_std(grey: np.ndarray) -> np.ndarray:
    m = cv2.GaussianBlur(grey, (0, 0), 3.0)
    return np.sqrt(np.maximum(cv2.GaussianBlur(grey * grey, (0, 0), 3.0) - m * m, 0))


def tone_residual(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """How far apart two aligned pictures' colours are over the whole overlap, background
    included, once a brightness change is allowed for; tried both ways, since a brightening clips
    to white and only the darker side then predicts the brighter. The same drawing on another
    background (a tint, a gradient, a texture), or a shape of another outline, leaves a residual
    that the structure tests, which look at edges, do not see; a re-encode, resize, crop, flip or
    brightness change leaves little (measured: see THRESHOLDS), the worst TRIM share (a caption)
    left out."""
    fa = cv2.GaussianBlur(a.astype(np.float32), (0, 0), TONE_SIGMA)
    fb = cv2.GaussianBlur(b.astype(np.float32), (0, 0), TONE_SIGMA)
    # Only where both pictures are smooth: a texture's re-encoding error is not a colour
    # difference, and textured pictures are told apart by their structure already.
    smooth = mask & (_local_std(fa.mean(axis=2)) < TONE_FLAT) & (_local_std(fb.mean(axis=2)) < TONE_FLAT)
    if smooth.sum() < TONE_MIN_SMOOTH * mask.sum():
        return 0.0
    fa, fb = fa[smooth], fb[smooth]
    if len(fa) > TONE_SAMPLE:
        pick = np.random.default_rng(0).choice(len(fa), TONE_SAMPLE, replace=False)
        fa, fb = fa[pick], fb[pick]
    return min(_tone_residual(fa, fb), _tone_residual(fb, fa))


def compare(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> dict:
    """The tests' values on two aligned uint8 RGB pictures of one size, over `mask`."""
    ga, gb = _grey(a), _grey(b)
    a, b, ga, gb, blur_sigma = _match_sharpness(a, b, ga, gb, mask)
    std_a, std_b = float(ga[mask].std()), float(gb[mask].std())
    if std_a < FLAT_STD and std_b < FLAT_STD:
        colour = np.abs(a[mask].mean(axis=0) - b[mask].mean(axis=0)).max() / 255
        return {"flat": True, "colour": float(colour)}
    ncc_trim = _trimmed_ncc(ga[mask], gb[mask])
    # local: correlation over a Gaussian window around every pixel
    window = math.hypot(WINDOW_SIGMA, blur_sigma)
    blur = lambda x: cv2.GaussianBlur(x, (0, 0), window)  # noqa: E731
    ma, mb = blur(ga), blur(gb)
    va = np.maximum(blur(ga * ga) - ma * ma, 0)
    vb = np.maximum(blur(gb * gb) - mb * mb, 0)
    cov = blur(ga * gb) - ma * mb
    sa, sb = np.sqrt(va), np.sqrt(vb)
    local = cov / np.maximum(sa * sb, 1e-6)
    structured_a, structured_b = (sa > STRUCTURE_STD) & mask, (sb > STRUCTURE_STD) & mask
    structure_ok = local >= LOCAL_NCC
    # colour: where both have one, the same hue; where one has a colour, the other has it too,
    # unless a brightening clipped it to white
    oa = _opponent(cv2.GaussianBlur(a, (0, 0), window))
    ob = _opponent(cv2.GaussianBlur(b, (0, 0), window))
    chroma_a, chroma_b = np.hypot(oa[..., 0], oa[..., 1]), np.hypot(ob[..., 0], ob[..., 1])
    coloured_a, coloured_b = (chroma_a > COLOURED) & mask, (chroma_b > COLOURED) & mask
    cos_hue = (oa * ob).sum(axis=-1) / np.maximum(chroma_a * chroma_b, 1e-6)
    white_a, white_b = a.min(axis=-1) >= 245, b.min(axis=-1) >= 245
    ratio = chroma_a / np.maximum(chroma_b, 1e-6)
    same_colour = (cos_hue >= HUE_COS) & (ratio <= CHROMA_RATIO) & (ratio >= 1 / CHROMA_RATIO)
    colour_ok = np.where(coloured_a & coloured_b, same_colour,
                         ~(coloured_a & ~white_b & (chroma_b < 0.5 * chroma_a))
                         & ~(coloured_b & ~white_a & (chroma_a < 0.5 * chroma_b)))
    agree = colour_ok & (structure_ok | ~(structured_a | structured_b))
    shares = []
    n_a = int((structured_a | coloured_a).sum())
    n_b = int((structured_b | coloured_b).sum())
    for own, n_own, n_other in ((structured_a | coloured_a, n_a, n_b), (structured_b | coloured_b, n_b, n_a)):
        if n_own and n_own >= MIN_SHARE * n_other:
            shares.append(float(agree[own].mean()))
    if not n_a and not n_b:
        shares.append(float(colour_ok[mask].mean()))
    # colour over the whole overlap: the coloured pixels of either picture agree (a recoloured
    # shape, a shape of another colour on the same background), and the opponent colours differ
    # little on most pixels (another background tint); the worst TRIM share (a caption) left out
    coloured = coloured_a | coloured_b
    n_col = int(coloured.sum())
    colour_agree = float(colour_ok[coloured].mean()) if n_col >= MIN_COLOURED * int(mask.sum()) else 1.0
    # hue: where both pictures have a colour, how far apart their hues are on average (weighted by
    # the weaker chroma, so blended edges count little); a copy keeps its hues, a lookalike in a
    # neighbouring colour (red and orange) shifts every one of them by the same angle
    both = coloured_a & coloured_b
    if int(both.sum()) >= max(16, MIN_COLOURED * int(mask.sum())):
        angle = np.degrees(np.arccos(np.clip(cos_hue[both], -1.0, 1.0)))
        weight = np.minimum(chroma_a[both], chroma_b[both])
        hue_shift = float((angle * weight).sum() / max(float(weight.sum()), 1e-6))
    else:
        hue_shift = 0.0
    diff = np.hypot(oa[..., 0] - ob[..., 0], oa[..., 1] - ob[..., 1])[mask]
    k = min(len(diff) - 1, int(len(diff) * (1 - TRIM)))
    colour_diff = float(np.partition(diff, k)[:k + 1].mean())
    return {"flat": False, "ncc_trim": ncc_trim, "agree": max(shares) if shares else 0.0,
            "colour_agree": colour_agree, "colour_diff": colour_diff, "hue_shift": hue_shift,
            # the costliest test, only where every other one passes
            "tone": None,
            "agree_a": float(agree[structured_a | coloured_a].mean()) if n_a else 1.0,
            "agree_b": float(agree[structured_b | coloured_b].mean()) if n_b else 1.0,
            "content_a": n_a, "content_b": n_b, "blur": blur_sigma}


def agree_needed(coverage: float, t: Thresholds) -> float:
    """The agreement a placement of this coverage needs: t.agree at full overlap, up to
    t.agree + t.partial_agree at the smallest coverage allowed."""
    if t.partial_agree <= 0 or t.coverage >= 1:
        return t.agree
    share = min(1.0, max(0.0, (1.0 - coverage) / (1.0 - t.coverage)))
    return t.agree + t.partial_agree * share


def _margins(values: dict, coverage: float, t: Thresholds) -> dict[str, float]:
    """Each test's value relative to its threshold, by name (>= 0 passes it)."""
    return {"agree": values["agree"] - agree_needed(coverage, t), "ncc": values["ncc_trim"] - t.ncc,
            "coverage": coverage - t.coverage, "colour_agree": values["colour_agree"] - t.colour_agree,
            "colour_diff": t.colour_diff - values["colour_diff"],
            "hue": (t.hue - values.get("hue_shift", 0.0)) / 90,   # degrees -> ~0..1 scale
            "tone": 1.0 if values["tone"] is None else (t.tone - values["tone"]) / 25}  # levels -> ~0..1 scale


def _margin(values: dict, coverage: float, t: Thresholds) -> float:
    """The weakest test relative to its threshold: >= 0 passes them all."""
    if values.get("flat"):
        return FLAT_COLOUR - values["colour"]  # one-colour pictures: the same colour
    return min(_margins(values, coverage, t).values())


def measure(test_image, train_image, thresholds: Thresholds = THRESHOLDS, stop_early: bool = True,
            pyramid: dict | None = None) -> list[tuple[dict, Aligned]]:
    """(values, alignment) of each placement tried, in order; with stop_early, the first that
    passes ends the list."""
    test, train = _array(test_image), _array(train_image)
    if min(test.shape[:2]) < 2 or min(train.shape[:2]) < 2:
        return []
    out = []
    for p in placements(test, train, pyramid):
        aligned = refine(test, train, p, pyramid)
        if aligned is None:
            continue
        ga, gb = _grey(aligned.test)[aligned.mask], _grey(aligned.train)[aligned.mask]
        quick = _ncc(ga, gb)
        if quick < thresholds.precheck and min(ga.std(), gb.std()) >= FLAT_STD:
            # far from a copy on every test: not worth the comparison (most unrelated candidates)
            values = {"flat": False, "ncc_trim": quick, "agree": 0.0, "colour_agree": 0.0, "colour_diff": 1.0,
                      "tone": 255.0, "precheck": True}
        else:
            values = compare(aligned.test, aligned.train, aligned.mask)
            if not values.get("flat") and _margin(values, aligned.coverage, thresholds) >= 0:
                values["tone"] = tone_residual(aligned.test, aligned.train, aligned.mask)
        values["coverage"] = aligned.coverage
        out.append((values, aligned))
        if stop_early and _margin(values, aligned.coverage, thresholds) >= 0:
            break
    return out


def _weakest(values: dict, coverage: float, t: Thresholds) -> str:
    """The name of the test with the smallest margin (what _margin's minimum comes from)."""
    if values.get("precheck"):
        return "precheck"
    margins = _margins(values, coverage, t)
    return min(margins, key=margins.get)


def verify(test_image, train_image, thresholds: Thresholds = THRESHOLDS, pyramid: dict | None = None) -> Verdict:
    """Whether `train_image` (as the shards store it) is a copy of `test_image`. `pyramid`: an
    empty dict to keep the test image's reductions in for its next candidates (the same test
    image, and the same array object, each time it is given)."""
    tried = measure(test_image, train_image, thresholds, pyramid=pyramid)
    if not tried:
        return Verdict(False, 0.0, "too-small", "no placement with an overlap of 64 px or more", "too-small")
    values, aligned = max(tried, key=lambda va: _margin(va[0], va[1].coverage, thresholds))
    p = aligned.placement
    where = (f"{'mirrored, ' if p.mirror else ''}scale {p.scale:.3f}, offset ({p.ox:.1f}, {p.oy:.1f}) px "
             f"in content box {p.box} ({p.source}), coverage {aligned.coverage:.2f}")
    measures = {"mirror": p.mirror, "scale": round(float(p.scale), 4), "coverage": round(float(aligned.coverage), 4)}
    if values.get("flat"):
        same = values["colour"] <= FLAT_COLOUR
        return Verdict(same, 1.0 if same else 0.0, "flat",
                       f"one-colour picture(s), mean colours {values['colour']:.3f} apart; {where}",
                       None if same else "flat", measures)
    margin = _margin(values, aligned.coverage, thresholds)
    for name in ("agree", "ncc_trim", "colour_agree", "colour_diff", "hue_shift", "tone"):
        if values.get(name) is not None:
            measures[name] = round(float(values[name]), 4)
    if values.get("precheck"):
        detail = f"{where}; grey ncc {values['ncc_trim']:.3f} (< {thresholds.precheck}: not compared further)"
    else:
        detail = (f"{where}; agree {values['agree']:.3f} (>= {agree_needed(aligned.coverage, thresholds):.3g}), trimmed ncc "
                  f"{values['ncc_trim']:.3f} (>= {thresholds.ncc}), colours agree {values['colour_agree']:.3f} "
                  f"(>= {thresholds.colour_agree}), colour difference {values['colour_diff']:.3f} "
                  f"(<= {thresholds.colour_diff}), hue shift {values.get('hue_shift', 0.0):.1f} deg "
                  f"(<= {thresholds.hue}), tone residual "
                  f"{'not needed' if values['tone'] is None else format(values['tone'], '.1f')} (<= {thresholds.tone}), "
                  f"coverage >= {thresholds.coverage}")
    return Verdict(margin >= 0, float(np.clip(0.5 + margin, 0.0, 1.0)), "align", detail,
                   None if margin >= 0 else _weakest(values, aligned.coverage, thresholds), measures)


# ---------------------------------------------------------------------------------------------
# The screen: the same tests on the thumbnail the downloader stored (pipeline/foundation/thumbs.py)

SCREEN_TEST_SIDE = 192   # the test image is reduced to this first: the thumbnail is 64 px
# The screen must not lose a copy the pixels accept, so it is looser than verify(): at 64 px the
# padding bars blur into the picture (coverage reads low) and fine detail agrees less.
SCREEN_THRESHOLDS = Thresholds(agree=0.75, ncc=0.75, coverage=0.40, tone=8.0, hue=20.0)
SCREEN_UNALIKE_THRESHOLDS = replace(SCREEN_THRESHOLDS, agree=0.85)   # the screen's, more detail agreeing


def reduce_for_screen(test_image) -> np.ndarray:
    """The test image as the screen compares it: uint8 RGB, at most SCREEN_TEST_SIDE px a side
    (reduce once per test image and reuse it for all its candidates)."""
    arr = _array(test_image)
    h, w = arr.shape[:2]
    if max(h, w) > SCREEN_TEST_SIDE:
        f = SCREEN_TEST_SIDE / max(h, w)
        arr = cv2.resize(arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def screen(test_reduced: np.ndarray, thumb: np.ndarray, thresholds: Thresholds = SCREEN_THRESHOLDS,
           pyramid: dict | None = None) -> Verdict:
    """verify() on the training image's stored thumbnail instead of its pixels, with looser
    thresholds: a pair it rejects is taken as not a copy, so only the pairs it passes need the
    training image from the tar, where verify() gives the verdict. Measured on
    bench/dedup.py's originals: 5.7% of 1,500 unrelated hash candidates pass it, and it rejects
    3 of the 791 copies verify() accepts (0.4%); ~19 ms a pair against verify()'s ~45-70."""
    return verify(test_reduced, thumb, thresholds, pyramid)
