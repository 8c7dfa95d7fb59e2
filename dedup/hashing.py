"""Perceptual hashes of images, as unsigned 64-bit ints, and the test-side views that find copies.

The training side holds two hashes per image (`train_views()`), computed by `clipdata download`
on the STORED image (img2dataset's resize to 256 with padding to a square, JPEG q95,
transparency matted on white): the `phash` and `phash_centre` columns of every
`{shard:05d}.parquet`, 16 hex digits each. `phash()` here gives the same number for the same
encoded image as the downloader stores (both are imagehash.phash; the download-time part, the
training views and the geometry they share with the test views, is pipeline/foundation/signature.py).

The test side is small, so each test image is hashed in many views (`views()`): a copy in the
training data may be mirrored, cropped or padded, and each of those moves a pHash as far as an
unrelated image. When the test image is the cropped one, no view of it shows the whole training
picture; the training side's centre view meets one of its crop windows instead. The views are
chosen by `bench/dedup.py quality`; see DEFAULT_VIEWS and TRAIN_CENTRE_KEEP.

Bit order: a hash's int is its imagehash hex string read as one big-endian number, so
`hex64(phash(im)) == str(imagehash.phash(im))`; `to_codes` writes the same 8 bytes, most
significant first, as the uint8 codes FAISS binary indexes take.
"""
from __future__ import annotations

import concurrent.futures
import io
import multiprocessing
import os
import warnings
from typing import Callable, Iterable, Sequence

import imagehash
import numpy as np
from PIL import Image, ImageOps

from clipdata.pipeline.foundation import failures
from clipdata.pipeline.foundation.imaging import to_rgb
from clipdata.pipeline.foundation.signature import (  # noqa: F401 - the download-time half, used here and re-exported
    BAR_TOLERANCE, TRAIN_CENTRE_KEEP, TRAIN_VIEWS, bits_to_int, centre_crop, content_boxes, hex64, pad_to_square,
    phash, stored_content, train_views, window)

# Chosen by measurement (bench/dedup.py quality, see there for the tables):
# - "image" and "mirror": the picture as it is and flipped (a flip moves a pHash 27-40 bits);
# - "border": padded to a square with white, as img2dataset's default `border` resize stores it
#   (for a 2:1 picture the stored copy's pHash is ~30 bits from the unpadded one);
# - "border_mirror": both;
# - "crop90": the centre 90% of each side (the training copy is a crop of the test image);
# - "border_crop85*", "border_crop80*": 85% and 80% of each side at nine places (centre, edges,
#   corners), padded like the stored copy. A crop that cuts 10-20% of each side, split at random
#   between its two ends, moves a pHash 10-30 bits; the nearest of these nine windows is within
#   the radius for 97-99% of such copies (one centred window: 13-73%). The cost: 23 hashes per
#   test image instead of 5 (FAST_VIEWS), 4.6x the search work; with the training centre view,
#   9.6e-3 unrelated candidates to verify per pair instead of 2.2e-3.
# Measured gains: bench/dedup.py quality, table "Views" (and its docstring).
GRID_POSITIONS = {"": (0.5, 0.5), "_tl": (0.0, 0.0), "_t": (0.5, 0.0), "_tr": (1.0, 0.0), "_l": (0.0, 0.5),
                  "_r": (1.0, 0.5), "_bl": (0.0, 1.0), "_b": (0.5, 1.0), "_br": (1.0, 1.0)}
GRID_KEEPS = (85, 80)


def crop_grid(keep: int) -> tuple[str, ...]:
    """The nine view names of `keep`% windows: border_crop{keep}, border_crop{keep}_tl, ..."""
    return tuple(f"border_crop{keep}{pos}" for pos in GRID_POSITIONS)


FAST_VIEWS = ("image", "mirror", "border", "border_mirror", "crop90")
DEFAULT_VIEWS = FAST_VIEWS + tuple(name for keep in GRID_KEEPS for name in crop_grid(keep))
# `--views fast`: a fifth of the search work; 10% crops found ~70%, 20% crops ~15% of the time.
VIEW_PRESETS = {"default": DEFAULT_VIEWS, "fast": FAST_VIEWS}

