"""img2dataset's resize, done here: the same decode, checks, geometry, interpolation and encode,
so a stored image is byte for byte the one img2dataset stores (img2dataset 1.47 with the
albumentations 1.4 it installs; tests/pipeline/download/test_resize.py compares the two on every
mode and option), at less cost per image.

Why not call img2dataset's Resizer: it builds albumentations transforms for every image and
routes each call through albumentations' checks and dispatch (~0.8 CPU-ms of the ~2.4 an image
costs it: measured on 1,499 images of bench/download.py's synthetic web, one thread), and
importing it imports all of img2dataset, torch included (~2.7 CPU-s and ~240 MB in every
download worker). What it does is a few OpenCV calls, written out below in its order:
1. decode with cv2.imdecode(IMREAD_UNCHANGED) (no EXIF rotation, 16-bit kept as it is);
2. 4 channels: alpha matted on white, to the byte its float arithmetic gives;
3. its checks, in its order and with its messages: the shorter side against --min-image-size,
   the area against the pixel cap, the aspect ratio;
4. the resize: keep_ratio / center_crop scale the SHORTER side to image_size, border /
   keep_ratio_largest the LONGER (signature.scaled_size, albumentations' SmallestMaxSize /
   LongestMaxSize: scale = size / side, each side rounded, at least 1; Python's round);
   INTER_AREA when shrinking, INTER_LANCZOS4 when enlarging; with --resize-only-if-bigger a
   picture already small enough is left as it is (and not cropped or padded either);
   center_crop then cuts the centre square (the odd pixel's slack at the bottom / right);
   border pads to the square with white (the odd pixel at the bottom / right);
5. encode with cv2.imencode at the format's quality (JPEG / WebP) or compression level (PNG).
One addition: an image whose scaled form cannot be stored is refused before the resize
allocates it (Resizer._too_large: a 1-pixel-wide line scaled by its shorter side).

Failures are returned with their kind (IMAGE_ERROR_KINDS of images.py) beside img2dataset's
words for them.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from clipdata.pipeline.foundation.signature import scaled_size

MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")
ENCODE_FLAGS = {"jpg": cv2.IMWRITE_JPEG_QUALITY, "png": cv2.IMWRITE_PNG_COMPRESSION, "webp": cv2.IMWRITE_WEBP_QUALITY}
SHRINK, ENLARGE = cv2.INTER_AREA, cv2.INTER_LANCZOS4   # img2dataset's defaults: "area", "lanczos"
WHITE = [255, 255, 255]
ENCODER_SIDE_LIMIT = {"jpg": 65_500, "webp": 16_383}   # libjpeg's JPEG_MAX_DIMENSION, libwebp's largest side


@dataclass(frozen=True)
class Resized:
    """The encoded image and its size, with the original's; or a failure: `error_kind` one of
    images.IMAGE_ERROR_KINDS, `error` img2dataset's words for it (or the exception's)."""
    data: bytes | None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    error_kind: str | None = None
    error: str | None = None


def _failed(kind: str, detail: str) -> Resized:
    return Resized(None, error_kind=kind, error=detail)


class Resizer:
    """Callable: encoded bytes -> Resized. One per worker, shared by its resize threads (it keeps
    no state between calls)."""

    def __init__(self, image_size: int, resize_mode: str, resize_only_if_bigger: bool, encode_format: str,
                 encode_quality: int, min_image_size: int = 0, max_image_area: float = float("inf"),
                 max_aspect_ratio: float = float("inf")):
        if resize_mode not in MODES:
            raise ValueError(f"resize mode: one of {', '.join(MODES)}, not {resize_mode!r}")
        if encode_format not in ENCODE_FLAGS:
            raise ValueError(f"encode format: one of {', '.join(ENCODE_FLAGS)}, not {encode_format!r}")
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.resize_only_if_bigger = resize_only_if_bigger
        self.extension = f".{encode_format}"
        self.encode_params = [int(ENCODE_FLAGS[encode_format]), int(encode_quality)]
        self.min_image_size = min_image_size
        self.max_image_area = max_image_area
        self.max_aspect_ratio = max_aspect_ratio
        # OpenCV's own thread pool costs CPU on pictures this small and saves no wall time: the
        # download runs several resize threads per worker instead (img2dataset sets the same).
        # Process-wide, as OpenCV's setting is.
        cv2.setNumThreads(1)

    def __call__(self, body: bytes) -> Resized:
        try:
            return self._resize(body)
        except Exception as err:  # noqa: BLE001 - OpenCV raises cv2.error on odd inputs: a counted drop
            return _failed("resize", str(err))

    def _resize(self, body: bytes) -> Resized:
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            return _failed("decode", "Image decoding error")
        if image.ndim == 3 and image.shape[-1] == 4:
            image = matted_on_white(image)
        original_height, original_width = image.shape[:2]
        if min(original_height, original_width) < self.min_image_size:
            return _failed("too-small", "image too small")
        if original_height * original_width > self.max_image_area:
            return _failed("too-many-pixels", "image area too large")
        if max(original_height, original_width) / min(original_height, original_width) > self.max_aspect_ratio:
            return _failed("aspect-ratio", "aspect ratio too large")

        size = self.image_size
        if self.resize_mode != "no":
            by_shorter = self.resize_mode in ("keep_ratio", "center_crop")
            side = min(original_height, original_width) if by_shorter else max(original_height, original_width)
            shrink = side > size
            if shrink or not self.resize_only_if_bigger:
                scaled = scaled_size(original_height, original_width, size / side)
                refused = self._too_large(scaled)
                if refused is not None:
                    return refused
                image = _resized(image, scaled, SHRINK if shrink else ENLARGE)
                if self.resize_mode == "center_crop":
                    image = _centre_square(image, size)
                elif self.resize_mode == "border":
                    image = _padded_square(image, size)
        height, width = image.shape[:2]
        ok, encoded = cv2.imencode(self.extension, image, params=self.encode_params)
        if not ok:
            return _failed("resize", f"OpenCV could not encode a {width}x{height} image as {self.extension[1:]}")
        return Resized(encoded.tobytes(), width, height, original_width, original_height)

    def _too_large(self, scaled: tuple[int, int]) -> Resized | None:
        """A failure when the image scaled to `scaled` (height, width) cannot be stored, found
        before the resize allocates it. keep_ratio and center_crop scale the SHORTER side to
        image_size, so a 1 x 40,000 line (within the pixel cap) would become 256 x 10,240,000:
        7.8 GB and seconds of Lanczos, which img2dataset spends before its encode fails (JPEG and
        WebP) or it stores the giant (PNG; center_crop keeps a square of it). Refused here:
        past the encoder's side limit (the outcome img2dataset reaches, no image), or with more
        pixels than the cap on the original (--max-pixels: a per-thread memory bound)."""
        height, width = scaled
        final = (self.image_size, self.image_size) if self.resize_mode in ("center_crop", "border") else scaled
        limit = ENCODER_SIDE_LIMIT.get(self.extension[1:])
        if height * width > self.max_image_area:
            return _failed("too-many-pixels", f"scaled to {width}x{height} it would have more than "
                           f"{self.max_image_area:,} pixels")
        if limit is not None and max(final) > limit:
            return _failed("resize", f"scaled to {final[1]}x{final[0]} it is over {self.extension[1:]}'s "
                           f"limit of {limit:,} pixels a side")
        return None


def _matte(alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """img2dataset's matting on white, its float64 arithmetic rounded: alpha (..., 1), colour (..., 3)."""
    return np.rint((alpha / 255 * colour + 255 - alpha).clip(min=0, max=255)).astype(np.uint8)


