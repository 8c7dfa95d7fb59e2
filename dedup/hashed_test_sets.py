"""The test side of the contamination check: every test image's hash views and copy descriptors,
computed in parallel worker processes (the images listed and read by the foundation's
eval_sets.py).

    hashed = hash_test_set(load_test_set("cifar10", "data/cifar10_test"), views=("image", "mirror"))
    hashed.views[i]   # {"image": 0x8f3c..., "mirror": ...} for test_set.images[i], or None
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from clipdata.pipeline.foundation import failures
from clipdata.pipeline.foundation.eval_sets import ImageRef, TestSet

# Below this many images the views are hashed in the calling process: starting worker processes
# costs more than it saves.
POOL_THRESHOLD = 256


def decode(data: bytes):
    """Encoded bytes -> an RGB PIL image (transparency on white, as the shards store it)."""
    from clipdata.dedup import hashing

    return hashing.open_image(data)


@dataclass
class HashedTestSet:
    test_set: TestSet
    views: list[dict[str, int] | None]   # per image of test_set.images: view name -> 64-bit hash
    # per image: its copy descriptors (descriptor.TEST_VIEWS x DIM float32), None when unreadable
    # or not asked for
    descriptors: list | None = None
    # per image: {hash view name: its copy descriptor (DIM float16)}, the views of `views` that
    # are not the whole picture (descriptor.WHOLE_VIEWS: `descriptors` holds those)
    view_descriptors: list | None = None

    @property
    def readable(self) -> int:
        return sum(v is not None for v in self.views)


def _hash_chunk(refs: list[ImageRef], views: tuple[str, ...] | None, family: str, describe: bool = False
                ) -> list[tuple]:
    """(views dict, descriptors, {view: descriptor}, None) or (None, None, None, error) per
    reference (the descriptors None without `describe`): runs in a worker process (the
    descriptor network is loaded once per process)."""
    from clipdata.dedup import descriptor, hashing

    hash_view = hashing.hash_function(family)
    out, inputs, view_inputs = [], [], []
    for ref in refs:
        try:
            image = decode(ref.read())
            pictures = hashing.view_images(image, names=views)   # each view made once: hashed and described
            chosen = {name: hash_view(picture) for name, picture in pictures.items()}
            if describe:   # the windows' descriptors; the whole picture's are test_inputs'
                view_inputs.append([(name, descriptor.view_input(picture)) for name, picture in pictures.items()
                                    if name not in descriptor.WHOLE_VIEWS])
                inputs.append(descriptor.test_inputs(image))
            out.append(({k: int(h) for k, h in chosen.items()}, None))
        except ValueError as err:  # hashing.open_image: not an image
            out.append((None, str(err)))
        except Exception as err:  # noqa: BLE001 - any unreadable image is recorded, never fatal
            out.append((None, failures.describe(err)))
    if not describe:
        return [(v, None, None, e) for v, e in out]
    model = descriptor.shared()
    described = iter(model.describe_inputs(np.concatenate(inputs)).reshape(
        len(inputs), len(descriptor.TEST_VIEWS), -1) if inputs else [])
    windows = [x for xs in view_inputs for _, x in xs]
    per_view = iter(model.describe_inputs(np.stack(windows)).astype(np.float16) if windows else [])
    names = iter(view_inputs)
    results = []
    for v, e in out:
        if v is None:
            results.append((v, None, None, e))
        else:   # the window views in the order hashing.views gave them, each with its descriptor
            results.append((v, next(described), {name: next(per_view) for name, _ in next(names)}, e))
    return results


def hash_test_set(test_set: TestSet, views: Sequence[str] | None = None, family: str = "phash",
                  workers: int | None = None, chunk: int = 64, progress=None, describe: bool = False
                  ) -> HashedTestSet:
    """Hash every image's views (in `workers` processes), and with `describe` its copy descriptors
    (dedup/descriptor.py), of the picture and of each hash view; undecodable images go to
    `unreadable`. `progress(n)` is called as each
    chunk of n images is done."""
    from clipdata.dedup import hashing

    views = tuple(views) if views else None
    for name in views or ():
        if name not in hashing.VIEW_NAMES:  # fail once here, not once per image
            raise ValueError(f"unknown view {name!r}; known: {', '.join(hashing.VIEW_NAMES)}")
    refs = [image.ref for image in test_set.images]
    chunks = [refs[i:i + chunk] for i in range(0, len(refs), chunk)]
    workers = (os.cpu_count() or 1) if workers is None else workers
    progress = progress or (lambda n: None)
    results = []
    if workers <= 1 or len(refs) < POOL_THRESHOLD:
        for c in chunks:
            results += _hash_chunk(c, views, family, describe)
            progress(len(c))
    else:
        # spawn: the caller may hold threads (Beam, gRPC) that a fork would copy mid-lock.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            for part in pool.map(_hash_chunk, chunks, [views] * len(chunks), [family] * len(chunks),
                                 [describe] * len(chunks)):
                results += part
                progress(len(part))
    hashed, described, view_described = [], [], []
    for image, (image_views, descriptors, view_descriptors, error) in zip(test_set.images, results):
        if error is not None:
            test_set.unreadable.append({"id": image.id, "error": error})
        hashed.append(image_views)
        described.append(descriptors)
        view_described.append(view_descriptors)
    return HashedTestSet(test_set, hashed, described if describe else None, view_described if describe else None)
