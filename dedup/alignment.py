"""Where a test image lies in a training image: the stored picture's padding bars left out, the
test image (and its mirror) placed by normalised cross-correlation over scales and positions a
crop could give, the best placements refined to a sub-pixel similarity transform. verify.py
compares the pictures so aligned."""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from clipdata.dedup.hashing import BAR_TOLERANCE, content_boxes, to_rgb
from clipdata.pipeline.foundation.signature import picture_box, scaled_size

COARSE = 64           # side of the training content in the coarse search, px
FINE = 256            # at most this side in the comparison, px
MIN_SIDE = 24         # the comparison is never made on fewer pixels a side than this
MAX_INPUT = 512       # inputs are reduced to this side first
SCALES = np.geomspace(0.74, 1.35, 13)   # coarse placement scales around the size that fits, ~5% apart
FINE_STEPS = (-0.03, -0.015, 0.0, 0.015, 0.03)  # relative scale steps of the refinement
TOP_PLACEMENTS = 3    # coarse placements refined, besides the untouched frame


# ---------------------------------------------------------------------------------------------
# Preparation


def as_array(image) -> np.ndarray:
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


def grey_of(rgb: np.ndarray) -> np.ndarray:
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
    on besides the test image itself. The least recently used goes when PYRAMID_CAP are kept: a
    candidate adds ~50 (its refinement's scales), while the coarse search's ~15 serve every one."""
    if pyramid is None:
        return make()
    if key in pyramid:
        value = pyramid.pop(key)   # to the end: the most recently used (a dict keeps insertion order)
    else:
        if len(pyramid) >= PYRAMID_CAP:
            del pyramid[next(iter(pyramid))]
        value = make()
    pyramid[key] = value
    return value


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
    recorded: bool = False   # `box` is the picture's box from its recorded size (recorded_box), not found


def recorded_box(train: np.ndarray, found: list, original_size) -> tuple | None:
    """The picture's box from the size the download recorded (signature.picture_box), when it
    is not already among the `found` content boxes (within a pixel at 64 px, 2 at 256) and the
    pixels around it are one flat colour, as padding is: a white picture padded with white, whose
    bars content_boxes cannot see. Its coverage is then that of the picture, not of the square
    (a 20% crop of a white logo covered 0.45-0.49 of the square, under the 0.50 asked, and
    0.62-0.63 of its box). None otherwise, and for shards without the recorded size."""
    h, w = train.shape[:2]
    if h != w:
        return None
    box = picture_box(w, original_size)
    if box is None:
        return None
    tol = max(1, round(w / 128))
    if any(max(abs(a - b) for a, b in zip(box, other)) <= tol for other in found):
        return None
    x0, y0, x1, y1 = box
    # the padding, less the lines next to the picture (resampling and JPEG blur them)
    pad = [train[:max(0, y0 - tol)], train[min(h, y1 + tol):], train[:, :max(0, x0 - tol)], train[:, min(w, x1 + tol):]]
    pad = [part.reshape(-1, 3) for part in pad if part.size]
    if not pad:
        return None
    pixels = np.concatenate(pad)
    if int((pixels.max(axis=0).astype(np.int16) - pixels.min(axis=0)).max()) > 2 * BAR_TOLERANCE:
        return None   # not flat: the picture was not padded so (another resize mode, a centre crop)
    return box


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


def _best_scale(place) -> Placement:
    """The best of place(k) over SCALES, looked for coarse to fine: every other scale, then the
    two beside the best of those (8 or 9 of the 13 tried). A/B against all 13 on 7,627 kept
    candidates (bench/dedup.py quality both ways and a 200k scale run), with the linear resize of
    _placed_at: no accepted pair lost, 4 more copies accepted (2 had failed the screen, 2 the
    pixels), no other pair accepted; 13 unrelated pairs pass the screen in place of 13 others;
    placements 5.1 -> 2.7 ms a screened pair."""
    tried = {i: place(SCALES[i]) for i in range(0, len(SCALES), 2)}
    top = max(tried, key=lambda i: tried[i].ncc)
    for i in (top - 1, top + 1):
        if 0 <= i < len(SCALES) and i not in tried:
            tried[i] = place(SCALES[i])
    return max(tried.values(), key=lambda p: p.ncc)


def _placed_at(content: np.ndarray, box: tuple, c: float, s0: float, t: np.ndarray, mirror: bool,
               pre_size: tuple, f_pre: float, pyramid: dict | None, k: float) -> Placement:
    """The best offset of the test's reduction `t` (grey, mirrored when `mirror`, at f_pre of the
    test's size) in the coarse `content` (training px x c) at scale k of the size that fits (s0)."""
    size = _scaled_size(t, s0 * k * c / f_pre)
    # a linear resize: `t` is 1.5x the largest scale, so each step reduces it 1.5-2.7x (less for a
    # small test image), where a linear resize aliases a little (INTER_AREA takes 5x the time;
    # _best_scale's A/B has both)
    scaled = _memo(pyramid, ("grey", *pre_size, mirror, *size),
                   lambda: cv2.resize(t, size, interpolation=cv2.INTER_LINEAR))
    ncc, x, y = _best_offset(content, scaled)
    return Placement(box, mirror, s0 * k, x / c, y / c, ncc)


def placements(test: np.ndarray, train: np.ndarray, pyramid: dict | None = None,
               mirrored: bool | None = None, original_size=None) -> list[Placement]:
    """Placements to try, most likely first: the best coarse placement of each (content box,
    mirror), the TOP_PLACEMENTS best overall, then the untouched frame of the best boxes.
    `mirrored`: the test image's orientation when known (True: mirrored, False: as it is), the
    other one not tried; None: both. `original_size`: the training picture's size before the
    download padded it (recorded_box), when the shard records it."""
    mirrors = (False, True) if mirrored is None else (bool(mirrored),)
    test_g = _memo(pyramid, ("grey",), lambda: grey_of(test))
    found = []
    boxes = content_boxes(train)
    recorded = recorded_box(train, boxes, original_size)
    for box in boxes + ([recorded] if recorded else []):
        x0, y0, x1, y1 = box
        c = COARSE / max(x1 - x0, y1 - y0)  # training px -> coarse px
        content = grey_of(_resize(train[y0:y1, x0:x1], round((x1 - x0) * c), round((y1 - y0) * c)))
        s0 = _fit_scale(box, test.shape)
        pre_size = _scaled_size(test_g, min(1.0, s0 * c * SCALES[-1] * 1.5))  # one reduction, then each scale
        pre = _memo(pyramid, ("grey", *pre_size), lambda: _resize(test_g, *pre_size))
        f_pre = pre.shape[1] / test_g.shape[1]
        for mirror in mirrors:
            t = _memo(pyramid, ("grey", *pre_size, mirror),
                      lambda: np.ascontiguousarray(pre[:, ::-1]) if mirror else pre)
            best = _best_scale(functools.partial(_placed_at, content, box, c, s0, t, mirror, pre_size, f_pre, pyramid))
            found.append(dataclasses.replace(best, recorded=box is recorded))
    found.sort(key=lambda p: -p.ncc)
    chosen = found[:TOP_PLACEMENTS]
    # The untouched frame: the test as the downloader stores it (its longer side the training
    # image's, centred: img2dataset's border mode), as it is and mirrored. A caption over a
    # low-entropy picture can pull the correlation to a wrong placement; an uncropped copy is here.
    h, w = train.shape[:2]
    th, tw = test.shape[:2]
    s = min(w / tw, h / th)
    ch, cw = scaled_size(th, tw, s)   # albumentations' LongestMaxSize, then PadIfNeeded's centring
    for mirror in mirrors:
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


def refine(test: np.ndarray, train: np.ndarray, p: Placement, pyramid: dict | None = None,
           steps: tuple = FINE_STEPS) -> Aligned | None:
    """The placement refined to sub-pixel precision at comparison scale, and the warped test;
    `steps`: the relative scale steps tried around the placement's scale."""
    x0, y0, x1, y1 = p.box
    bw, bh = x1 - x0, y1 - y0
    # comparison scale (training px -> compared px): at most FINE, never above either picture's
    # own resolution, so a small test is compared at its size, not blown up
    f = min(FINE / max(bw, bh), 1.0, 1.0 / p.scale)
    f = max(f, min(1.0, MIN_SIDE / max(1, min(bw, bh))))
    content_rgb = _resize(train[y0:y1, x0:x1], round(bw * f), round(bh * f))
    content = grey_of(content_rgb)
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
    for step in steps:
        s = p.scale * f * (1 + step)
        sw, sh = max(2, round(tw * s)), max(2, round(th * s))
        ax0, ay0 = max(0, math.ceil(ox) + r), max(0, math.ceil(oy) + r)
        ax1, ay1 = min(cw, math.floor(ox + sw) - r), min(ch, math.floor(oy + sh) - r)
        if ax1 - ax0 < 8 or ay1 - ay0 < 8:
            continue
        # the colour reduction kept under _warp's key: the best step's is the one it warps
        rgb = _memo(pyramid, ("rgb", p.mirror, sw, sh), lambda: _resize(test_m, sw, sh))
        scaled = _memo(pyramid, ("fine", p.mirror, sw, sh), lambda: grey_of(rgb))
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
    refined = dataclasses.replace(p, scale=(sx * sy) ** 0.5 / f, ox=off_x / f, oy=off_y / f, ncc=ncc)
    # the share of both pictures that is compared; for the downloader's frame the hypothesis is
    # that the test is the whole content, padding aside
    test_area = tw * sx * th * sy
    coverage = overlap / (test_area if p.source == "frame" else max(cw * ch, test_area))
    return Aligned(refined, warped, content_rgb, mask, min(1.0, coverage))
