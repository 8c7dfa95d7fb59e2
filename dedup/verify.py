"""Pixel verification of a candidate pair: is the training image a copy of the test image?

The hash stage (hashing.py, index.py) finds candidates at a loose Hamming radius: it must, since a
crop or an overlay moves a pHash 10-20 bits, and at that radius drawings, logos and text on white
collide with unrelated ones. This decides each candidate on the pixels.

What a copy may differ by: re-encoding, rescaling, a crop of up to ~25% of each side (either image
may be the cropped one), a brightness change, a horizontal flip, a caption drawn over it, and the
downloader's resize to 256 with padding to a square (img2dataset's `border` mode: white bars with
the albumentations img2dataset pins, black with albumentations >= 2; any flat bars are handled).

How (placement in alignment.py, the measures in pixel_measures.py, the decision here):
1. Placement. The training image's padding bars are found (`content_boxes`), and the picture's box
   is also taken from the size the shard records it had (`alignment.recorded_box`: a white picture
   padded with white shows no bars; such a box asks RECORDED_BOX_COVERAGE more); the test image, and
   its mirror, is placed in the content by normalised cross-correlation (cv2.matchTemplate) over
   scales 0.74-1.35 of the size that fits and every position where the smaller picture lies
   inside the larger: at most a crop's worth of shift, so a shape moved further than a crop could
   move it is never lined up. The few best placements, plus the untouched frame (a caption drawn
   over a picture can pull the correlation elsewhere), are refined at up to 256 px to a sub-pixel
   similarity transform. When the copy descriptor clearly sees one orientation (search.py's
   candidate field `mirrored`), that one alone is placed.
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
   - lacking detail: the share of each picture's detail that disagrees where the other picture
     shows nothing at all (`extra`, pixel_measures._extra_detail). A caption or a watermark adds
     detail to one side only; two clip arts of one shape, each with other shapes around it, have
     detail the other lacks on both sides.
   - coverage: the overlap is most of both pictures.
   A placement whose plain grey NCC is under `precheck` is not compared further: most unrelated
   candidates end there, which keeps verification at tens of pairs a second.
The thresholds are measured with `bench/dedup.py quality` (tables in its docstring): against the
committed predecessor (trimmed grey + gradient NCC and chromaticity thresholds) on the same pairs,
this verifier accepts 15x fewer unrelated candidates and 4x fewer lookalikes and keeps more copies.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from clipdata.dedup.alignment import FINE_STEPS, Aligned, as_array, grey_of, placements, refine
from clipdata.dedup.pixel_measures import FLAT_COLOUR, FLAT_STD, compare, grey_ncc, tone_allowance, tone_residual


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
                                # same-class drawings on other backgrounds: mostly 5-25); up to 3 more
                                # where most of the overlap is texture (pixel_measures.tone_allowance)
    precheck: float = 0.30      # untrimmed grey NCC under which a placement is not compared further
    extra: float = 0.01         # share of its detail one picture has and the other lacks, at most, on one
                                # of the two sides (pixel_measures._extra_detail; see EXTRA_MARGIN)
    caption: float = 0.95       # or: share of one picture's detail that agrees outside a caption drawn over
                                # the other, at least (and at least what `agree` asks; the note on
                                # captions below)


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
# Detail on both sides that the other lacks. A caption, a watermark or a brightening that clips a
# pale shape to white adds or removes detail on one side only; two clip arts of one shape (a red
# ring on white) with other small shapes around it each have shapes the other lacks, while the
# ring alone lines up with 83-100% of the detail agreeing: the 18 false pairs of bench/dedup.py
# scale at 200,000 x 10,000 were all such drawing-against-drawing pairs. Measured (a one-off
# script over every placement verify() tries): of the 4,091 copies the pixels accept (160 of
# bench/dedup.py's originals, 13 transformations, both directions; 120 of them low-entropy)
# every one has a passing placement with no lacking detail on one side (0.000), and so do the 100
# planted copies of that scale run; of its 18 false pairs, 11 have 0.006-0.083 on both sides
# (9 rejected at 0.01; 0.005 would take 2 more and 2 of the lookalikes, with less room for a copy
# that carries a small mark on each side), the other 7 add shapes on one side only (left to the
# other tests). Lookalikes (another word in the same layout) stay 29 of 442: their differing
# detail lies where the other's is.
EXTRA_MARGIN = 0.25   # the extra test's margin with no lacking detail (_extra_margin)
# Captions. A caption over a low-entropy picture hides much of its detail: a logo, a few shapes or a
# drawing with a line of words across it agrees on 60-77% of its detail (bench/dedup.py quality:
# 12 of 50 such copies lost with the caption on the training side, 6 with it on the test side).
# The agreement test passes too when the detail agrees outside a band of rows that holds the
# differences, and everything that differs on the clean side lies under the captioned side's
# detail (pixel_measures._caption_agree: a caption hides; another word in the same layout, or
# a shape moved or recoloured, shows background where the other has detail). Measured on 7,627
# kept candidates (bench/dedup.py quality both ways and a 200k scale run), every placement's
# measures recorded and the rule simulated: at 0.95 (0.90 on the screen) 10 more copies (9
# captions on logos and shapes, one on a photo), no lookalike or unrelated pair more, 2 more of
# 417 unrelated pairs past the screen at scale; at 0.90 two lookalikes pass (a recoloured shape,
# a logo with another word); without the hidden test (a band alone) 5-10 lookalikes and 1-8
# unrelated pairs.


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
    "extra": "each picture has shapes the other lacks",
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
        if v.get("caption"):
            parts.append(f"{100 * v['caption_agree']:.0f}% of the detail outside a caption drawn over one of "
                         f"them and {100 * v.get('colour_agree', 1):.0f}% of the coloured pixels agree")
        elif v.get("agree") is not None:
            parts.append(f"{100 * v['agree']:.0f}% of the detail and {100 * v.get('colour_agree', 1):.0f}% "
                         "of the coloured pixels agree")
        return "; ".join(parts)


def agree_needed(coverage: float, t: Thresholds) -> float:
    """The agreement a placement of this coverage needs: t.agree at full overlap, up to
    t.agree + t.partial_agree at t.coverage (a placement in a recorded box, which must cover
    RECORDED_BOX_COVERAGE more, stops short of the full partial_agree)."""
    if t.partial_agree <= 0 or t.coverage >= 1:
        return t.agree
    share = min(1.0, max(0.0, (1.0 - coverage) / (1.0 - t.coverage)))
    return t.agree + t.partial_agree * share


def _agree_margin(values: dict, coverage: float, t: Thresholds) -> float:
    """The agreement test's margin: the detail agrees, or it agrees outside a caption (the note on
    captions under THRESHOLDS)."""
    needed = agree_needed(coverage, t)
    return max(values["agree"] - needed, values.get("caption_agree", 0.0) - max(t.caption, needed))


def _margins(values: dict, coverage: float, t: Thresholds) -> dict[str, float]:
    """Each test's value relative to its threshold, by name (>= 0 passes it)."""
    return {"agree": _agree_margin(values, coverage, t), "ncc": values["ncc_trim"] - t.ncc,
            "coverage": coverage - t.coverage - values.get("coverage_more", 0.0),
            "colour_agree": values["colour_agree"] - t.colour_agree,
            "colour_diff": t.colour_diff - values["colour_diff"],
            "hue": (t.hue - values.get("hue_shift", 0.0)) / 90,   # degrees -> ~0..1 scale
            "tone": 1.0 if values["tone"] is None else (tone_needed(values, t) - values["tone"]) / 25,  # levels -> ~0..1
            "extra": _extra_margin(values.get("extra", 0.0), t)}


