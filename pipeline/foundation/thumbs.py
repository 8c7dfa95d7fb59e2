"""The thumbnail `clipdata download` stores of every image, so the contamination check can decide
a candidate pair without opening the shard's tar.

A thumbnail is the STORED image (after img2dataset's resize, padding included) reduced with a box
filter to THUMB_SIDE px on its longer side (aspect kept) and encoded as PNG: about 3 KB per
image on average (drawings less, photos up to ~10 KB), the `thumb` column of every
`{shard:05d}.parquet` (the full image is ~15-20 KB in the tar). The pixel verifier run on a
thumbnail instead of the stored image (verify.screen) passed 5.7% of 1,500 unrelated hash
candidates and lost 3 of the 791 copies the full verifier accepts (measured once on samples of
bench/dedup.py's originals and transformations); so only the few pairs it passes need the tar.

Lossless on purpose: the same measurement with JPEG thumbnails lost 6 copies at q95 (2.0 KB) and
16 at q90 (1.7 KB): JPEG's ringing at 64 px blurs the padding bars and fine strokes the tests look at.
Encoded with OpenCV's PNG encoder (0.6 ms a thumbnail against PIL's 1.2-1.5: this runs once per
downloaded image); the bytes are deterministic for the same stored image (fixed settings, no
metadata), so a rerun of the download writes the same parquet. Any PNG reader decodes them.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

THUMB_SIDE = 64


def thumbnail(image: Image.Image) -> Image.Image:
    """The picture reduced to THUMB_SIDE px on its longer side (box filter), RGB; a smaller
    picture is kept at its size."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    scale = THUMB_SIDE / max(w, h)
    if scale >= 1:
        return rgb
    f = max(w, h) // THUMB_SIDE
    if f * THUMB_SIDE == max(w, h) and f & (f - 1) == 0 and w % f == 0 and h % f == 0:
        # a power-of-two factor (the downloader's 256 px: 4): PIL's reduce gives the box
        # filter's very pixels when done as its resize does, rows then columns, each rounded
        # (a weight of 1/f is exact in its fixed point), in ~2/3 of the time
        return rgb.reduce((f, 1)).reduce((1, f))
    return rgb.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX)


PNG_COMPRESSION = 3   # zlib level: 6 and 9 make files ~2% smaller and take 20% longer
# The strategy is zlib's run-length one (cv2.IMWRITE_PNG_STRATEGY_RLE) on PNG's filtered rows
# (the runs of zeros a filter leaves are what it finds): measured 2026-12-07 on one core, 64 px
# thumbnails of 609 real photos (crops of Debian's mate-backgrounds, skimage's samples): 0.19 ms
# and 4.5 KB a thumbnail against the default strategy's 0.27 ms and 4.9 KB; generated clip art,
# drawings, texts 3-10% larger and 10-20% faster


def encode(image: Image.Image) -> bytes:
    """The stored form of a thumbnail: PNG bytes (thumbnail() of the image first)."""
    import cv2

    rgb = np.asarray(thumbnail(image))
    settings = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]), settings)
    if not ok:
        raise ValueError("the thumbnail could not be encoded")
    return data.tobytes()


def from_stored_bytes(encoded: bytes) -> bytes:
    """The thumbnail of an encoded stored image (what the downloader writes in the parquet)."""
    with Image.open(io.BytesIO(encoded)) as image:
        image.load()
        return encode(image)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"     # the last chunk: a cut file lacks it (OpenCV would warn on stderr)


def _stored_form(data: bytes) -> bool:
    """Whether `data` is laid out as encode() writes it: a PNG whose header says 8-bit RGB and
    whose pixels come right after it (no chunk between: no EXIF orientation, which OpenCV would
    apply and PIL does not, no animation), IEND last."""
    return (len(data) > 41 and data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
            and data[24] == 8 and data[25] == 2 and data[37:41] == b"IDAT" and data.endswith(PNG_END))


def decode(data: bytes) -> np.ndarray:
    """A stored thumbnail as a read-only uint8 RGB array (raises ValueError when the bytes are
    not one). The form encode() writes is read with OpenCV (0.10 against PIL's 0.13 ms: this runs
    once per training image searched), any other with PIL; the same pixels either way."""
    import cv2

    if _stored_form(data):
        try:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        except cv2.error:
            bgr = None   # a header beyond OpenCV's limits: PIL says what is wrong
        if bgr is not None:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            rgb.flags.writeable = False   # as PIL's: one thumbnail is never changed in place
            return rgb
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as err:  # noqa: BLE001 - PIL raises many types for non-images
        raise ValueError(f"not a thumbnail: {type(err).__name__}") from err
