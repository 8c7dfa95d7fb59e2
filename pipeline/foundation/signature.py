"""The per-image signature `clipdata download` stores for the contamination check (`clipdata
dedup`): two 64-bit pHashes of the STORED image (img2dataset's resize to 256 with padding to a
square, transparency matted on white), of all of it (`phash`) and of its centre without the
padding bars (`phash_centre`), and its thumbnail (thumbs.py). One decode per image, once, at
download time; dedup computes the same from the tar for shards written elsewhere.

This is the foundation's half of the perceptual hashing: the hash itself (imagehash's pHash),
the geometry the training views and dedup's test views share (padding to a square, crops,
the stored picture's content box), and the training views. dedup/hashing.py builds the test
side's many views on it.

Bit order: a hash's int is its imagehash hex string read as one big-endian number, so
`hex64(phash(im)) == str(imagehash.phash(im))`.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from clipdata.pipeline.foundation.imaging import to_rgb

# The training side's second view (`train_views`): the centre 70% of each side of the stored
# picture's content (padding bars left out), padded to a square. A test image that is itself a
# crop of the training picture (cut 5-20% of each side: a test set made from web photos) has a
# window among dedup's test views (dedup/hashing.py) that shows the same centre: 70% of the training picture is
# 0.7 / 0.9 ~ 80% of a 10% crop and 0.7 / 0.8 ~ 85% of a 20% crop. Measured with the default
# views (bench/dedup.py quality, photo-like originals): such copies found 95% (10% crops) and
# 96% (20%) of the time, against 64% and 18% with the test views alone; the search does 2x the work.
TRAIN_CENTRE_KEEP = 0.7
TRAIN_VIEWS = ("image", "centre")
BAR_TOLERANCE = 12    # a padding row/column varies by at most this (JPEG q95 around flat colour)


def bits_to_int(bits: np.ndarray) -> int:
    """An imagehash bit array as an unsigned int, its first bit the most significant."""
    return int.from_bytes(np.packbits(bits.ravel().astype(bool)).tobytes(), "big")


def phash(image: Image.Image) -> int:
    """imagehash's 64-bit pHash as an unsigned int: int(str(imagehash.phash(image)), 16)."""
    return bits_to_int(_imagehash().phash(to_rgb(image)).hash)


def hex64(h: int) -> str:
    """16 lower-case hex digits, imagehash's string form."""
    h = int(h)
    if not 0 <= h < 1 << 64:
        raise ValueError(f"not an unsigned 64-bit hash: {h}")
    return f"{h:016x}"


def pad_to_square(image: Image.Image, fill=(255, 255, 255)) -> Image.Image:
    """The picture centred on a square of `fill`, as img2dataset's `border` resize mode pads it
    (before its resize to 256, which a pHash does not see)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), fill)
    # albumentations' PadIfNeeded puts the odd pixel at the bottom / right
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) times `scale` as the downloader's resize rounds them (albumentations'
    SmallestMaxSize / LongestMaxSize, which img2dataset uses): each side rounded, at least 1 px."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def picture_box(side: int, original_size) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1): where the picture lies in a `side` x `side` copy (the stored image or
    its thumbnail) of an image the downloader padded to a square, from the original's size as
    img2dataset records it (original_width, original_height): its longer side scaled to the
    square's, centred, the odd pixel at the bottom / right (pad_to_square). None for a square
    original or a missing size. The pixels cannot always say it: a white picture padded with
    white has no bars to find (content_boxes)."""
    try:
        ow, oh = (int(v) for v in original_size)
    except (TypeError, ValueError):
        return None
    if ow <= 0 or oh <= 0 or ow == oh or side < 2:
        return None
    ch, cw = (min(side, n) for n in scaled_size(oh, ow, side / max(ow, oh)))
    x0, y0 = (side - cw) // 2, (side - ch) // 2
    return (x0, y0, x0 + cw, y0 + ch)


def centre_crop(image: Image.Image, keep: float) -> Image.Image:
    """The centre `keep` fraction of each side."""
    return window(image, keep, 0.5, 0.5)


def window(image: Image.Image, keep: float, fx: float, fy: float) -> Image.Image:
    """`keep` of each side, placed at fraction fx, fy of the slack (0: left / top, 0.5: centre,
    1: right / bottom)."""
    w, h = image.size
    cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
    left, top = int((w - cw) * fx), int((h - ch) * fy)
    return image.crop((left, top, left + cw, top + ch))


# A line's statistics are computed without strided reductions, which cost ~10x more (this runs
# once per downloaded image): rows as contiguous blocks, the row sums by a matrix product (exact:
# integers in float32, m * 255 < 2**24); columns as reductions over the first axis.


