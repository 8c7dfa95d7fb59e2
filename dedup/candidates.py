"""Deciding one shard's candidates (plain Python): the screen on the stored thumbnails first, then
the pixels of the candidates it passes (one tar opened per shard), each pair's verdict recorded
with the stage that decided it and why.
"""
from __future__ import annotations

import base64
import collections
import io
import tarfile

import numpy as np
from PIL import Image

from clipdata.dedup import hashed_test_sets
from clipdata.dedup.search import THUMB
from clipdata.dedup.training_shards import ShardInput, read_train_images
from clipdata.pipeline.foundation import failures

TEST_CACHE = 256            # decoded test images a worker keeps (their candidates come together)
THUMB_SIZE = 96

# ---------------------------------------------------------------------------------------------
# Deciding one shard's candidates (plain Python): the screen on stored thumbnails, then pixels


def thumbnail(image, size: int = THUMB_SIZE) -> str:
    """A small JPEG of an image as a base64 data URL, for the self-contained HTML report."""
    small = image.copy()
    small.thumbnail((size, size))
    buf = io.BytesIO()
    small.convert("RGB").save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumb_data_url(data: bytes) -> str:
    """A stored thumbnail (pipeline/foundation/thumbs.py) as a data URL for the report, re-encoded as its JPEG."""
    from clipdata.pipeline.foundation import thumbs

    return thumbnail(Image.fromarray(thumbs.decode(data)))


class TestImages:
    """The test images one worker has decoded, the TEST_CACHE most recent kept (the screen gets a
    test image's candidates together, the pixel check a shard's sorted by test image): the
    picture, its reduction for the screen and the reductions the screen made of it (its
    pyramid), its thumbnail for the report, or why it cannot be read. `refs`: the test side's
    image references (TestSide.refs), all a worker needs of the test side here."""

    def __init__(self, refs: list, size: int = TEST_CACHE):
        self.refs, self.size = refs, size
        self.cache: collections.OrderedDict[int, dict] = collections.OrderedDict()

    def _entry(self, number: int) -> dict:
        if number in self.cache:
            self.cache.move_to_end(number)
            return self.cache[number]
        try:
            entry = {"image": hashed_test_sets.decode(self.refs[number].read()), "error": None}
        except Exception as err:  # noqa: BLE001 - an unreadable test image is recorded per pair
            entry = {"image": None, "error": failures.describe(err)}
        self.cache[number] = entry
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return entry

    def image(self, number: int):
        """(PIL image or None, error text or None)."""
        entry = self._entry(number)
        return entry["image"], entry["error"]

    def reduced(self, number: int) -> np.ndarray:
        from clipdata.dedup import verify

        entry = self._entry(number)
        if "reduced" not in entry:
            entry["reduced"] = verify.reduce_for_screen(entry["image"])
        return entry["reduced"]

    def screen(self, number: int, thumb: np.ndarray, alike: bool | None = None, mirrored: bool | None = None,
               original_size=None):
        """verify.screen of the test image against a thumbnail, the test image's reductions kept
        for its next candidates; stricter when the descriptor found the pair unalike, in the
        orientation it saw when it saw one (`mirrored`, search.py); `original_size`: the training
        picture's recorded size (search.py's candidate field)."""
        from clipdata.dedup import verify

        reduced = self.reduced(number)
        return verify.screen(reduced, thumb, verify.thresholds_for(alike, screen=True),
                             pyramid=self.cache[number].setdefault("pyramid", {}),
                             mirrored=mirrored, original_size=original_size)

    def thumb(self, number: int) -> str | None:
        entry = self._entry(number)
        if entry["image"] is None:
            return None
        if "thumb" not in entry:
            entry["thumb"] = thumbnail(entry["image"])
        return entry["thumb"]


def _decided(c: dict, verdict, stage: str) -> dict:
    """The candidate with its verdict: `stage` says what decided it (screen, pixels)."""
    return dict(c, verified=bool(verdict.duplicate), score=_round(verdict.score), method=str(verdict.method),
                detail=str(verdict.detail), failed=verdict.failed, reason=verdict.reason, stage=stage)


def _failed(c: dict, problem: str) -> dict:
    return dict(c, verified=False, score=None, method="error", detail=problem, failed="error",
                reason=f"could not be checked: {problem}", stage="error")


