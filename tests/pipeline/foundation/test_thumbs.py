"""The thumbnail every downloaded image gets: a lossless PNG any reader decodes, the same bytes each
time, THUMB_SIDE px on the longer side."""
from __future__ import annotations

import io
import zlib

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


def test_the_stored_form_is_read_without_pil_and_others_go_to_it(monkeypatch):
    # encode()'s bytes take the OpenCV path (PIL made to fail), a PNG with other chunks before
    # its pixels does not: an EXIF orientation is not applied (PIL does not apply it either)
    image = picture(30, 20, seed=5)
    data = thumbs.encode(image)
    expected = np.asarray(image)
    exif = Image.Exif()
    exif[0x0112] = 6   # rotate 90 degrees on display
    buf = io.BytesIO()
    image.save(buf, "PNG", exif=exif)
    rotated_tag = buf.getvalue()
    assert np.array_equal(thumbs.decode(rotated_tag), expected)
    monkeypatch.setattr(thumbs.Image, "open", lambda *a, **k: (_ for _ in ()).throw(OSError("PIL not used")))
    decoded = thumbs.decode(data)
    assert np.array_equal(decoded, expected) and not decoded.flags.writeable   # as PIL's array
    with pytest.raises(ValueError, match="not a thumbnail"):
        thumbs.decode(rotated_tag)      # not the stored form: PIL's, which fails here


def test_a_stored_form_header_over_garbage_is_refused():
    data = thumbs.encode(picture(64, 64, seed=6))
    body = data[:41] + bytes(200) + data[-12:]       # the header and IEND around nonsense
    with pytest.raises(ValueError, match="not a thumbnail"):
        thumbs.decode(body)
    huge = bytearray(data)
    huge[16:24] = (60000).to_bytes(4, "big") * 2       # a valid header OpenCV refuses to allocate
    huge[29:33] = zlib.crc32(bytes(huge[12:29])).to_bytes(4, "big")
    with pytest.raises(ValueError, match="not a thumbnail"):
        thumbs.decode(bytes(huge))
