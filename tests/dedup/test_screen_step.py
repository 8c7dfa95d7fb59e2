"""The screen's Beam step: a test image's candidates come together (grouped by test image) and are
screened with one read and decode of the test image, each with the verdict it gets alone."""
from __future__ import annotations

import io
import sys
import tarfile

import numpy as np
import pytest
from apache_beam.pvalue import TaggedOutput
from PIL import Image, ImageEnhance
from repo import BENCH

from clipdata.dedup import candidates, progress, search
from clipdata.dedup.overlap_steps import SCREEN_SPLIT, ScreenTestImageFn, VerifyShardFn, screen_key
from clipdata.dedup.training_shards import ShardInput
from clipdata.pipeline.download.images import ImageConfig, make_resizer, store_image

sys.path.insert(0, BENCH)

import dedup_scale  # noqa: E402  the scale benchmark's generator: pictures no two alike


class CountingRef:
    """A test image reference that counts its reads."""

    def __init__(self, data: bytes):
        self.data, self.reads = data, 0

    def read(self) -> bytes:
        self.reads += 1
        return self.data


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def stored_thumb_bytes(image: Image.Image) -> bytes:
    """The thumbnail the downloader stores of an image (the candidate's THUMB field)."""
    config = ImageConfig()
    stored = store_image(png(image), make_resizer(config), config)
    assert stored.error is None
    return stored.thumb


@pytest.fixture(scope="module")
def grouped():
    """Test image 0's candidates from two shards: two copies of it and five other pictures."""
    original = dedup_scale.picture(3)
    trains = {"copy": original, "brighter": ImageEnhance.Brightness(original).enhance(1.15)}
    trains.update({f"other{i}": dedup_scale.picture(100 + i) for i in range(5)})
    shards = [ShardInput("00000", "/nowhere/00000.tar", None), ShardInput("00001", "/nowhere/00001.tar", None)]
    pairs = []
    for i, (key, image) in enumerate(trains.items()):
        pairs.append((shards[i % 2], {"key": key, "test_index": 0, "test_id": "t0", "distance": 6, "alike": True,
                                      "mirrored": None, search.THUMB: stored_thumb_bytes(image)}))
    return png(original), pairs


def run_screen(fn: ScreenTestImageFn, element) -> tuple[list, list]:
    fn.setup()
    fn.start_bundle()
    out = list(fn.process(element))
    fn.finish_bundle()
    screened = [o.value for o in out if isinstance(o, TaggedOutput)]
    assert all(o.tag == "screened" for o in out if isinstance(o, TaggedOutput))
    return screened, [o for o in out if not isinstance(o, TaggedOutput)]


def test_a_test_images_candidates_are_screened_with_one_read_each_as_alone(grouped, tmp_path):
    data, pairs = grouped
    ref = CountingRef(data)
    screened, passed = run_screen(ScreenTestImageFn([ref], False, str(tmp_path)), (0, iter(pairs)))
    assert ref.reads == 1
    # every candidate comes out once: rejected here, or on to its shard's pixel check
    assert len(screened) + len(passed) == len(pairs)
    assert {p["key"] for p in screened} | {c["key"] for _, (_, c) in passed} == {c["key"] for _, c in pairs}
    assert {c["key"] for _, (_, c) in passed} >= {"copy", "brighter"}
    assert {p["key"] for p in screened} and all(p["stage"] == "screen" and p["reason"] for p in screened)
    assert all(search.THUMB not in p for p in screened)
    shard_of = {c["key"]: shard for shard, c in pairs}
    assert all(name == shard_of[c["key"]].name and shard is shard_of[c["key"]] and "screen_score" in c
               for name, (shard, c) in passed)
    assert all(search.THUMB not in c for _, (_, c) in passed)     # the shuffle to the pixels carries no thumbnail
    # an unreadable stored thumbnail: not screened, on as it came (the pixels decide it, from the tar)
    bad = dict(pairs[0][1], key="bad", **{search.THUMB: b"not a png"})
    none, [(_, (_, kept))] = run_screen(ScreenTestImageFn([ref], False), (0, [(pairs[0][0], bad)]))
    assert none == [] and kept[search.THUMB] == b"not a png" and "screen_score" not in kept
    assert {p["key"]: p["shard"] for p in screened} == {p["key"]: shard_of[p["key"]].name for p in screened}
    # the verdict each gets alone, with the test image decoded for it alone and a fresh pyramid
    for _, c in pairs:
        decided, alone = candidates.screen_candidates([c], candidates.TestImages([CountingRef(data)]), False)
        assert bool(alone) == (c["key"] in {x["key"] for _, (_, x) in passed}), c["key"]
        if decided:
            [mine] = [p for p in screened if p["key"] == c["key"]]
            assert (mine["score"], mine["detail"]) == (decided[0]["score"], decided[0]["detail"])
    # the progress notes add up to what was screened and rejected
    notes = progress._read_all(str(tmp_path))["screen"]
    assert sum(n["screened"] for n in notes) == len(pairs)
    assert sum(n["screened_out"] for n in notes) == len(screened)