FAMILIES = ("phash", "dhash", "whash")
HEX_DIGITS = 16


# ---------------------------------------------------------------------------------------------
# Decoding


def open_image(data: bytes) -> Image.Image:
    """Encoded bytes -> RGB image (raises ValueError when they are not an image PIL reads)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return to_rgb(image)
        except Exception as err:  # noqa: BLE001 - PIL raises many types for non-images
            raise ValueError(f"not an image: {failures.describe(err)}") from err


# ---------------------------------------------------------------------------------------------
# Hashes


def dhash(image: Image.Image) -> int:
    """imagehash's 64-bit (horizontal) difference hash as an unsigned int."""
    return bits_to_int(imagehash.dhash(to_rgb(image)).hash)


def whash(image: Image.Image) -> int:
    """imagehash's 64-bit Haar wavelet hash as an unsigned int."""
    return bits_to_int(imagehash.whash(to_rgb(image)).hash)


HASH_FUNCTIONS: dict[str, Callable[[Image.Image], int]] = {"phash": phash, "dhash": dhash, "whash": whash}


def hash_function(family: str) -> Callable[[Image.Image], int]:
    try:
        return HASH_FUNCTIONS[family]
    except KeyError:
        raise ValueError(f"unknown hash family {family!r}; known: {', '.join(FAMILIES)}") from None


def from_hex(s: str) -> int:
    """The int of a 16-hex-digit hash string (the shards' `phash` column)."""
    if not isinstance(s, str) or len(s) != HEX_DIGITS:
        raise ValueError(f"a hash is {HEX_DIGITS} hex digits, not {s!r}")
    try:
        return int(s, 16)
    except ValueError:
        raise ValueError(f"a hash is {HEX_DIGITS} hex digits, not {s!r}") from None