def _extra_margin(extra: float, t: Thresholds) -> float:
    """The extra test's margin: up to EXTRA_MARGIN under its threshold (so that it is not every
    copy's weakest test), one for one over it (a share of the detail, as agree's)."""
    return EXTRA_MARGIN * (t.extra - extra) / t.extra if extra <= t.extra else t.extra - extra


def tone_needed(values: dict, t: Thresholds) -> float:
    """The tone residual allowed: t.tone, more for a busy overlap (pixel_measures.tone_allowance)."""
    return t.tone + tone_allowance(values.get("smooth", 1.0))


def _margin(values: dict, coverage: float, t: Thresholds) -> float:
    """The weakest test relative to its threshold: >= 0 passes them all."""
    if values.get("flat"):
        return FLAT_COLOUR - values["colour"]  # one-colour pictures: the same colour
    return min(_margins(values, coverage, t).values())


# More coverage asked of a placement in the picture's box from its recorded size (alignment.
# recorded_box) than in a box found from the pixels: that box is the picture's exact extent,
# where a found box of a white picture on white padding is the whole square and reads its
# coverage low. Measured on 7,627 kept candidates (bench/dedup.py quality both ways and a 200k
# scale run, every candidate screened then checked on the pixels, /tmp/p17/ab_frame*.py): the
# recorded box found 9 more copies (3 20% crops of white logos, drawings and texts among them,
# covering 0.62-0.63 of the box; a 20% crop leaves 0.64) and let 2 unrelated clip-art pairs of the
# 200k run through at 0.53 and 0.54 (one ring among other small shapes); 0.05 more keeps the
# copies and not those two.
RECORDED_BOX_COVERAGE = 0.05


