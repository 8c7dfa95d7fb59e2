"""Hashes and test-side views: the same number the downloader stores, views that find copies."""
from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from clipdata.dedup import hashing
from clipdata.pipeline.download.images import ImageConfig, make_resizer, store_image


def phash_hex(encoded: bytes) -> str:
    """The reference: imagehash's own pHash of the decoded RGB picture, as it prints it."""
    with Image.open(io.BytesIO(encoded)) as image:
        return str(imagehash.phash(image.convert("RGB")))


def photo_like(seed: int, size=(160, 120)) -> Image.Image:
    """Smooth random colour blobs plus grain: enough structure for a stable pHash."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(grid, "RGB").resize(size, Image.BICUBIC), dtype=np.int16)
    noise = rng.integers(-8, 9, (size[1], size[0], 1), dtype=np.int16)
    return Image.fromarray((base + noise).clip(0, 255).astype(np.uint8), "RGB")


def encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_phash_equals_the_downloaders(fmt):
    for seed in range(5):
        data = encoded(photo_like(seed), fmt)
        assert hashing.hashes_from_image_bytes(data) == int(phash_hex(data), 16)
        with Image.open(io.BytesIO(data)) as im:
            assert hashing.hex64(hashing.phash(im)) == phash_hex(data)


def test_phash_of_a_stored_image_equals_the_shards_column():
    config = ImageConfig()
    stored = store_image(encoded(photo_like(7, (300, 200)), "PNG"), make_resizer(config), config)
    assert stored.error is None
    assert hashing.hashes_from_image_bytes(stored.data) == hashing.from_hex(stored.phash)
    views = hashing.train_views(hashing.open_image(stored.data))
    assert views == {"image": hashing.from_hex(stored.phash), "centre": hashing.from_hex(stored.phash_centre)}


def test_stored_content_leaves_the_padding_bars_out():
    config = ImageConfig()
    stored = store_image(encoded(photo_like(8, (300, 150)), "PNG"), make_resizer(config), config)
    image = hashing.open_image(stored.data)
    assert image.size == (256, 256)
    content = hashing.stored_content(image)
    assert content.width == 256 and 124 <= content.height <= 132   # the 2:1 picture, bars above and below
    square = hashing.open_image(encoded(photo_like(9, (200, 200)), "PNG"))
    assert hashing.stored_content(square).size == (200, 200)


def test_training_centre_view_finds_a_test_image_cropped_from_it():
    """The other direction: the test image is a corner crop of the training picture (80% of
    each side). No test view sees the whole training picture; the training side's centre
    view meets one of the test image's windows."""
    from clipdata.dedup.index import DEFAULT_RADIUS

    config = ImageConfig()
    resizer = make_resizer(config)
    for seed in range(4):
        im = photo_like(30 + seed, (200, 160))
        w, h = im.size
        test = im.crop((0, 0, round(0.8 * w), round(0.8 * h)))     # the top-left 80%
        stored = store_image(encoded(im, "PNG"), resizer, config)
        train = {"image": hashing.from_hex(stored.phash), "centre": hashing.from_hex(stored.phash_centre)}
        v = hashing.views(test)
        to_image = min(hashing.hamming(h_, train["image"]) for h_ in v.values())
        to_centre = min(hashing.hamming(h_, train["centre"]) for h_ in v.values())
        assert to_centre <= DEFAULT_RADIUS < to_image, (to_image, to_centre)   # measured 8-10 and 18-24


def test_ints_and_hex_are_imagehashs_bits():
    im = photo_like(3)
    for fn, ref in ((hashing.phash, imagehash.phash), (hashing.dhash, imagehash.dhash),
                    (hashing.whash, imagehash.whash)):
        h = fn(im)
        assert 0 <= h < 1 << 64
        assert hashing.hex64(h) == str(ref(im))
        assert hashing.from_hex(hashing.hex64(h)) == h


@pytest.mark.parametrize("bad", ["", "abc", "0123456789abcdeg", "0123456789abcdef0", None])
def test_from_hex_rejects_what_is_not_a_hash(bad):
    with pytest.raises(ValueError):
        hashing.from_hex(bad)


def test_from_hex_many_marks_bad_entries():
    hashes, valid = hashing.from_hex_many(["00000000000000ff", None, "zz", "ffffffffffffffff"])
    assert valid.tolist() == [True, False, False, True]
    assert hashes.tolist() == [255, 0, 0, (1 << 64) - 1]


