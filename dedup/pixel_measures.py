"""The measures verify.py decides a pair on, over the overlap of two aligned pictures at one
resolution: local agreement of structure and colour, the trimmed global correlation, colour and
hue agreement, and the tone test (one brightness change explains the whole overlap)."""
from __future__ import annotations

import math

import cv2
import numpy as np

from clipdata.dedup.alignment import grey_of

TRIM = 0.15           # share of worst-fitting pixels left out of the global NCC (a caption)
TRIM_FIT = 0.25       # standard deviations: a pixel whose two values differ by less is kept all the same
TRIM_REFITS = 2       # the trimmed NCC normalised again by the pixels it kept, this many times (_trimmed_ncc)
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
# Detail one picture has and the other lacks (_extra_detail); px at comparison scale (at most 256)
PRESENT_STD = 0.5 * STRUCTURE_STD  # local grey std above which a pixel shows something (a faint texture)
EXTRA_REACH = 5       # px: detail this near something of the other picture is not lacking there
EXTRA_SOLID = 3       # px: the opening that keeps solid patches, not scattered pixels
EXTRA_BORDER = 4      # px: the overlap's border left out (a blur there sees past the picture's edge)

# A caption or a watermark drawn over one picture (_caption_agree): the band of rows it may take,
# the share of the other picture's detail that must lie outside it, and the share of that
# picture's disagreeing detail that must lie under the captioned picture's detail (it is hidden)
CAPTION_BAND = 0.15
CAPTION_OUTSIDE = 0.4
CAPTION_HIDDEN = 0.995

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
# A busy picture's smooth pixels lie near edges, where JPEG's ringing and chroma subsampling reach:
# its re-encoded copy leaves a larger tone residual. Where less than TONE_BUSY_SHARE of the overlap
# is smooth, up to TONE_BUSY_EXTRA more levels are allowed (all of it at TONE_MIN_SMOOTH, none at
# TONE_BUSY_SHARE). Measured on bench/dedup.py quality's pixel-checked pairs (both directions): the
# copies rejected on tone alone (JPEG q30 of dead leaves, 12 of them, residual 6.1-8.6) had 0.11-0.24
# of the overlap smooth; the false pairs near the threshold (residual 6.1-7.5, clip art of one shape)
# 0.45-0.84. 10 of those copies pass with it, none of the false pairs.
TONE_BUSY_SHARE = 0.35
TONE_BUSY_EXTRA = 3.0


def tone_allowance(smooth_share: float) -> float:
    """Levels of tone residual allowed beyond the threshold for a busy overlap (see TONE_BUSY_SHARE)."""
    if smooth_share >= TONE_BUSY_SHARE:
        return 0.0
    busy = (TONE_BUSY_SHARE - max(smooth_share, TONE_MIN_SMOOTH)) / (TONE_BUSY_SHARE - TONE_MIN_SMOOTH)
    return TONE_BUSY_EXTRA * busy


# ---------------------------------------------------------------------------------------------
# Comparison of the aligned pictures


def grey_ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 1e-12 else 0.0


def _trimmed_ncc(x: np.ndarray, y: np.ndarray, enough: float = math.inf) -> float:
    """_trimmed_ncc_once, then again with each picture normalised by the pixels the pass before
    kept (TRIM_REFITS times, while under `enough`: a value that high passes the test anyway), the
    best of them. One pass normalises by every pixel's mean and spread: a caption over a picture
    that is mostly one flat colour (text on white) is a large part of that spread, so every
    pixel's normalised value moves and the trim cannot tell the caption out; normalised by the
    pixels that fit, the picture's own pixels fit again."""
    best, kept = _trimmed_ncc_once(x, y)
    for _ in range(TRIM_REFITS):
        if best >= enough or kept is None:
            break
        ncc, kept = _trimmed_ncc_once(x, y, kept)
        best = max(best, ncc)
    return best


def _trimmed_ncc_once(x: np.ndarray, y: np.ndarray, by: np.ndarray | None = None) -> tuple[float, np.ndarray | None]:
    """Grey NCC without the TRIM share of pixels that fit worst (a caption drawn over); a pixel
    that fits within TRIM_FIT is never left out. Without that floor, two copies of a small shape
    on a flat background lost the shape: every background pixel fits exactly, the shape's pixels
    (under 15% of the picture) fit a little less after resampling and were the ones trimmed,
    leaving two flat sets whose correlation is 0 (a demo copy resized to 0.53 was rejected so).
    A/B on bench/dedup.py's originals (1,820 copies of 13 transformations both ways, 442
    lookalike and 800 unrelated pairs; screen then pixels, as dedup decides): copies accepted
    +5 (low-entropy bright-20, crop5, overlay), lookalikes and unrelated pairs unchanged.
    Each picture is normalised by the mean and spread of the pixels `by` (all: None); returns
    the NCC and the pixels kept (None: a flat picture, NCC 0)."""
    ref_x, ref_y = (x, y) if by is None else (x[by], y[by])
    sx, sy = float(ref_x.std()), float(ref_y.std())
    if sx < 1e-6 or sy < 1e-6:
        return 0.0, None
    zx, zy = (x - ref_x.mean()) / sx, (y - ref_y.mean()) / sy
    n = len(x)
    fits = _kept_mask(np.abs(zx - zy), min(n - 1, int(n * (1 - TRIM))))
    return grey_ncc(zx[fits], zy[fits]), fits


