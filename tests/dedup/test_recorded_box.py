"""The picture's box from its recorded original size (signature.picture_box, alignment.recorded_box):
a white picture padded with white by the downloader has no bars to find, and a crop of it then
covered too little of the whole square to pass; the shards record the size it had, which gives
the box (img2dataset's parquet and json: original_width, original_height)."""
from __future__ import annotations

import io
import json
import random
import tarfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipdata.dedup import alignment, hashed_test_sets, training_shards, verify
from clipdata.pipeline.download import images
from clipdata.pipeline.foundation import shards
from clipdata.pipeline.foundation.signature import content_boxes, picture_box


@pytest.fixture(scope="module")
def store():
    config = images.ImageConfig()
    resizer = images.make_resizer(config)

    def stored(image: Image.Image):
        buf = io.BytesIO()
        image.save(buf, "PNG")
        result = images.store_image(buf.getvalue(), resizer, config)
        assert result.error is None
        return result, np.asarray(hashed_test_sets.decode(result.data).convert("RGB"))

    return stored


def white_logo(w: int, h: int, seed: int = 0) -> Image.Image:
    """Outlined shapes on white in the middle 40% of the rows, across most of the width."""
    rng = random.Random(seed)
    image = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(16):
        x0, y0 = rng.randint(int(0.05 * w), int(0.8 * w)), rng.randint(int(0.3 * h), int(0.7 * h) - 20)
        x1, y1 = x0 + rng.randint(10, int(0.2 * w)), y0 + rng.randint(8, 20)
        colour = tuple(rng.randint(0, 200) for _ in range(3))
        shape = draw.rectangle if rng.randint(0, 1) else draw.ellipse
        shape((x0, y0, min(x1, int(0.95 * w)), min(y1, int(0.7 * h))), outline=colour, width=rng.randint(2, 4))
    return image


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (257, 256), (1000, 333), (31, 64)])
def test_the_box_is_where_the_downloader_put_the_picture(store, size):
    w, h = size
    red = Image.new("RGB", size, (200, 20, 20))
    result, stored = store(red)
    assert (result.original_width, result.original_height) == size
    rows, cols = np.nonzero(stored.min(axis=2) < 128)   # red: its blue channel is low
    # exactly: the odd pixel of padding at the bottom / right, as albumentations' PadIfNeeded puts it
    assert picture_box(stored.shape[1], size) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


def test_no_box_for_a_square_original_or_no_size():
    assert picture_box(256, (500, 500)) is None
    assert picture_box(256, None) is None
    assert picture_box(256, (0, 20)) is None
    assert picture_box(64, (400, 200)) == (0, 16, 64, 48)


def test_a_20_percent_crop_of_a_white_picture_is_found_with_its_recorded_size(store):
    w, h = 300, 200
    picture = white_logo(w, h)
    _, stored = store(picture)
    crop = np.asarray(picture.crop((w // 10, h // 10, w - w // 10, h - h // 10)))
    # the bars the pixels show are the white rows around the shapes, not the padding
    assert picture_box(256, (w, h)) not in content_boxes(stored)
    without = verify.verify(crop, stored, verify.THRESHOLDS)
    assert not without.duplicate and without.failed == "coverage"
    found = verify.verify(crop, stored, verify.THRESHOLDS, original_size=(w, h))
    assert found.duplicate, found.detail
    assert "the recorded size" in found.detail and 0.55 <= found.values["coverage"] <= 0.70
    # a placement in the recorded box must cover RECORDED_BOX_COVERAGE more of it than a found box
    values, aligned = verify.measure(crop, stored, verify.THRESHOLDS, original_size=(w, h))[-1]   # the one that passed
    assert aligned.placement.recorded and values["coverage_more"] == verify.RECORDED_BOX_COVERAGE > 0
    assert verify._margins(values, 0.52, verify.THRESHOLDS)["coverage"] < 0
    assert verify._margins(dict(values, coverage_more=0.0), 0.52, verify.THRESHOLDS)["coverage"] >= 0
    # the same on the stored thumbnail, as the screen sees it
    thumb = np.asarray(Image.fromarray(stored).reduce(4))
    assert verify.screen(verify.reduce_for_screen(crop), thumb, original_size=(w, h)).duplicate


def test_the_recorded_box_only_where_the_pixels_show_padding(store):
    w, h = 300, 200
    _, stored = store(white_logo(w, h))
    box = picture_box(256, (w, h))
    assert alignment.recorded_box(stored, content_boxes(stored), (w, h)) == box
    assert alignment.recorded_box(stored, content_boxes(stored), None) is None
    # already found (padding of another colour than the picture's edge): not twice
    _, grey = store(Image.new("RGB", (w, h), (128, 128, 128)))
    assert alignment.recorded_box(grey, content_boxes(grey), (w, h)) is None
    # a picture that fills the square (a centre crop, another resize mode): no flat padding there
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    assert alignment.recorded_box(noise, content_boxes(noise), (w, h)) is None


def test_the_search_reads_the_recorded_sizes_from_the_parquet_and_from_the_json(store, tmp_path):
    result, _ = store(white_logo(300, 200))
    row = shards.ShardRow(key="000000000", url="http://x.test/0.png", caption="a logo", status="success",
                          width=result.width, height=result.height, original_width=300, original_height=200,
                          sha256=result.sha256, phash=result.phash, phash_centre=result.phash_centre,
                          thumb=result.thumb, image=result.data, image_ext=result.ext)
    shards.write_shard(str(tmp_path), 0, [row], {"start_time": 0.0, "end_time": 1.0})
    parquet_shard = training_shards.ShardInput("00000", str(tmp_path / "00000.tar"), str(tmp_path / "00000.parquet"))
    assert training_shards.read_train_hashes(parquet_shard).original_sizes == [(300, 200)]
    # a plain tar, as img2dataset writes it: the size in each sample's json
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        for name, data in (("000000001.jpg", result.data),
                           ("000000001.json", json.dumps({"url": "u", "original_width": 300,
                                                          "original_height": 200}).encode()),
                           ("000000002.jpg", result.data),
                           ("000000002.json", json.dumps({"url": "v"}).encode()),
                           ("000000003.jpg", result.data),   # a size no one could have: none
                           ("000000003.json", b'{"url": "w", "original_width": Infinity, "original_height": 2}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    train = training_shards.read_train_hashes(training_shards.ShardInput("plain", str(plain), None))
    assert dict(zip(train.keys, train.original_sizes)) == {"000000001": (300, 200), "000000002": None,
                                                            "000000003": None}


def test_the_screen_is_given_the_candidates_recorded_size():
    from clipdata.dedup import candidates, search
    from clipdata.pipeline.foundation import thumbs

    seen = []

    class Tests:
        def image(self, number):
            return object(), None

        def screen(self, number, thumb, alike=None, mirrored=None, original_size=None):
            seen.append(original_size)
            return verify.Verdict(True, 1.0, "align", "", None, {})

    thumb = thumbs.encode(Image.new("RGB", (64, 40), "white"))
    pairs = [{"key": "k", "test_index": 0, "alike": True, "mirrored": None, "original_size": size, search.THUMB: thumb}
             for size in ((300, 200), None)]
    decided, passed = candidates.screen_candidates(pairs, Tests())
    assert (decided, len(passed), seen) == ([], 2, [(300, 200), None])