def test_to_rgb_mattes_transparency_on_white_like_img2dataset():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgb = hashing.to_rgb(rgba)
    assert rgb.mode == "RGB" and rgb.getpixel((1, 1)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (0, 0, 255)
    half = hashing.to_rgb(Image.new("LA", (2, 2), (0, 128)))
    assert abs(half.getpixel((0, 0))[0] - 127) <= 1
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] + [0] * 765)
    palette.info["transparency"] = 0
    assert hashing.to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)


def test_to_rgb_scales_16_bit_and_converts_cmyk():
    grey16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert grey16.mode.startswith("I")
    assert hashing.to_rgb(grey16).getpixel((0, 0)) == (255, 255, 255)
    mid16 = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert hashing.to_rgb(mid16).getpixel((0, 0))[0] in (127, 128)
    assert hashing.to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert hashing.to_rgb(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_views_of_a_mirrored_image_hold_the_originals_hash():
    im = photo_like(11, (150, 100))
    names = hashing.DEFAULT_VIEWS
    assert {"image", "mirror", "border", "border_mirror"} <= set(names)
    v, vm = hashing.views(im), hashing.views(ImageOps.mirror(im))
    assert vm["mirror"] == v["image"] and v["mirror"] == vm["image"]
    assert vm["border_mirror"] == v["border"]
    assert v["image"] in vm.values()


def test_border_view_is_the_stored_copys_hash():
    """A 3:2 picture is stored padded to a square: its plain pHash is far from the stored one,
    its `border` view is not."""
    im = photo_like(5, (300, 200))
    config = ImageConfig()
    stored = store_image(encoded(im, "PNG"), make_resizer(config), config)
    train = hashing.from_hex(stored.phash)
    v = hashing.views(im)
    assert hashing.hamming(v["border"], train) <= 4
    assert hashing.hamming(v["image"], train) > 10


def test_crop_grid_views_find_corner_crops_the_centre_view_misses():
    """A copy that cuts 20% of each side, all of it from one end (a corner crop), stored by the
    downloader: the centred views miss it at the default radius, the grid's window at that
    corner holds it within a few bits."""
    from clipdata.dedup.index import DEFAULT_RADIUS

    config = ImageConfig()
    resizer = make_resizer(config)
    assert set(hashing.crop_grid(80)) <= set(hashing.DEFAULT_VIEWS)
    for seed in range(4):
        im = photo_like(20 + seed, (200, 160))
        w, h = im.size
        corner = im.crop((round(0.2 * w), round(0.2 * h), w, h))   # the bottom-right 80%
        train = hashing.from_hex(store_image(encoded(corner, "PNG"), resizer, config).phash)
        v = hashing.views(im)
        centred = min(hashing.hamming(v[n], train) for n in ("image", "border", "crop90", "border_crop80"))
        assert hashing.hamming(v["border_crop80_br"], train) <= 6
        assert centred > DEFAULT_RADIUS  # measured 22-34 bits
    assert hashing.window(im, 0.8, 1.0, 1.0).size == corner.size


def test_views_reject_unknown_names_and_families():
    with pytest.raises(ValueError, match="unknown view"):
        hashing.views(photo_like(0), names=["sideways"])
    with pytest.raises(ValueError, match="unknown hash family"):
        hashing.views(photo_like(0), family="md5")


def test_codes_and_popcount():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 1 << 63, 200, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 200).astype(np.uint64)
    b = rng.integers(0, 1 << 63, 200, dtype=np.uint64)
    codes = hashing.to_codes(a)
    assert codes.shape == (200, 8) and codes.dtype == np.uint8
    assert codes[0].tobytes().hex() == hashing.hex64(int(a[0]))  # most significant byte first
    assert np.array_equal(hashing.from_codes(codes), a)
    expected = [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)]
    assert hashing.hamming(a, b).tolist() == expected
    assert hashing.hamming(a[:3, None], b[None, :4]).shape == (3, 4)


def test_hash_many_matches_one_by_one_and_marks_non_images():
    images = [encoded(photo_like(s, (64, 48))) for s in range(150)] + [b"not an image"]
    expected = [hashing.hashes_from_image_bytes(d) for d in images[:-1]] + [None]
    assert hashing.hash_many(images, workers=2, chunksize=16) == expected
    assert hashing.hash_many(images[:3], workers=1) == expected[:3]
    with pytest.raises(ValueError):
        hashing.hashes_from_image_bytes(b"not an image")
