"""The thumbnail every downloaded image gets: a lossless PNG any reader decodes, the same bytes each
time, THUMB_SIDE px on the longer side."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipdata.pipeline.foundation import thumbs


def picture(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    arr = np.asarray(smooth, dtype=np.int16) + rng.integers(-6, 7, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("size", [(256, 256), (300, 120), (90, 200)])
def test_a_thumbnail_is_a_lossless_png_of_the_reduced_picture(size):
    image = picture(*size)
    data = thumbs.encode(image)
    with Image.open(io.BytesIO(data)) as png:       # any PNG reader
        assert png.format == "PNG" and png.mode == "RGB"
        pixels = np.asarray(png)
    expected = np.asarray(thumbs.thumbnail(image))
    assert np.array_equal(pixels, expected) and np.array_equal(thumbs.decode(data), expected)
    assert max(pixels.shape[:2]) == thumbs.THUMB_SIDE
    w, h = size
    assert abs(pixels.shape[1] / pixels.shape[0] - w / h) < 0.05          # the aspect kept
    assert thumbs.encode(image) == data                                   # the same bytes each time


def test_a_picture_smaller_than_a_thumbnail_is_kept_at_its_size():
    image = picture(40, 30, seed=1)
    assert np.array_equal(thumbs.decode(thumbs.encode(image)), np.asarray(image))


def test_bytes_that_are_not_a_thumbnail_are_refused():
    with pytest.raises(ValueError, match="not a thumbnail"):
        thumbs.decode(b"not a png")


@pytest.mark.parametrize("size", [(256, 256), (256, 128), (192, 256), (512, 384), (1024, 64), (384, 200),
                                  (260, 256), (255, 254), (130, 65)])
def test_the_thumbnail_is_pils_box_reduction_whichever_path_makes_it(size):
    # power-of-two factors go through PIL's reduce, the others through its resize: the same pixels
    image = picture(*size, seed=sum(size))
    w, h = size
    scale = thumbs.THUMB_SIDE / max(w, h)
    expected = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX)
    assert np.array_equal(np.asarray(thumbs.thumbnail(image)), np.asarray(expected))


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA"])
def test_pngs_of_other_forms_decode_as_pil_converts_them(mode):
    # the stored form is read by OpenCV, any other PNG by PIL: RGB the way PIL makes it
    image = picture(50, 40, seed=3).convert(mode)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    assert np.array_equal(thumbs.decode(buf.getvalue()), np.asarray(image.convert("RGB")))


def test_a_cut_thumbnail_is_refused():
    data = thumbs.encode(picture(256, 256, seed=4))
    with pytest.raises(ValueError, match="not a thumbnail"):
        thumbs.decode(data[: len(data) // 2])