# Every (alpha, value) pair of 8-bit pixels matted once, by that same expression: a lookup gives
# the very bytes, 3x faster than the float64 arithmetic (5 against 16 ms for 800 x 600; a PNG
# with transparency costs img2dataset's resize ~4 ms an image in it).
_MATTE_8BIT = _matte(np.arange(256, dtype=np.uint8)[:, None], np.arange(256, dtype=np.uint8)[None, :]).ravel()


def matted_on_white(image: np.ndarray) -> np.ndarray:
    """A 4-channel decode (colour, then alpha) as 3 channels on white, as img2dataset mattes it."""
    alpha = image[:, :, 3:4]
    if image.dtype != np.uint8:   # a 16-bit PNG: its arithmetic as it is
        return _matte(alpha, image[..., :3])
    if alpha.min() == 255:   # opaque, as many RGBA PNGs are: 255 / 255 * v + 255 - 255 is v exactly
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return _MATTE_8BIT.take((alpha.astype(np.uint16) << 8) | image[..., :3])


def _resized(image: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """The image at `size` (height, width); the image itself when that is its size (as
    albumentations leaves it)."""
    if size == image.shape[:2]:
        return image
    return cv2.resize(image, size[::-1], interpolation=interpolation)


def _centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """The centre size x size of an image at least that large both ways."""
    height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


def _padded_square(image: np.ndarray, size: int) -> np.ndarray:
    """The image centred on a white square of at least `size`, the odd pixel at the bottom / right."""
    height, width = image.shape[:2]
    top = (size - height) // 2 if height < size else 0
    left = (size - width) // 2 if width < size else 0
    bottom = size - height - top if height < size else 0
    right = size - width - left if width < size else 0
    if not (top or bottom or left or right):
        return image
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=WHITE)