def _line_ptp(lines: np.ndarray, axis: int) -> np.ndarray:
    """ptp over all of each line's values (int16) of a contiguous uint8 (h, w, 3) array: rows
    (axis 0) or columns (axis 1)."""
    if axis == 0:
        flat = lines.reshape(lines.shape[0], -1)
        return flat.max(axis=1).astype(np.int16) - flat.min(axis=1)
    return lines.max(axis=0).max(axis=1).astype(np.int16) - lines.min(axis=0).min(axis=1)


def _line_mean(lines: np.ndarray, axis: int) -> np.ndarray:
    """Each line's mean per channel ((n, 3) float64, the values arr.mean gives) of a contiguous
    uint8 (h, w, 3) array: rows (axis 0) or columns (axis 1)."""
    if axis == 0:
        n, m = lines.shape[:2]
        per_channel = np.tile(np.eye(3, dtype=np.float32), (m, 1))
        return (lines.reshape(n, m * 3).astype(np.float32) @ per_channel).astype(np.float64) / m
    return lines.sum(axis=0, dtype=np.uint32) / lines.shape[0]


def _flat_run(arr: np.ndarray, axis: int, ptp: np.ndarray, from_end: bool) -> tuple[int, np.ndarray]:
    """(how many lines from one end, the first or with from_end the last, are flat and of that
    end line's colour; the end line's mean colour), given every line's ptp, that end line being
    flat (content_boxes looks at the end lines first). Only the lines of the flat run have their
    colour computed: a drawing's white margin is a few dozen lines, so most of the image is not
    summed (the counts are those of all the lines' statistics at once)."""
    n = len(ptp)
    flat = ptp[::-1] <= BAR_TOLERANCE if from_end else ptp <= BAR_TOLERANCE
    run = int(np.argmin(flat)) if not flat.all() else n
    lo, hi = (n - run, n) if from_end else (0, run)
    mean = _line_mean(np.ascontiguousarray(arr[lo:hi] if axis == 0 else arr[:, lo:hi]), axis)
    if from_end:
        mean = mean[::-1]
    same = np.abs(mean - mean[0]).max(axis=-1) <= BAR_TOLERANCE
    return (int(np.argmin(same)) if not same.all() else run), mean[0]


def content_boxes(arr: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) boxes a stored picture's content may occupy (uint8 RGB array): the whole
    image, and the part between symmetric flat bars of one colour (the downloader's padding)
    along either axis."""
    h, w = arr.shape[:2]
    boxes = [(0, 0, w, h)]
    arr = np.ascontiguousarray(arr)
    for axis in (0, 1):  # 0: bars above and below (rows); 1: bars left and right (columns)
        ends = arr.take([0, -1], axis=axis)   # the end lines alone first: a photo's are not flat
        if int(np.ptp(ends.take(0, axis=axis))) > BAR_TOLERANCE or int(np.ptp(ends.take(1, axis=axis))) > BAR_TOLERANCE:
            continue
        ptp = _line_ptp(arr, axis)
        a, first = _flat_run(arr, axis, ptp, from_end=False)
        if a < 2:
            continue
        b, last = _flat_run(arr, axis, ptp, from_end=True)
        bar = min(a, b)
        if bar >= 2 and np.abs(first - last).max() <= BAR_TOLERANCE and arr.shape[axis] - 2 * bar >= 8:
            boxes.append((0, bar, w, h - bar) if axis == 0 else (bar, 0, w - bar, h))
    return boxes


def stored_content(image: Image.Image) -> Image.Image:
    """A stored training picture without its padding bars (the smallest of content_boxes)."""
    rgb = to_rgb(image)
    box = min(content_boxes(np.asarray(rgb)), key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
    return rgb if box == (0, 0, *rgb.size) else rgb.crop(box)


def train_views(image: Image.Image) -> dict[str, int]:
    """{training view: pHash} of a stored training picture: "image" (what `clipdata download`
    writes as `phash`) and "centre" (`phash_centre`, see TRAIN_CENTRE_KEEP)."""
    rgb = to_rgb(image)
    return {"image": phash(rgb),
            "centre": phash(pad_to_square(centre_crop(stored_content(rgb), TRAIN_CENTRE_KEEP)))}


def _imagehash():
    import imagehash  # here, not at import: it brings scipy, which the driver process never needs

    return imagehash


def train_signature(encoded: bytes) -> tuple[str, str, bytes]:
    """(phash, phash_centre, thumb) of a stored image, from one decode: the contamination
    stage's two training views (train_views, 16 hex digits each) and its thumbnail (thumbs.py)."""
    from clipdata.pipeline.foundation import thumbs

    with Image.open(io.BytesIO(encoded)) as image:
        image.load()
        rgb = to_rgb(image)
    views = train_views(rgb)
    return hex64(views["image"]), hex64(views["centre"]), thumbs.encode(rgb)
