"""Pixel verification of a candidate pair: is the training image a copy of the test image?

The hash stage (hashing.py, index.py) finds candidates at a loose Hamming radius: it must, since a
crop or an overlay moves a pHash 10-20 bits, and at that radius drawings, logos and text on white
collide with unrelated ones. This decides each candidate on the pixels.

What a copy may differ by: re-encoding, rescaling, a crop of up to ~25% of each side (either image
may be the cropped one), a brightness change, a horizontal flip, a caption drawn over it, and the
downloader's resize to 256 with padding to a square (img2dataset's `border` mode: white bars with
our pinned albumentations, black with albumentations >= 2; any flat bars are handled).

How: the training image's padding bars are found, then the test image (and its mirror) is placed
in the training image's content by a coarse-to-fine search over scale (0.74-1.35 of the size that
fits) and position (wherever the smaller fits inside the larger: at most a crop's worth of shift)
with normalised cross-correlation (cv2.matchTemplate). On the best placement, at the finer of the
two images' resolutions (at most 128 px), three things must agree:
  - structure: NCC of the grey levels and of the gradient magnitudes, after leaving out the 15%
    of pixels that disagree most (an overlaid caption),
  - colour: chromaticity of the agreeing pixels (a brightness change keeps it; a recoloured
    lookalike does not),
  - coverage: the overlap is most of both pictures.
The thresholds are measured on bench/dedup.py's data (see THRESHOLDS). A shape moved elsewhere
on a plain background fails the structure test, because the search only shifts as far as a crop
would; a copy too small to compare (under MIN_SIDE px) is decided on what is there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from clipdata.dedup.hashing import to_rgb

COARSE = 64          # side of the training content in the coarse search, px
FINE = 128           # at most this side in the fine comparison, px
MIN_SIDE = 16        # a test image smaller than this is not compared
MAX_INPUT = 512      # inputs are reduced to this side first
SCALES = np.geomspace(0.74, 1.35, 13)  # placement scale around the size that fits, ~5% apart
TOP_HYPOTHESES = 3
TRIM = 0.15          # fraction of worst-agreeing pixels left out (captions, logos drawn over)
FLAT_STD = 2.0 / 255  # grey std under which a picture is flat (one colour)
BAR_TOLERANCE = 12   # a padding row/column varies by at most this (JPEG q95 around flat colour)


@dataclass(frozen=True)
class Thresholds:
    ncc: float = 0.80          # trimmed grey NCC
    edge_ncc: float = 0.75     # trimmed gradient-magnitude NCC (0.55 let 28% of same-class synthetic drawings through)
    chroma: float = 0.06       # mean chromaticity difference of agreeing pixels, at most
    chroma_fg: float = 0.2     # the same over the coloured pixels alone (a recoloured drawing), at most
    coverage: float = 0.50     # overlap / each picture's area, at least


THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Verdict:
    duplicate: bool
    score: float   # 0..1, the weakest of the tests relative to its threshold (>= 0.5 passes)
    method: str    # "align" (searched placement), "flat" (one-colour pictures), "too-small"
    detail: str    # the placement found and each test's value


# ---------------------------------------------------------------------------------------------
# Preparation


def _array(image) -> np.ndarray:
    """uint8 RGB array of a PIL image or an (h, w, 3) / (h, w) array."""
    if isinstance(image, Image.Image):
        arr = np.asarray(to_rgb(image))
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 RGB, not {arr.dtype}")
    h, w = arr.shape[:2]
    if max(h, w) > MAX_INPUT:
        f = MAX_INPUT / max(h, w)
        arr = cv2.resize(arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def _grey(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0


def _resize(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    w, h = max(1, int(w)), max(1, int(h))
    if arr.shape[1] == w and arr.shape[0] == h:
        return arr
    shrinking = w * h < arr.shape[0] * arr.shape[1]
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _flat_run(lines_ptp: np.ndarray, lines_mean: np.ndarray) -> int:
    """How many leading lines are flat and of the first line's colour."""
    if lines_ptp[0] > BAR_TOLERANCE:
        return 0
    same = (lines_ptp <= BAR_TOLERANCE) & (np.abs(lines_mean - lines_mean[0]).max(axis=-1) <= BAR_TOLERANCE)
    return int(np.argmin(same)) if not same.all() else len(same)