def test_a_worker_keeps_one_note_of_its_running_totals(grouped, tmp_path, monkeypatch):
    from clipdata.dedup import overlap_steps

    data, pairs = grouped
    fn = ScreenTestImageFn([CountingRef(data)], False, str(tmp_path))
    seen = []
    real = progress.record
    monkeypatch.setattr(overlap_steps.progress, "record",
                        lambda work, step, name, counts: (seen.append(dict(counts)), real(work, step, name, counts)))
    monkeypatch.setattr(overlap_steps, "SCREEN_NOTE_SECONDS", 0.0)     # a note after every candidate
    screened, _ = run_screen(fn, (0, pairs[:4]))
    fn.start_bundle()
    list(fn.process((1, pairs[4:])))                                   # the next test image, same worker
    fn.finish_bundle()
    assert [n["screened"] for n in seen] == [1, 2, 3, 4, 5, 6, 7]   # running totals; a bundle's end adds none
    notes = progress._read_all(str(tmp_path))["screen"]
    assert len(notes) == 1 and notes[0]["screened"] == len(pairs)      # one file, rewritten
    seen.clear()
    monkeypatch.setattr(overlap_steps, "SCREEN_NOTE_SECONDS", 3600.0)
    other = ScreenTestImageFn([CountingRef(data)], False, str(tmp_path))
    run_screen(other, (0, pairs))
    assert [n["screened"] for n in seen] == [1, len(pairs)]             # the first, then the bundle's end
    assert len(progress._read_all(str(tmp_path))["screen"]) == 2        # a file per worker


def test_a_test_images_candidates_are_split_by_shard_into_a_few_groups():
    """A popular test image's candidates go to SCREEN_SPLIT groups at most (one worker each), each
    training shard's always to the same one."""
    names = [f"{i:05d}" for i in range(400)]
    keys = {screen_key(7, n) for n in names}
    assert {k[0] for k in keys} == {7} and {k[1] for k in keys} == set(range(SCREEN_SPLIT))
    assert [screen_key(7, n) for n in names] == [screen_key(7, n) for n in names]
    assert screen_key(np.int64(3), "00001") == (3, screen_key(3, "00001")[1])
    assert all(type(x) is int for x in screen_key(np.int64(3), "00001"))     # a key Beam can group on


def test_the_pyramid_keeps_the_most_recently_used_reductions(monkeypatch):
    from clipdata.dedup import alignment

    monkeypatch.setattr(alignment, "PYRAMID_CAP", 3)
    made = []
    pyramid = {}

    def get(key):
        return alignment._memo(pyramid, key, lambda: made.append(key) or key)

    for key in ("a", "b", "c", "a", "d", "a", "e", "b"):
        assert get(key) == key
    # "a" used again before each new key, so it stays; "b", "c" and "d" go, oldest first
    assert made == ["a", "b", "c", "d", "e", "b"] and list(pyramid) == ["a", "e", "b"]
    assert alignment._memo(None, "x", lambda: 5) == 5


def test_a_shards_candidates_from_many_test_images_are_checked_together(grouped, monkeypatch):
    """The pixel step gets a shard's candidates that passed the screen, from any test image: the
    tar opened once for all of them, in test image order."""
    from clipdata.dedup import overlap_steps

    data, pairs = grouped
    calls = []

    def fake_check(shard, cands, tests, verify, thumbnails):
        calls.append((shard, [(c["test_index"], c["key"]) for c in cands]))
        return [dict(c, stage="pixels") for c in cands], [], 0

    monkeypatch.setattr(overlap_steps, "check_candidates", fake_check)
    shard = pairs[0][0]
    mixed = [(shard, dict(c, test_index=t)) for t, (_, c) in zip((5, 2, 5, 0), pairs)]
    fn = VerifyShardFn([CountingRef(data)] * 6, True, False)
    fn.setup()
    out = list(fn.process((shard.name, iter(mixed))))
    assert len(calls) == 1 and calls[0][0] is shard
    assert calls[0][1] == sorted((c["test_index"], c["key"]) for _, c in mixed)
    assert len(out) == len(mixed) and all(search.THUMB not in p for p in out)


def test_a_tar_that_cannot_be_read_at_the_pixel_step_is_a_shard_error_and_every_pair_an_error(grouped, tmp_path):
    """The tar read fine at the search and is cut by the time the pixels need it: the shard's
    error is said (stage verify) and each of its candidates is decided as an error, none lost."""
    data, pairs = grouped
    cut = tmp_path / "00000.tar"
    with tarfile.open(cut, "w") as tar:
        for _, c in pairs[:3]:
            body = png(dedup_scale.picture(7))
            info = tarfile.TarInfo(f"{c['key']}.png")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    cut.write_bytes(cut.read_bytes()[:1500])           # cut inside its first image
    shard = ShardInput("00000", str(cut), None)
    mine = [(shard, dict(c, screen_score=0.6)) for _, c in pairs[:3]]
    fn = VerifyShardFn([CountingRef(data)], True, False)
    fn.setup()
    out = list(fn.process((shard.name, iter(mine))))
    errors = [o.value for o in out if isinstance(o, TaggedOutput)]
    decided = [o for o in out if not isinstance(o, TaggedOutput)]
    assert [e["stage"] for e in errors] == ["verify"] and errors[0]["shard"] == "00000" and errors[0]["errors"]
    assert sorted(p["key"] for p in decided) == sorted(c["key"] for _, c in mine)
    assert all(p["stage"] == "error" and not p["verified"] and p["reason"].startswith("could not be checked")
               for p in decided)


def test_the_screen_and_pixel_workers_run_opencv_on_one_thread():
    # one worker per core already: OpenCV's own threads only cost CPU time on 64-256 px pictures
    import cv2

    before = cv2.getNumThreads()
    try:
        for step in (ScreenTestImageFn([], thumbnails=True), VerifyShardFn([], verify=True, thumbnails=True)):
            cv2.setNumThreads(4)
            assert cv2.getNumThreads() == 4
            step.setup()
            assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