def measure(test_image, train_image, thresholds: Thresholds = THRESHOLDS, stop_early: bool = True,
            pyramid: dict | None = None, mirrored: bool | None = None,
            steps: tuple = FINE_STEPS, original_size=None) -> list[tuple[dict, Aligned]]:
    """(values, alignment) of each placement tried, in order; with stop_early, the first that
    passes ends the list. `original_size`: the training picture's recorded size before the
    download padded it (alignment.recorded_box), None when the shard has none."""
    test, train = as_array(test_image), as_array(train_image)
    if min(test.shape[:2]) < 2 or min(train.shape[:2]) < 2:
        return []
    out = []
    for p in placements(test, train, pyramid, mirrored, original_size):
        aligned = refine(test, train, p, pyramid, steps)
        if aligned is None:
            continue
        coverage_more = RECORDED_BOX_COVERAGE if p.recorded else 0.0
        ga, gb = grey_of(aligned.test)[aligned.mask], grey_of(aligned.train)[aligned.mask]
        quick = grey_ncc(ga, gb)
        if quick < thresholds.precheck and min(ga.std(), gb.std()) >= FLAT_STD:
            # far from a copy on every test: not worth the comparison (most unrelated candidates)
            values = {"flat": False, "ncc_trim": quick, "agree": 0.0, "colour_agree": 0.0, "colour_diff": 1.0,
                      "tone": 255.0, "extra": 1.0, "precheck": True, "coverage_more": coverage_more}
        else:
            # (agree_needed at no coverage: the most any coverage asks; above it a caption changes nothing)
            values = compare(aligned.test, aligned.train, aligned.mask, ncc_enough=thresholds.ncc,
                             agree_enough=agree_needed(0.0, thresholds), caption_from=thresholds.caption)
            values["coverage_more"] = coverage_more
            if not values.get("flat") and _margin(values, aligned.coverage, thresholds) >= 0:
                values["tone"], values["smooth"] = tone_residual(aligned.test, aligned.train, aligned.mask)
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


def verify(test_image, train_image, thresholds: Thresholds = THRESHOLDS, pyramid: dict | None = None,
           mirrored: bool | None = None, steps: tuple = FINE_STEPS, original_size=None) -> Verdict:
    """Whether `train_image` (as the shards store it) is a copy of `test_image`. `pyramid`: an
    empty dict to keep the test image's reductions in for its next candidates (the same test
    image, and the same array object, each time it is given). `mirrored`: the orientation the
    copy descriptor sees (search.py's candidate field), the only one tried; None: both.
    `original_size`: the training picture's size before the download padded it, as the shard
    records it (the candidate's field; None: not recorded)."""
    tried = measure(test_image, train_image, thresholds, pyramid=pyramid, mirrored=mirrored, steps=steps,
                    original_size=original_size)
    if not tried:
        return Verdict(False, 0.0, "too-small", "no placement with an overlap of 64 px or more", "too-small")
    values, aligned = max(tried, key=lambda va: _margin(va[0], va[1].coverage, thresholds))
    p = aligned.placement
    where = (f"{'mirrored, ' if p.mirror else ''}scale {p.scale:.3f}, offset ({p.ox:.1f}, {p.oy:.1f}) px "
             f"in content box {p.box} ({p.source}{', the recorded size' if p.recorded else ''}), "
             f"coverage {aligned.coverage:.2f}")
    measures = {"mirror": p.mirror, "scale": round(float(p.scale), 4), "coverage": round(float(aligned.coverage), 4)}
    if values.get("flat"):
        same = values["colour"] <= FLAT_COLOUR
        return Verdict(same, 1.0 if same else 0.0, "flat",
                       f"one-colour picture(s), mean colours {values['colour']:.3f} apart; {where}",
                       None if same else "flat", measures)
    margin = _margin(values, aligned.coverage, thresholds)
    for name in ("agree", "caption_agree", "ncc_trim", "colour_agree", "colour_diff", "hue_shift", "tone", "extra"):
        if values.get(name) is not None:
            measures[name] = round(float(values[name]), 4)
    needed = agree_needed(aligned.coverage, thresholds)
    # accepted with a caption left out (the detail alone does not agree enough)
    measures["caption"] = bool(margin >= 0 and not values.get("precheck") and values["agree"] < needed)
    if values.get("precheck"):
        detail = f"{where}; grey ncc {values['ncc_trim']:.3f} (< {thresholds.precheck}: not compared further)"
    else:
        caption = (f"; outside a caption {values['caption_agree']:.3f}, >= {max(thresholds.caption, needed):.3g}"
                   if values.get("caption_agree") else "")   # measured, and a caption explains the differences
        detail = (f"{where}; agree {values['agree']:.3f} (>= {needed:.3g}{caption}), trimmed ncc "
                  f"{values['ncc_trim']:.3f} (>= {thresholds.ncc}), colours agree {values['colour_agree']:.3f} "
                  f"(>= {thresholds.colour_agree}), colour difference {values['colour_diff']:.3f} "
                  f"(<= {thresholds.colour_diff}), hue shift {values.get('hue_shift', 0.0):.1f} deg "
                  f"(<= {thresholds.hue}), tone residual "
                  f"{'not needed' if values['tone'] is None else format(values['tone'], '.1f')} "
                  f"(<= {tone_needed(values, thresholds):.3g}), detail each side lacks "
                  f"{values['extra_a']:.3f}/{values['extra_b']:.3f} (<= {thresholds.extra} on one side), "
                  f"coverage >= {thresholds.coverage + values.get('coverage_more', 0.0):.3g}")
    return Verdict(margin >= 0, float(np.clip(0.5 + margin, 0.0, 1.0)), "align", detail,
                   None if margin >= 0 else _weakest(values, aligned.coverage, thresholds), measures)


