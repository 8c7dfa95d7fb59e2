"""Downloaded bytes -> the image a shard stores: checked, resized, encoded, hashed.

Resizing and encoding are img2dataset's (its resize modes, minimum size, maximum aspect ratio,
encode format and quality, transparency matted on white), done by resize.py without importing
img2dataset, so shards hold exactly the bytes img2dataset would store. Two things are added
around it:
- a pixel cap checked on the image header before anything is decoded: img2dataset decodes first
  and checks the area after, so a 20000 x 20000 PNG of 40 KB costs it 1.6 GB of memory;
- the sha256 of the downloaded bytes, two 64-bit perceptual hashes (imagehash pHash) of the
  stored image, of all of it and of its centre, and a 64 px PNG thumbnail of it
  (signature.train_signature), so the contamination stage searches and screens candidates
  without decoding images again.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image

from clipdata.pipeline.download import resize
from clipdata.pipeline.foundation import failures, signature

# About 7,000 x 7,000: decoded RGBA that size is ~200 MB, a bound a worker can afford per thread.
DEFAULT_MAX_PIXELS = 50_000_000
ENCODE_EXTENSIONS = {"jpg": "jpg", "png": "png", "webp": "webp"}


# What --encode-quality means per format, as img2dataset's resizer passes it to OpenCV: JPEG and
# WebP quality 0-100; PNG's zlib compression level 0-9 (lossless at every level: only size and
# speed change). The default per format: img2dataset's 95 for the lossy two; 6 for PNG, zlib's own
# balance of size and speed.
QUALITY_RANGE = {"jpg": (0, 100), "webp": (0, 100), "png": (0, 9)}
DEFAULT_QUALITY = {"jpg": 95, "webp": 95, "png": 6}
RESIZE_MODES = resize.MODES


class ImageConfigError(ValueError):
    """An image option out of its range: `option` (the command-line flag) and `detail`."""

    def __init__(self, option: str, detail: str):
        self.option, self.detail = option, detail
        super().__init__(f"{option}: {detail}")


@dataclass
class ImageConfig:
    image_size: int = 256
    resize_mode: str = "border"  # img2dataset's: no, border, keep_ratio, keep_ratio_largest, center_crop
    resize_only_if_bigger: bool = False
    encode_format: str = "jpg"
    encode_quality: int | None = None  # None: DEFAULT_QUALITY of the format
    min_image_size: int = 0
    max_aspect_ratio: float = float("inf")
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        if self.encode_format in DEFAULT_QUALITY and self.encode_quality is None:
            self.encode_quality = DEFAULT_QUALITY[self.encode_format]

    def check(self) -> None:
        """Every option in its range (ImageConfigError naming the flag), before any work starts."""
        if self.encode_format not in QUALITY_RANGE:
            raise ImageConfigError("--encode-format", f"one of {', '.join(sorted(QUALITY_RANGE))}, "
                                   f"not {self.encode_format!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ImageConfigError("--resize-mode", f"one of {', '.join(RESIZE_MODES)}, not {self.resize_mode!r}")
        lo, hi = QUALITY_RANGE[self.encode_format]
        what = "a zlib compression level" if self.encode_format == "png" else "a quality"
        if not isinstance(self.encode_quality, int) or not lo <= self.encode_quality <= hi:
            raise ImageConfigError("--encode-quality", f"for {self.encode_format} it is {what} from {lo} to {hi} "
                                   f"(default {DEFAULT_QUALITY[self.encode_format]}), got {self.encode_quality}")
        if self.image_size < 1:
            raise ImageConfigError("--image-size", f"the side of the stored images in pixels, at least 1, "
                                   f"got {self.image_size}")
        if self.min_image_size < 0:
            raise ImageConfigError("--min-image-size", f"a side in pixels, 0 or more, got {self.min_image_size}")
        if not self.max_aspect_ratio > 0:
            raise ImageConfigError("--max-aspect-ratio", f"a ratio above 0, got {self.max_aspect_ratio}")
        if self.max_pixels < 1:
            raise ImageConfigError("--max-pixels", f"a pixel count, at least 1, got {self.max_pixels}")


@dataclass
class StoredImage:
    data: bytes | None
    ext: str
    width: int | None
    height: int | None
    original_width: int | None
    original_height: int | None
    sha256: str
    phash: str | None
    error: str | None  # None, or "<kind>: detail", in words
    phash_centre: str | None = None
    thumb: bytes | None = None  # thumbs.py: the stored image in small, for the contamination check
    error_kind: str | None = None  # None, or one of IMAGE_ERROR_KINDS, set where it failed


IMAGE_ERROR_KINDS = ("not-an-image", "too-many-pixels", "decode", "too-small", "aspect-ratio", "resize")


def make_resizer(config: ImageConfig) -> resize.Resizer:
    """The resizer of these options (checked first: ImageConfigError names the flag)."""
    config.check()
    return resize.Resizer(
        image_size=config.image_size, resize_mode=config.resize_mode,
        resize_only_if_bigger=config.resize_only_if_bigger, encode_format=config.encode_format,
        encode_quality=config.encode_quality, min_image_size=config.min_image_size,
        max_image_area=config.max_pixels, max_aspect_ratio=config.max_aspect_ratio,
    )


def header_size(body: bytes) -> tuple[int, int]:
    """(width, height) from the image header alone; raises ValueError when it is not an image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(body)) as image:
                return image.size
        except Image.DecompressionBombError as err:  # PIL's own cap, above ours: still an answer
            raise OverflowError(str(err)) from err
        except Exception as err:  # noqa: BLE001 - PIL raises many types for non-images
            raise ValueError(failures.describe(err)) from err


def store_image(body: bytes, resizer, config: ImageConfig) -> StoredImage:
    """The stored form of one downloaded image, or the reason there is none."""
    sha256 = hashlib.sha256(body).hexdigest()
    ext = ENCODE_EXTENSIONS[config.encode_format]

    def failed(kind: str, detail: str, width=None, height=None) -> StoredImage:
        return StoredImage(None, ext, None, None, width, height, sha256, None, f"{kind}: {failures.plain(detail)}",
                           error_kind=kind)

    try:
        width, height = header_size(body)
    except OverflowError as err:
        return failed("too-many-pixels", str(err))
    except ValueError as err:
        return failed("not-an-image", str(err))
    if width * height > config.max_pixels:
        return failed("too-many-pixels", f"{width}x{height} is over the cap of {config.max_pixels:,}", width, height)
    resized = resizer(body)
    if resized.error_kind is not None:
        return failed(resized.error_kind, resized.error, width, height)
    encoded = resized.data
    try:
        phash, phash_centre, thumb = signature.train_signature(encoded)
    except Exception as err:  # noqa: BLE001 - an encoder output PIL cannot read is a resize failure
        return failed("resize", f"encoded image unreadable ({failures.describe(err)})", width, height)
    return StoredImage(encoded, ext, resized.width, resized.height, resized.original_width,
                       resized.original_height, sha256, phash, None, phash_centre, thumb)