def _trimmed_nccs(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """_trimmed_ncc of each row pair of two (k, n) arrays: the statistics of all rows in one
    pass (the sharpness match asks for nine on the same pixels; at the screen's 32 px each
    alone is numpy call overhead, not arithmetic)."""
    sx, sy = xs.std(axis=1), ys.std(axis=1)
    zx = (xs - xs.mean(axis=1, keepdims=True)) / np.maximum(sx, 1e-6)[:, None]
    zy = (ys - ys.mean(axis=1, keepdims=True)) / np.maximum(sy, 1e-6)[:, None]
    residual = np.abs(zx - zy)
    n = residual.shape[1]
    k = min(n - 1, int(n * (1 - TRIM)))
    return np.array([grey_ncc(*_kept(zx[i], zy[i], residual[i], k)) if sx[i] >= 1e-6 and sy[i] >= 1e-6 else 0.0
                     for i in range(len(xs))])


def _kept(zx: np.ndarray, zy: np.ndarray, residual: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """zx, zy where residual is at most max(its k-th smallest value, TRIM_FIT)."""
    fits = _kept_mask(residual, k)
    return zx[fits], zy[fits]


def _kept_mask(residual: np.ndarray, k: int) -> np.ndarray:
    """Where residual is at most max(its k-th smallest value, TRIM_FIT). The k-th value is
    looked for only above TRIM_FIT: np.partition slows ~10x when most values are one value (two
    drawings on white: most residuals are 0) and the k-th lies among them."""
    fits = residual <= TRIM_FIT
    n_fit = int(fits.sum())
    if n_fit <= k:   # else the k-th value is within TRIM_FIT, and TRIM_FIT is the cut
        rest = residual[~fits]
        fits = residual <= float(np.partition(rest, k - n_fit)[k - n_fit])
    return fits


SORT_BELOW = 8192      # values: _mean_of_smallest sorts fewer than this, partitions more


def _mean_of_smallest(values: np.ndarray, count: int) -> float:
    """The mean of the `count` smallest of non-negative `values`. np.partition slows ~10x when
    many values are one value (two drawings on white: colour differences of exactly 0; a tone
    fit's residuals over a white background clipped alike), so the zeros are set apart and a
    few thousand values are sorted (never slow) rather than partitioned. count <= len(values)."""
    if count > len(values):
        raise ValueError(f"the mean of the {count} smallest of {len(values)} values")
    nonzero = values[values > 0]
    take = count - (len(values) - len(nonzero))
    if take <= 0:
        return 0.0
    smallest = np.sort(nonzero)[:take] if len(nonzero) < SORT_BELOW else np.partition(nonzero, take - 1)[:take]
    return float(smallest.sum() / count)


def _opponent(rgb: np.ndarray) -> np.ndarray:
    """Red-green and yellow-blue opponent colours over brightness: unchanged by a brightness
    change, near 0 on greys, whites and blacks."""
    x = rgb.astype(np.float32) / 255
    r, g, b = x[..., :1], x[..., 1:2], x[..., 2:]
    return np.concatenate([r - g, 0.5 * (r + g) - b], axis=-1) / (_channel_mean(x)[..., None] + 0.15)


# numpy reduces over a short last axis (a pixel's three channels) ~15x slower than it adds three
# planes: these two are rgb.min(axis=-1) and, for float32, rgb.mean(axis=-1), value for value.
def _channel_min(rgb: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _channel_mean(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] + rgb[..., 1] + rgb[..., 2]) / 3


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
    xa, xb = ha[sub], hb[sub]
    choices = [(0.0, None)] + [(sigma, side) for sigma in MATCH_BLURS[1:] for side in ("a", "b")]
    xs, ys = [xa], [xb]    # the pixels each choice compares, blurred side first
    for sigma, side in choices[1:]:
        g = cv2.GaussianBlur(ha if side == "a" else hb, (0, 0), sigma * step)[sub]
        xs.append(g if side == "a" else xa)
        ys.append(xb if side == "a" else g)
    nccs = _trimmed_nccs(np.stack(xs), np.stack(ys)).tolist()
    best = (nccs[0], 0.0, None)
    for ncc, (sigma, side) in zip(nccs[1:], choices[1:]):
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
        d = np.abs(y - np.clip(gx + offset, 0, 255))
        r2 = np.square(np.maximum(np.maximum(d[:, 0], d[:, 1]), d[:, 2]))   # the worst channel's, squared
        worst = math.sqrt(_mean_of_smallest(r2, keep_all))   # all smooth pixels together, as well
        for g, keep in zip(groups, keeps):
            worst = max(worst, math.sqrt(_mean_of_smallest(r2[g], keep)))
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


def tone_residual(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """How far apart two aligned pictures' colours are over the whole overlap, background
    included, once a brightness change is allowed for; tried both ways, since a brightening clips
    to white and only the darker side then predicts the brighter. The same drawing on another
    background (a tint, a gradient, a texture), or a shape of another outline, leaves a residual
    that the structure tests, which look at edges, do not see; a re-encode, resize, crop, flip or
    brightness change leaves little (measured: see THRESHOLDS), the worst TRIM share (a caption)
    left out. Returns (residual in levels, share of the overlap smooth in both: tone_allowance)."""
    fa = cv2.GaussianBlur(a.astype(np.float32), (0, 0), TONE_SIGMA)
    fb = cv2.GaussianBlur(b.astype(np.float32), (0, 0), TONE_SIGMA)
    # Only where both pictures are smooth: a texture's re-encoding error is not a colour
    # difference, and textured pictures are told apart by their structure already.
    smooth = mask & (_local_std(_channel_mean(fa)) < TONE_FLAT) & (_local_std(_channel_mean(fb)) < TONE_FLAT)
    share = float(smooth.sum()) / max(1, int(mask.sum()))
    if share < TONE_MIN_SMOOTH:
        return 0.0, share
    fa, fb = fa[smooth], fb[smooth]
    if len(fa) > TONE_SAMPLE:
        pick = np.random.default_rng(0).choice(len(fa), TONE_SAMPLE, replace=False)
        fa, fb = fa[pick], fb[pick]
    return min(_tone_residual(fa, fb), _tone_residual(fb, fa)), share


def _extra_detail(content_a, content_b, agree, present_a, present_b, mask) -> tuple[float, float]:
    """(share of a's detail that b lacks, share of b's detail that a lacks): detail of one picture
    that disagrees where the other shows nothing at all (no colour, no structure, not even a faint
    texture, within EXTRA_REACH px), in solid patches (an opening of EXTRA_SOLID px leaves out
    scattered pixels) away from the overlap's border. A caption or a watermark adds detail to one
    picture; two different drawings of the same shape each have shapes the other lacks."""
    inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * EXTRA_BORDER + 1,) * 2, np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    reach = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EXTRA_REACH + 1,) * 2)
    solid = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (EXTRA_SOLID, EXTRA_SOLID))
    out = []
    for own, other in ((content_a, present_b), (content_b, present_a)):
        near_other = cv2.dilate(other.astype(np.uint8), reach) > 0
        lacking = (own & inner & ~agree & ~near_other).astype(np.uint8)
        lacking = cv2.morphologyEx(lacking, cv2.MORPH_OPEN, solid)
        out.append(float(lacking.sum()) / max(int(own.sum()), 1))
    return out[0], out[1]