# ---------------------------------------------------------------------------------------------
# The screen: the same tests on the thumbnail the downloader stored (pipeline/foundation/thumbs.py)

SCREEN_TEST_SIDE = 192   # the test image is reduced to this first: the thumbnail is 64 px
# The screen must not lose a copy the pixels accept, so it is looser than verify(): at 64 px the
# padding bars blur into the picture (coverage reads low) and fine detail agrees less.
# The extra test is the pixels' alone: at 64 px a small shape is a few pixels (extra=1: always passes).
SCREEN_THRESHOLDS = Thresholds(agree=0.75, ncc=0.75, coverage=0.40, tone=8.0, hue=20.0, extra=1.0, caption=0.90)
SCREEN_UNALIKE_THRESHOLDS = replace(SCREEN_THRESHOLDS, agree=0.85)   # the screen's, more detail agreeing
# The screen's refinement tries three scale steps, not five: at 64 px a 1.5% step moves the edges by
# half a pixel. A/B on 7,627 kept candidates (bench/dedup.py quality both ways, a 200k scale run):
# no copy lost, no verdict after the pixels changed, 16 fewer unrelated pairs passed to the pixels;
# 8% less screen time.
SCREEN_FINE_STEPS = (-0.03, 0.0, 0.03)


def thresholds_for(alike: bool | None, screen: bool = False) -> Thresholds:
    """The thresholds a candidate is judged with: the UNALIKE ones when the copy descriptor found
    the pair unalike (alike False), the usual ones otherwise (alike, or no descriptor); the
    screen's or the pixels'."""
    if screen:
        return SCREEN_UNALIKE_THRESHOLDS if alike is False else SCREEN_THRESHOLDS
    return UNALIKE_THRESHOLDS if alike is False else THRESHOLDS


def one_thread_per_worker() -> None:
    """OpenCV's own threads off in this process (as img2dataset's resizer sets them): the screen
    and the pixel check work on pictures of 64-256 px, where OpenCV's thread pool hands out
    little work at a high cost, and the job already runs one worker per core. Measured on 2 cores
    over the 3,205 candidates of a 200k scale run and 400 pixel checks of it: the screen 13.0 ->
    10.0 CPU-ms a pair, the pixels 59.8 -> 54.6, wall time the same (10.1 / 10.4 and 56 / 55 ms),
    every verdict, score and detail the same. FAISS's OpenMP threads are left as they are: its
    searches divide evenly (CPU time the same on 1 or 2 threads, wall time halved). The setting is
    the process's, and stays: with one worker the job's steps run in the caller's process."""
    cv2.setNumThreads(1)


def reduce_for_screen(test_image) -> np.ndarray:
    """The test image as the screen compares it: uint8 RGB, at most SCREEN_TEST_SIDE px a side
    (reduce once per test image and reuse it for all its candidates)."""
    arr = as_array(test_image)
    h, w = arr.shape[:2]
    if max(h, w) > SCREEN_TEST_SIDE:
        f = SCREEN_TEST_SIDE / max(h, w)
        arr = cv2.resize(arr, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def screen(test_reduced: np.ndarray, thumb: np.ndarray, thresholds: Thresholds = SCREEN_THRESHOLDS,
           pyramid: dict | None = None, mirrored: bool | None = None, original_size=None) -> Verdict:
    """verify() on the training image's stored thumbnail instead of its pixels, with looser
    thresholds: a pair it rejects is taken as not a copy, so only the pairs it passes need the
    training image from the tar, where verify() gives the verdict. Measured on
    bench/dedup.py's originals: 5.7% of 1,500 unrelated hash candidates pass it, and it rejects
    3 of the 791 copies verify() accepts (0.4%); ~9 CPU-ms a pair with the test image's
    decoding against verify()'s ~38 (bench/dedup.py scale, 2026-12-07, one OpenCV thread)."""
    return verify(test_reduced, thumb, thresholds, pyramid, mirrored, SCREEN_FINE_STEPS, original_size)
