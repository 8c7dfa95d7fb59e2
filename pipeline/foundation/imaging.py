"""Turning any decoded picture into the 8-bit RGB every stage works on: one implementation for the
downloader's hashes, the contamination check, the synthetic web and the trainer's tests."""
from __future__ import annotations

import numpy as np
from PIL import Image


def to_rgb(image: Image.Image) -> Image.Image:
    """The picture as 8-bit RGB, its pixels loaded: transparency matted on white (as img2dataset
    stores images), palette, grey+alpha, CMYK, 1-bit, 16- and 32-bit grey and float images
    converted; an RGB picture is returned as it is (no copy on the hashing path)."""
    mode = image.mode
    if mode == "RGB":
        image.load()   # its pixels read now: the file it came from may be closed next
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # PIL's own conversion clips 16-bit values at 255 (an almost white picture); scale instead.
        values = np.asarray(image, dtype=np.uint32 if mode != "I" else np.int64)
        top = 65535 if mode != "I" or values.max(initial=0) > 255 else 255
        grey = (np.clip(values, 0, top) * 255 // top).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.rint(values * 255 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in image.info) or (mode in ("L", "RGB") and "transparency" in image.info)
    if has_alpha:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
