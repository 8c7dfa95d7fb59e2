"""resize.py stores the bytes img2dataset's own Resizer stores, for every mode and option, and
says why when it stores nothing."""
from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from clipdata.pipeline.download import images, resize

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def encoded(array: np.ndarray, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **kw)
    return out.getvalue()


def corpus() -> list[bytes]:
    """Pictures of many shapes and kinds: smooth photo-like and noisy, grey, with alpha (RGBA and
    grey+alpha, opaque RGBA, 16-bit RGBA), a palette with a transparent colour, 16-bit grey, CMYK
    JPEG, WebP, 1-bit; sides above, below and at the sizes the configs resize to."""
    rng = np.random.default_rng(0)
    out = []
    for w, h in [(1, 1), (3, 40), (255, 257), (257, 255), (63, 65), (100, 101), (400, 300), (13, 7), (500, 180)]:
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = np.dstack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), (xx + yy) % 256]).astype(np.uint8)
        noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
        out += [encoded(smooth, "JPEG", quality=90), encoded(noise, "PNG"), encoded(smooth[..., 0], "JPEG"),
                encoded(np.dstack([smooth, alpha]), "PNG"), encoded(np.dstack([noise[..., 0], alpha]), "PNG"),
                encoded(smooth, "WEBP"), encoded(noise[..., 0].astype(np.uint16) * 257, "PNG")]
        palette = io.BytesIO()
        Image.fromarray(smooth).convert("P", palette=Image.Palette.ADAPTIVE).save(palette, "PNG", transparency=0)
        cmyk = io.BytesIO()
        Image.fromarray(smooth).convert("CMYK").save(cmyk, "JPEG")
        bilevel = io.BytesIO()
        Image.fromarray(noise).convert("1").save(bilevel, "PNG")
        out += [palette.getvalue(), cmyk.getvalue(), bilevel.getvalue()]
    # sides already at the target (64, 256: no resize, no padding), an opaque RGBA, a 16-bit RGBA
    flat = np.full((64, 256, 3), 90, np.uint8)
    opaque = np.dstack([rng.integers(0, 256, (100, 64, 3), dtype=np.uint8), np.full((100, 64), 255, np.uint8)])
    deep = (rng.integers(0, 65536, (30, 50, 4), dtype=np.uint32)).astype(np.uint16)
    deep_png = cv2.imencode(".png", deep)[1].tobytes()
    out += [encoded(flat, "PNG"), encoded(flat[:, :64], "JPEG"), encoded(np.full((256, 256, 3), 7, np.uint8), "PNG"),
            encoded(opaque, "PNG"), deep_png]
    return out + [b"", b"not an image", out[0][: len(out[0]) // 2]]


def same_or_same_failure(theirs: tuple, ours: resize.Resized) -> bool:
    mine = (ours.data, ours.width, ours.height, ours.original_width, ours.original_height, ours.error)
    if theirs == mine:
        return True
    # OpenCV refusing to encode (a JPEG side over 65,500, a WebP side over 16,383): img2dataset
    # reports the AttributeError of its own .tobytes() on the failure tuple; we say what failed.
    # Both store nothing.
    return theirs[0] is None and ours.error_kind == "resize" and "tobytes" in theirs[5]


CONFIGS = [
    # (mode, only if bigger, format, quality, size, min size, max aspect ratio); mostly 64 px,
    # which shrinks most of the corpus and enlarges the rest, as 256 does on the web
    *itertools.product(resize.MODES, [False, True], ["jpg"], [95], [64, 256], [0], [float("inf")]),
    *itertools.product(resize.MODES, [False], ["png", "webp"], [6, 80], [64], [0], [float("inf")]),
    *itertools.product(["border", "center_crop"], [False], ["jpg"], [95], [64], [20], [3.0]),
]


def test_the_stored_bytes_are_img2dataset_s_for_every_mode_and_option():
    from img2dataset.resizer import ResizeMode, Resizer

    inputs = corpus()
    compared = stored = 0
    for mode, only_bigger, fmt, quality, size, min_size, max_ratio in CONFIGS:
        if (fmt == "png") != (quality == 6):
            continue
        theirs = Resizer(image_size=size, resize_mode=ResizeMode[mode], resize_only_if_bigger=only_bigger,
                         encode_quality=quality, encode_format=fmt, min_image_size=min_size,
                         max_image_area=50_000_000, max_aspect_ratio=max_ratio)
        ours = resize.Resizer(size, mode, only_bigger, fmt, quality, min_size, 50_000_000, max_ratio)
        for body in inputs:
            expected, got = theirs(io.BytesIO(body)), ours(body)
            assert same_or_same_failure(expected, got), (mode, only_bigger, fmt, size, min_size, max_ratio, len(body),
                                                         expected[1:], got.error)
            compared += 1
            stored += got.data is not None
    assert compared > 1000 and stored > 0.8 * compared


def test_each_failure_has_its_kind_and_img2dataset_s_words():
    def one(body, **options):
        config = dict(image_size=256, resize_mode="border", resize_only_if_bigger=False, encode_format="jpg",
                      encode_quality=95) | options
        return resize.Resizer(**config)(body)

    picture = encoded(np.full((40, 30, 3), 128, np.uint8), "PNG")
    assert (one(b"\x89PNG\r\n\x1a\n" + b"\0" * 50).error_kind, one(b"junk").error) == ("decode", "Image decoding error")
    assert (one(picture, min_image_size=31).error_kind, one(picture, min_image_size=31).error) == ("too-small", "image too small")
    assert one(picture, min_image_size=30).error_kind is None
    assert one(picture, max_image_area=1199).error_kind == "too-many-pixels"
    assert one(picture, max_aspect_ratio=1.3).error == "aspect ratio too large"
    assert one(picture, max_aspect_ratio=1.34).error_kind is None
    # a 1 x 300 line scaled by its shorter side is 256 x 76,800: JPEG cannot hold it
    line = one(encoded(np.zeros((300, 1, 3), np.uint8), "PNG"), resize_mode="keep_ratio")
    assert line.data is None and line.error_kind == "resize" and "76800" in line.error


def test_a_line_scaled_by_its_shorter_side_is_refused_before_it_is_allocated():
    # 1 x 40,000 (within the pixel cap) would become 256 x 10,240,000 in keep_ratio and center_crop:
    # 7.8 GB before the resize; refused from the arithmetic instead, with what it would have been
    line = encoded(np.zeros((40_000, 1, 3), np.uint8), "PNG")
    for mode, fmt in (("keep_ratio", "jpg"), ("keep_ratio", "png"), ("center_crop", "jpg")):
        refused = resize.Resizer(256, mode, False, fmt, 6 if fmt == "png" else 95, 0, 50_000_000)(line)
        assert (refused.data, refused.error_kind) == (None, "too-many-pixels"), (mode, fmt)
        assert "256x10240000" in refused.error
    # the modes that scale the longer side store it
    assert resize.Resizer(256, "border", False, "jpg", 95, 0, 50_000_000)(line).height == 256
    # past the encoder's side limit, where img2dataset's encode fails: refused as a resize failure
    for fmt, height, side in (("jpg", 256, 65_500), ("webp", 64, 16_383)):   # 256 x 65,536; 256 x 16,384
        over = resize.Resizer(256, "keep_ratio", False, fmt, 95, 0, 50_000_000)(
            encoded(np.zeros((height, 1, 3), np.uint8), "PNG"))
        assert over.error_kind == "resize" and f"{side:,}" in over.error, (fmt, over.error)
    fits = resize.Resizer(256, "keep_ratio", False, "webp", 95, 0, 50_000_000)(encoded(np.zeros((16_383, 256, 3), np.uint8), "PNG"))
    assert (fits.width, fits.height) == (256, 16_383)


def test_store_image_reports_the_resizer_s_kind():
    config = images.ImageConfig(min_image_size=64)
    stored = images.store_image(encoded(np.zeros((40, 40, 3), np.uint8), "PNG"), images.make_resizer(config), config)
    assert stored.data is None and stored.error_kind == "too-small" and stored.error == "too-small: image too small"
    assert (stored.original_width, stored.original_height) == (40, 40)


def test_a_download_worker_does_not_import_img2dataset_or_torch():
    code = ("import sys; from clipdata.pipeline.download import images, job; "
            "r = images.make_resizer(images.ImageConfig()); "
            "print(sorted(m for m in ('img2dataset', 'albumentations', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("mode", ["dancing", ""])
def test_an_unknown_mode_is_refused(mode):
    with pytest.raises(ValueError, match="resize mode"):
        resize.Resizer(256, mode, False, "jpg", 95)


def test_matting_gives_img2dataset_s_bytes_for_every_alpha_and_value():
    every = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1).reshape(-1, 2).astype(np.uint8)
    image = np.concatenate([np.repeat(every[:, 1:2], 3, axis=1), every[:, :1]], axis=1).reshape(256, 256, 4)
    image[..., 1] = 255 - image[..., 1]   # the channels differ
    alpha = image[:, :, 3, np.newaxis]   # img2dataset's arithmetic, written out
    expected = np.rint((alpha / 255 * image[..., :3] + 255 - alpha).clip(min=0, max=255)).astype(np.uint8)
    assert np.array_equal(resize.matted_on_white(image), expected)
    opaque = image.copy()
    opaque[..., 3] = 255
    assert np.array_equal(resize.matted_on_white(opaque), opaque[..., :3])
    deep = image.astype(np.uint16) * 257
    deep_alpha = deep[:, :, 3, np.newaxis]
    deep_expected = np.rint((deep_alpha / 255 * deep[..., :3] + 255 - deep_alpha).clip(min=0, max=255)).astype(np.uint8)
    assert np.array_equal(resize.matted_on_white(deep), deep_expected)
