"""The stored picture's content boxes (signature.content_boxes) against their plain definition:
the downloader's padding bars are symmetric flat lines of one colour at both ends of an axis."""
from __future__ import annotations

import numpy as np
import pytest

from clipdata.pipeline.foundation import signature

TOL = signature.BAR_TOLERANCE


def plain_content_boxes(arr: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Every line's spread and mean colour, the flat runs counted from each end, one by one."""
    h, w = arr.shape[:2]
    boxes = [(0, 0, w, h)]
    for axis in (0, 1):
        lines = [arr[i] if axis == 0 else arr[:, i] for i in range(arr.shape[axis])]
        spread = [int(line.max()) - int(line.min()) for line in lines]
        colour = [line.reshape(-1, 3).astype(np.float64).mean(axis=0) for line in lines]

        def run(order):
            first = order[0]
            if spread[first] > TOL:
                return 0
            count = 0
            for i in order:
                if spread[i] > TOL or np.abs(colour[i] - colour[first]).max() > TOL:
                    break
                count += 1
            return count

        n = len(lines)
        bar = min(run(range(n)), run(range(n - 1, -1, -1)))
        if bar >= 2 and np.abs(colour[0] - colour[-1]).max() <= TOL and n - 2 * bar >= 8:
            boxes.append((0, bar, w, h - bar) if axis == 0 else (bar, 0, w - bar, h))
    return boxes


def padded(rng, h, w, bars, noise, inner_flat):
    """A picture of size (h, w) with (top, bottom, left, right) bars of one colour around content."""
    top, bottom, left, right = bars
    arr = np.empty((h, w, 3), np.int16)
    # a bar is flat over all its values, channels included: grey, or a faint tint at most
    arr[:] = int(rng.integers(0, 256)) + rng.integers(-5, 6, 3) * (rng.random() < 0.3)
    inner = rng.integers(0, 256, (max(0, h - top - bottom), max(0, w - left - right), 3))
    if inner_flat:
        inner[:] = rng.integers(0, 256, 3)
    arr[top:top + inner.shape[0], left:left + inner.shape[1]] = inner
    arr += rng.integers(-noise, noise + 1, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_content_boxes_are_their_plain_definition(seed):
    rng = np.random.default_rng(seed)
    for _ in range(150):
        h, w = int(rng.integers(1, 120)), int(rng.integers(1, 120))
        top, left = int(rng.integers(0, h // 2 + 1)), int(rng.integers(0, w // 2 + 1))
        # mostly symmetric bars (the downloader's), sometimes not
        bottom = top if rng.random() < 0.7 else int(rng.integers(0, h // 2 + 1))
        right = left if rng.random() < 0.7 else int(rng.integers(0, w // 2 + 1))
        # noise around the tolerance: some bars are flat enough, some not
        arr = padded(rng, h, w, (top, bottom, left, right), int(rng.choice([0, 3, 6, 7, 9])), rng.random() < 0.3)
        if rng.random() < 0.4:
            # flat lines of another grey within a bar: the bar ends where its colour does
            axis = int(rng.integers(0, 2))
            n = arr.shape[axis]
            start = int(rng.integers(0, max(1, n // 3)))
            if rng.random() < 0.5:
                start = max(0, n - 5 - start)     # near the far end
            stripe = np.full(3, int(rng.integers(0, 256)), np.uint8) + rng.integers(0, 4, 3).astype(np.uint8)
            if axis == 0:
                arr[start:start + int(rng.integers(1, 6))] = stripe
            else:
                arr[:, start:start + int(rng.integers(1, 6))] = stripe
        assert signature.content_boxes(arr) == plain_content_boxes(arr), (h, w, top, bottom, left, right)


def test_a_view_into_a_larger_array_is_read_as_its_own_pixels():
    rng = np.random.default_rng(11)
    big = padded(rng, 120, 160, (20, 20, 30, 30), 3, False)
    for view in (big[10:110, 5:150], big[::2, ::2], np.asfortranarray(big), big[:, ::-1]):
        assert signature.content_boxes(view) == plain_content_boxes(np.ascontiguousarray(view))


def test_a_letterboxed_picture_has_its_content_box_and_a_photo_none():
    rng = np.random.default_rng(9)
    arr = padded(rng, 256, 256, (64, 64, 0, 0), 0, False)
    assert signature.content_boxes(arr) == [(0, 0, 256, 256), (0, 64, 256, 192)]
    assert signature.content_boxes(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) == [(0, 0, 256, 256)]