def screen_candidates(candidates: list[dict], tests: TestImages, thumbnails: bool = True
                      ) -> tuple[list[dict], list[dict]]:
    """(decided, to_pixels): each candidate with a stored thumbnail is screened on it
    (verify.screen); those the screen rejects are decided here, without the tar. The rest —
    passed the screen, or no thumbnail to screen — go on to the pixels (check_candidates)."""
    from clipdata.pipeline.foundation import thumbs

    decided, to_pixels = [], []
    for c in candidates:
        stored = c.get(THUMB)
        if stored is None or tests.image(c["test_index"])[0] is None:
            to_pixels.append(c)
            continue
        try:
            verdict = tests.screen(c["test_index"], thumbs.decode(stored), c.get("alike"), c.get("mirrored"),
                                   c.get("original_size"))
        except Exception:  # noqa: BLE001 - an unreadable thumbnail: the pixels decide
            to_pixels.append(c)
            continue
        if verdict.duplicate:
            to_pixels.append(dict(c, screen_score=_round(verdict.score)))
            continue
        pair = _decided(c, verdict, "screen")
        if thumbnails:
            pair.update(test_thumb=tests.thumb(c["test_index"]), train_thumb=thumb_data_url(stored))
        decided.append(pair)
    return decided, to_pixels


def check_candidates(shard: ShardInput, candidates: list[dict], tests: TestImages, verify: bool,
                     thumbnails: bool = True) -> tuple[list[dict], list[str], int]:
    """(pairs, shard errors, thumbnails made from the tar): the candidates' training images read
    from the tar once; a candidate without a stored thumbnail (a shard written before it) is
    screened on the thumbnail made from its image first, exactly as a stored one would be, and
    the rest are verified on the pixels (verify.verify). With verify=False every candidate is a
    duplicate (hash only) and the tar is read for the report's thumbnails alone."""
    from clipdata.dedup import verify as verify_module
    from clipdata.pipeline.foundation import thumbs

    errors = []
    train_images: dict[str, bytes] = {}
    if shard.tar and (verify or thumbnails):
        try:
            train_images = read_train_images(shard.tar, {c["key"] for c in candidates})
        except (OSError, tarfile.TarError, EOFError, ValueError) as err:
            errors.append(f"tar unreadable while verifying ({failures.describe(err)})")
    elif not shard.tar:
        errors.append("no tar: candidates cannot be verified or shown")
    out, made = [], 0
    for c in candidates:
        c = dict(c, shard=shard.name)
        test_image, test_error = tests.image(c["test_index"])
        train_image, problem = None, None
        if c["key"] not in train_images:
            problem = "training image not found in the tar"
        else:
            try:
                train_image = hashed_test_sets.decode(train_images[c["key"]])
            except Exception as err:  # noqa: BLE001 - an undecodable image is recorded
                problem = f"training image undecodable ({failures.describe(err)})"
        if test_error:
            problem = problem or f"test image unreadable ({test_error})"
        if not verify:
            close = f"{c['distance']} bits apart" if c["distance"] is not None else f"cosine {c.get('cosine')}"
            score = 1 - c["distance"] / 64 if c["distance"] is not None else c.get("cosine")
            pair = dict(c, verified=True, score=_round(score), method="hash", failed=None, stage="hash",
                        detail=f"not verified (--no-verify): {close}", reason=f"hash match only ({close})")
        elif problem:
            pair = _failed(c, problem)
        else:
            try:
                verdict = None
                if c.get(THUMB) is None and "screen_score" not in c:
                    made += 1   # the pixels of the thumbnail it would have stored (PNG is lossless)
                    verdict = tests.screen(c["test_index"], np.asarray(thumbs.thumbnail(train_image)), c.get("alike"),
                                           c.get("mirrored"), c.get("original_size"))
                    stage = "screen"
                if verdict is None or verdict.duplicate:
                    # a pyramid of its own: the test image's reductions are shared within the pair
                    verdict = verify_module.verify(test_image, train_image, verify_module.thresholds_for(c.get("alike")),
                                                   pyramid={}, mirrored=c.get("mirrored"),
                                                   original_size=c.get("original_size"))
                    stage = "pixels"
                pair = _decided(c, verdict, stage)
            except Exception as err:  # noqa: BLE001 - one odd pair must not end the job
                pair = _failed(c, f"verification failed ({failures.describe(err)})")
        if thumbnails:
            pair["test_thumb"] = tests.thumb(c["test_index"])
            pair["train_thumb"] = None if train_image is None else thumbnail(train_image)
        out.append(pair)
    return out, errors, made


def _round(x):
    try:
        return round(float(x), 4)
    except (TypeError, ValueError):
        return None


def without_thumb(pair: dict) -> dict:
    return {k: v for k, v in pair.items() if k != THUMB}