def _caption_agree(detail_a: np.ndarray, detail_b: np.ndarray, agree: np.ndarray, mask: np.ndarray,
                   at_least: float = 0.0) -> float:
    """How much of a picture's detail agrees once a caption drawn over the other one is left out
    (0: no such caption). A caption over a low-entropy picture (a logo, a drawing, a few shapes)
    hides a large share of its detail, and adds its own: `agree` is then far under a copy's on
    both sides. Taken as a caption: the band of CAPTION_BAND of the overlap's rows that holds
    the most disagreeing detail, where all (CAPTION_HIDDEN) of the clean picture's disagreeing
    detail lies under the captioned picture's detail (a caption hides what it covers: another
    word, a moved or recoloured shape, leaves detail where the other picture shows background),
    with CAPTION_OUTSIDE of the clean picture's detail outside the band to judge it on. Returns
    the share of that detail outside the band that agrees, the better side's (0 when under
    `at_least`: the hidden test, the costlier, is then not made)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) < 8:
        return 0.0
    top, height = int(rows[0]), int(rows[-1]) - int(rows[0]) + 1
    n = max(1, round(CAPTION_BAND * height))
    per_row = ((detail_a | detail_b) & ~agree)[top:top + height].sum(axis=1)
    sums = np.convolve(per_row, np.ones(n, np.int64), mode="valid")
    start = top + int(np.argmax(sums))
    outside = np.ones(mask.shape[0], bool)
    outside[start:start + n] = False
    best = 0.0
    kernel = np.ones((3, 3), np.uint8)
    for own, other in ((detail_a, detail_b), (detail_b, detail_a)):
        n_own = int(own.sum())
        out = own & outside[:, None]
        n_out = int(out.sum())
        if not n_own or n_out < CAPTION_OUTSIDE * n_own:
            continue
        agreeing = float((out & agree).sum()) / n_out
        if agreeing < max(at_least, best):
            continue
        differ = own & ~agree
        n_differ = int(differ.sum())
        hidden = int((differ & (cv2.dilate(other.astype(np.uint8), kernel) > 0)).sum())
        if n_differ and hidden < CAPTION_HIDDEN * n_differ:
            continue
        best = agreeing
    return best


def compare(a: np.ndarray, b: np.ndarray, mask: np.ndarray, ncc_enough: float | None = None,
            agree_enough: float = math.inf, caption_from: float = 0.0) -> dict:
    """The tests' values on two aligned uint8 RGB pictures of one size, over `mask`. Given the
    thresholds, work that cannot change a decision is left out: the trimmed NCC is not
    normalised again once it is `ncc_enough` (the NCC test's threshold); the agreement outside a
    caption is measured only when `agree` is under `agree_enough` (the most any coverage asks)
    and the NCC passes, and given only when it is `caption_from` or more (else 0)."""
    ga, gb = grey_of(a), grey_of(b)
    a, b, ga, gb, blur_sigma = _match_sharpness(a, b, ga, gb, mask)
    std_a, std_b = float(ga[mask].std()), float(gb[mask].std())
    if std_a < FLAT_STD and std_b < FLAT_STD:
        colour = np.abs(a[mask].mean(axis=0) - b[mask].mean(axis=0)).max() / 255
        return {"flat": True, "colour": float(colour)}
    ncc_trim = _trimmed_ncc(ga[mask], gb[mask], math.inf if ncc_enough is None else ncc_enough)
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
    cos_hue = (oa[..., 0] * ob[..., 0] + oa[..., 1] * ob[..., 1]) / np.maximum(chroma_a * chroma_b, 1e-6)
    white_a, white_b = _channel_min(a) >= 245, _channel_min(b) >= 245
    ratio = chroma_a / np.maximum(chroma_b, 1e-6)
    same_colour = (cos_hue >= HUE_COS) & (ratio <= CHROMA_RATIO) & (ratio >= 1 / CHROMA_RATIO)
    colour_ok = np.where(coloured_a & coloured_b, same_colour,
                         ~(coloured_a & ~white_b & (chroma_b < 0.5 * chroma_a))
                         & ~(coloured_b & ~white_a & (chroma_a < 0.5 * chroma_b)))
    agree = colour_ok & (structure_ok | ~(structured_a | structured_b))
    shares = []
    detail_a, detail_b = structured_a | coloured_a, structured_b | coloured_b   # what each picture shows
    n_a, n_b = int(detail_a.sum()), int(detail_b.sum())
    for own, n_own, n_other in ((detail_a, n_a, n_b), (detail_b, n_b, n_a)):
        if n_own and n_own >= MIN_SHARE * n_other:
            shares.append(float(agree[own].mean()))
    if not n_a and not n_b:
        shares.append(float(colour_ok[mask].mean()))
    plain = max(shares) if shares else 0.0
    needed = plain < agree_enough and (ncc_enough is None or ncc_trim >= ncc_enough)
    caption_agree = _caption_agree(detail_a, detail_b, agree, mask, caption_from) if needed else 0.0
    extra_a, extra_b = _extra_detail(detail_a, detail_b, agree,
                                      (sa > PRESENT_STD) | coloured_a, (sb > PRESENT_STD) | coloured_b, mask)
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
    colour_diff = _mean_of_smallest(diff, k + 1)
    return {"flat": False, "ncc_trim": ncc_trim, "agree": plain, "caption_agree": caption_agree,
            "colour_agree": colour_agree, "colour_diff": colour_diff, "hue_shift": hue_shift,
            # the costliest test, only where every other one passes
            "tone": None,
            "agree_a": float(agree[detail_a].mean()) if n_a else 1.0,
            "agree_b": float(agree[detail_b].mean()) if n_b else 1.0,
            "content_a": n_a, "content_b": n_b, "blur": blur_sigma,
            "extra": min(extra_a, extra_b), "extra_a": extra_a, "extra_b": extra_b}