def from_hex_many(strings: Iterable[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(hashes uint64, valid bool) of a column of hex strings; None or malformed entries are
    invalid (their hash is 0)."""
    strings = list(strings)
    hashes = np.zeros(len(strings), dtype=np.uint64)
    valid = np.zeros(len(strings), dtype=bool)
    for i, s in enumerate(strings):
        if isinstance(s, str) and len(s) == HEX_DIGITS:
            try:
                hashes[i] = int(s, 16)
                valid[i] = True
            except ValueError:
                pass
    return hashes, valid


# ---------------------------------------------------------------------------------------------
# Views: the forms a test image's copy may take in the training data


def uncrop(image: Image.Image, grow: float) -> Image.Image:
    """The picture with its edge pixels repeated outwards, each side `grow` times longer: a guess
    at the low frequencies of an original this picture was cropped from."""
    w, h = image.size
    pad_x, pad_y = round(w * (grow - 1) / 2), round(h * (grow - 1) / 2)
    arr = np.pad(np.asarray(image), ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="edge")
    return Image.fromarray(arr, "RGB")


VIEW_FUNCTIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "image": lambda im: im,
    "mirror": ImageOps.mirror,
    "border": pad_to_square,
    "border_mirror": lambda im: pad_to_square(ImageOps.mirror(im)),
    "border_black": lambda im: pad_to_square(im, (0, 0, 0)),
    "crop90": lambda im: centre_crop(im, 0.9),
    "crop80": lambda im: centre_crop(im, 0.8),
    "crop90_mirror": lambda im: ImageOps.mirror(centre_crop(im, 0.9)),
    "border_crop90": lambda im: pad_to_square(centre_crop(im, 0.9)),
    "uncrop110": lambda im: uncrop(im, 1.1),
    "border_uncrop110": lambda im: pad_to_square(uncrop(im, 1.1)),
}
for _keep in GRID_KEEPS:
    for _pos, (_fx, _fy) in GRID_POSITIONS.items():
        VIEW_FUNCTIONS[f"border_crop{_keep}{_pos}"] = (
            lambda im, k=_keep / 100, fx=_fx, fy=_fy: pad_to_square(window(im, k, fx, fy)))
VIEW_NAMES = tuple(VIEW_FUNCTIONS)


def view_images(image: Image.Image, names: Sequence[str] | None = None) -> dict[str, Image.Image]:
    """{view name: the view's picture} of a test image, for the views `names` (default
    DEFAULT_VIEWS): what is hashed, and what the copy descriptor describes."""
    names = DEFAULT_VIEWS if names is None else names
    rgb = to_rgb(image)
    out = {}
    for name in names:
        try:
            view = VIEW_FUNCTIONS[name]
        except KeyError:
            raise ValueError(f"unknown view {name!r}; known: {', '.join(VIEW_NAMES)}") from None
        out[name] = view(rgb)
    return out


def views(image: Image.Image, family: str = "phash", names: Sequence[str] | None = None) -> dict[str, int]:
    """{view name: hash} of a test image, for the views `names` (default DEFAULT_VIEWS)."""
    fn = hash_function(family)
    return {name: fn(view) for name, view in view_images(image, names).items()}


# ---------------------------------------------------------------------------------------------
# Hashing encoded images (shards made elsewhere, whose parquet has no phash), in parallel


def hashes_from_image_bytes(data: bytes, family: str = "phash") -> int:
    """The hash of an encoded image: decode, matte on white, hash (raises ValueError when the
    bytes are not an image)."""
    return hash_function(family)(open_image(data))


def _hash_or_none(args: tuple[bytes, str]) -> int | None:
    data, family = args
    try:
        return hashes_from_image_bytes(data, family)
    except ValueError:
        return None


def _pool_context():
    # fork starts workers in milliseconds; elsewhere (macOS, Windows) only spawn is safe.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def hash_many(images: Sequence[bytes], workers: int | None = None, family: str = "phash",
              chunksize: int = 64) -> list[int | None]:
    """The hash of each encoded image, in order; None where the bytes are not an image.
    `workers` processes (default: all cores; 0 or 1: in this process)."""
    hash_function(family)  # an unknown family fails here, not in a worker
    workers = (os.cpu_count() or 1) if workers is None else workers
    jobs = [(data, family) for data in images]
    if workers <= 1 or len(jobs) < 2 * chunksize:
        return [_hash_or_none(job) for job in jobs]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
        return list(pool.map(_hash_or_none, jobs, chunksize=chunksize))


# ---------------------------------------------------------------------------------------------
# Vectorised helpers


def to_codes(hashes: np.ndarray) -> np.ndarray:
    """uint64 hashes -> (n, 8) uint8 FAISS binary codes, most significant byte first (the byte
    order of the hex string, so a code's bytes read as hex give hex64 of the hash)."""
    hashes = np.ascontiguousarray(np.asarray(hashes, dtype=np.uint64).reshape(-1))
    return hashes.astype(">u8").view(np.uint8).reshape(-1, 8)


def from_codes(codes: np.ndarray) -> np.ndarray:
    """(n, 8) uint8 codes -> uint64 hashes (the inverse of to_codes)."""
    codes = np.ascontiguousarray(np.asarray(codes, dtype=np.uint8).reshape(-1, 8))
    return codes.view(">u8").reshape(-1).astype(np.uint64)


def as_hashes(x) -> np.ndarray:
    """uint64 hashes from uint64/int hashes or (n, 8) uint8 codes."""
    x = np.asarray(x)
    if x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 8:
        return from_codes(x)
    return np.asarray(x, dtype=np.uint64).reshape(-1)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (uint8 result)."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _BYTE_POPCOUNT[x[..., None].view(np.uint8)].sum(axis=-1, dtype=np.uint8)


def hamming(a, b) -> np.ndarray:
    """Hamming distances between uint64 hashes, broadcast like a ^ b."""
    return popcount64(np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)))