def content_boxes(train: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) boxes the training image's content may occupy: the whole image, and the
    part between symmetric flat bars (the downloader's padding) along either axis."""
    h, w = train.shape[:2]
    boxes = [(0, 0, w, h)]
    arr = train.astype(np.int16)
    for axis in (0, 1):  # 0: bars above and below (rows); 1: bars left and right (columns)
        lines = arr if axis == 0 else arr.transpose(1, 0, 2)
        ptp = lines.max(axis=(1, 2)) - lines.min(axis=(1, 2))
        mean = lines.mean(axis=1)
        a, b = _flat_run(ptp, mean), _flat_run(ptp[::-1], mean[::-1])
        bar = min(a, b)
        if bar >= 2 and np.abs(mean[0] - mean[-1]).max() <= BAR_TOLERANCE and len(lines) - 2 * bar >= 8:
            boxes.append((0, bar, w, h - bar) if axis == 0 else (bar, 0, w - bar, h))
    return boxes


# ---------------------------------------------------------------------------------------------
# Placement search


@dataclass
class _Placement:
    ncc: float
    box: tuple      # (x0, y0, x1, y1): the training image's content box
    mirror: bool
    k: float        # test scale relative to s0 (the scale at which its area equals the box's)
    ox: float       # where the scaled test's top-left corner lies in the box, in training px
    oy: float       # (negative when the test reaches beyond the box: the training copy is cropped)


def _best_offset(content: np.ndarray, test: np.ndarray) -> tuple[float, int, int]:
    """(ncc, x, y): the best offset of `test` in `content` (both grey, same scale), sliding the
    smaller inside the larger per axis; where the test is the larger along an axis, the offset
    is negative. Along an axis where the test is larger but the content is larger along the
    other, the test's centre part of the content's length is used (a crop along one axis)."""
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


def _scaled(arr: np.ndarray, scale: float) -> np.ndarray:
    h, w = arr.shape[:2]
    return _resize(arr, max(2, round(w * scale)), max(2, round(h * scale)))


def _s0(box, test) -> float:
    x0, y0, x1, y1 = box
    return math.sqrt((x1 - x0) * (y1 - y0) / (test.shape[0] * test.shape[1]))


def _coarse(test: np.ndarray, train: np.ndarray) -> list[_Placement]:
    """The best placement per (content box, mirror), best first, at COARSE px."""
    out = []
    test_g = _grey(test)
    for box in content_boxes(train):
        x0, y0, x1, y1 = box
        c = COARSE / max(x1 - x0, y1 - y0)  # training px -> coarse px
        content = _grey(_resize(train[y0:y1, x0:x1], round((x1 - x0) * c), round((y1 - y0) * c)))
        s0 = _s0(box, test)
        # one reduction of the test to about the largest size tried, then each scale from it
        pre = _scaled(test_g, min(1.0, s0 * c * SCALES[-1] * 1.5))
        f_pre = pre.shape[1] / test_g.shape[1]
        for mirror in (False, True):
            t_pre = np.ascontiguousarray(pre[:, ::-1]) if mirror else pre
            best = None
            for k in SCALES:
                ncc, x, y = _best_offset(content, _scaled(t_pre, s0 * k * c / f_pre))
                if best is None or ncc > best.ncc:
                    best = _Placement(ncc, box, mirror, float(k), x / c, y / c)
            out.append(best)
    out.sort(key=lambda p: -p.ncc)
    return out[:TOP_HYPOTHESES]


@dataclass
class _Aligned:
    placement: _Placement
    test: np.ndarray     # RGB float32 0..1, the overlap seen in the test image
    train: np.ndarray    # the same overlap in the training image
    coverage: float      # overlap / the smaller of the two pictures' areas (at this scale)
    cover_both: float    # overlap / the larger of the two
    scale: float         # fine px per training px


def _fine(test: np.ndarray, train: np.ndarray, coarse: _Placement) -> _Aligned:
    """Refine a coarse placement at up to FINE px (never above either picture's own resolution)
    and cut out the overlap from both."""
    x0, y0, x1, y1 = coarse.box
    bw, bh = x1 - x0, y1 - y0
    s0 = _s0(coarse.box, test)
    s = s0 * coarse.k                                   # test px -> training px
    f = min(FINE / max(bw, bh), 1.0, 1.0 / s)           # training px -> fine px
    f = max(f, MIN_SIDE / max(bw, bh))
    content_rgb = _resize(train[y0:y1, x0:x1], round(bw * f), round(bh * f))
    content = _grey(content_rgb)
    test_m = np.ascontiguousarray(test[:, ::-1]) if coarse.mirror else test
    best = None
    for k in coarse.k * np.array([0.97, 0.985, 1.0, 1.015, 1.03]):
        t_rgb = _scaled(test_m, s0 * k * f)
        ncc, x, y = _best_offset(content, _grey(t_rgb))
        # a jump away from the coarse position is another placement, not a refinement
        if abs(x / f - coarse.ox) > 0.06 * bw + 2 / f or abs(y / f - coarse.oy) > 0.06 * bh + 2 / f:
            continue
        if best is None or ncc > best[0]:
            best = (ncc, k, x, y, t_rgb)
    if best is None:  # keep the coarse placement itself
        t_rgb = _scaled(test_m, s * f)
        best = (coarse.ncc, coarse.k, round(coarse.ox * f), round(coarse.oy * f), t_rgb)
    ncc, k, x, y, t_rgb = best
    th, tw = t_rgb.shape[:2]
    ch, cw = content.shape
    # overlap in content coordinates
    ax0, ay0, ax1, ay1 = max(0, x), max(0, y), min(cw, x + tw), min(ch, y + th)
    if ax1 - ax0 < 2 or ay1 - ay0 < 2:
        empty = np.zeros((1, 1, 3), np.float32)
        return _Aligned(coarse, empty, empty, 0.0, 0.0, f)
    a = t_rgb[ay0 - y:ay1 - y, ax0 - x:ax1 - x].astype(np.float32) / 255
    b = content_rgb[ay0:ay1, ax0:ax1].astype(np.float32) / 255
    overlap = (ax1 - ax0) * (ay1 - ay0)
    placement = _Placement(ncc, coarse.box, coarse.mirror, float(k), x / f, y / f)
    return _Aligned(placement, a, b, overlap / min(tw * th, cw * ch), overlap / max(tw * th, cw * ch), f)


# ---------------------------------------------------------------------------------------------
# Comparison of the aligned overlap


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 1e-12 else 0.0


def _gradient(grey: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    return rgb / (rgb.sum(axis=-1, keepdims=True) + 0.1)


COLOURED = 0.15      # a pixel whose chromaticity is this far from grey has a colour
MIN_COLOURED = 0.02  # compare the coloured pixels alone when they are at least this share
BLOCKS = 10          # the overlap is cut into about BLOCKS x BLOCKS blocks
BLOCK_STD = 0.03     # a block with grey std above this (either side) has structure to compare
BLOCK_NCC = 0.5      # a structured block agrees when its NCC is at least this


def _block_agreement(ga: np.ndarray, gb: np.ndarray) -> tuple[int, float]:
    """(structured blocks, fraction of them that agree): an overlay spoils the few blocks it
    covers, another text in the same layout or a moved shape spoils most of them."""
    h, w = ga.shape
    side = max(4, min(h, w) // BLOCKS)
    ny, nx = h // side, w // side
    if not ny or not nx:
        return 0, 0.0
    a = ga[:ny * side, :nx * side].reshape(ny, side, nx, side).transpose(0, 2, 1, 3).reshape(ny * nx, -1)
    b = gb[:ny * side, :nx * side].reshape(ny, side, nx, side).transpose(0, 2, 1, 3).reshape(ny * nx, -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    sa, sb = np.sqrt((a * a).mean(axis=1)), np.sqrt((b * b).mean(axis=1))
    structured = np.maximum(sa, sb) > BLOCK_STD
    n = int(structured.sum())
    if not n:
        return 0, 1.0
    ncc = (a * b).mean(axis=1) / np.maximum(sa * sb, 1e-12)
    return n, float((ncc[structured] >= BLOCK_NCC).mean())


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """The tests' values on two aligned RGB float patches of one size."""
    sigma = max(0.6, min(a.shape[:2]) / 128)
    ga = cv2.GaussianBlur(_grey(np.clip(a * 255, 0, 255)), (0, 0), sigma)
    gb = cv2.GaussianBlur(_grey(np.clip(b * 255, 0, 255)), (0, 0), sigma)
    std_a, std_b = float(ga.std()), float(gb.std())
    if std_a < FLAT_STD or std_b < FLAT_STD:
        return {"flat": True, "std": (std_a, std_b),
                "colour": float(np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max())}
    # grey levels of b as an affine function of a's (a brightness change), then the pixels
    # that fit worst (an overlay) left out of every test
    za, zb = (ga - ga.mean()) / std_a, (gb - gb.mean()) / std_b
    residual = np.abs(za - zb)
    keep = residual <= np.quantile(residual, 1 - TRIM)
    ea, eb = _gradient(ga), _gradient(gb)
    ca, cb = _chromaticity(a), _chromaticity(b)
    chroma = np.abs(ca - cb).sum(axis=-1)
    # A recoloured drawing on white changes only the few pixels of the drawing: averaged over
    # the whole picture the change is diluted under the threshold. So colour is also compared
    # over the pixels that have a colour (chromaticity away from grey) in either image.
    coloured = np.maximum(np.abs(ca - 1 / 3).sum(axis=-1), np.abs(cb - 1 / 3).sum(axis=-1)) > COLOURED
    coloured &= keep
    chroma_fg = float(chroma[coloured].mean()) if coloured.sum() >= MIN_COLOURED * keep.sum() else 0.0
    blocks, agree = _block_agreement(ga, gb)
    return {"flat": False,
            "blocks": blocks,
            "block_agree": agree,
            "ncc": _ncc(ga, gb),
            "ncc_trim": _ncc(ga[keep], gb[keep]),
            "edge_ncc": _ncc(ea, eb),
            "edge_trim": _ncc(ea[keep], eb[keep]),
            "chroma": float(chroma[keep].mean()),
            "chroma_fg": chroma_fg}


def _margin(values: dict, cover: float, t: Thresholds) -> float:
    """The weakest test relative to its threshold: >= 0 passes them all."""
    if values.get("flat"):
        return -1.0
    return min(values["ncc_trim"] - t.ncc, values["edge_trim"] - t.edge_ncc, t.chroma - values["chroma"],
               t.chroma_fg - values.get("chroma_fg", 0.0),
               cover - t.coverage)


def measure(test_image, train_image, thresholds: Thresholds = THRESHOLDS) -> tuple[dict, _Aligned | None]:
    """The tests' values at the best placement (for tuning and for `verify`)."""
    test, train = _array(test_image), _array(train_image)
    if min(test.shape[:2]) < 2 or min(train.shape[:2]) < 2:
        return {"flat": True, "too_small": True}, None
    best = None
    for coarse in _coarse(test, train):
        aligned = _fine(test, train, coarse)
        if aligned.test.size <= 3:
            continue
        values = compare(aligned.test, aligned.train)
        values["coverage"] = aligned.coverage
        values["cover_both"] = aligned.cover_both
        margin = _margin(values, aligned.cover_both, thresholds)
        if best is None or margin > best[0]:
            best = (margin, values, aligned)
    if best is None:
        return {"flat": True, "too_small": True}, None
    return best[1], best[2]


def verify(test_image, train_image, thresholds: Thresholds = THRESHOLDS) -> Verdict:
    """Whether `train_image` (as the shards store it) is a copy of `test_image`."""
    values, aligned = measure(test_image, train_image, thresholds)
    if aligned is None:
        return Verdict(False, 0.0, "too-small", "an image under 2 px")
    p = aligned.placement
    where = (f"{'mirrored, ' if p.mirror else ''}scale {p.k:.2f}, offset ({p.ox:.0f}, {p.oy:.0f}) px "
             f"in content box {p.box}, overlap {values['cover_both']:.2f}")
    if values.get("flat"):
        same = values["colour"] <= 0.06
        return Verdict(same, 1.0 if same else 0.0, "flat",
                       f"one-colour picture(s); mean colour differs by {values['colour']:.3f}; {where}")
    margin = _margin(values, values["cover_both"], thresholds)
    score = float(np.clip(0.5 + margin, 0.0, 1.0))
    detail = (f"{where}; ncc {values['ncc_trim']:.3f} (>= {thresholds.ncc}), edges "
              f"{values['edge_trim']:.3f} (>= {thresholds.edge_ncc}), chroma {values['chroma']:.3f} "
              f"(<= {thresholds.chroma}), untrimmed ncc {values['ncc']:.3f}")
    return Verdict(margin >= 0, score, "align", detail)
