"""Test sets made from the synthetic web: labelled ImageNet-style folders for zero-shot evaluation
and the contamination check, with planted copies (transformed) and lookalikes, and `test_set.json`
the ground truth."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
from typing import Sequence

from PIL import Image, ImageEnhance, ImageOps

from clipdata.pipeline.demo.synthetic_web.drawing import (COLOURS, MAX_ROTATION, SHAPES, ImageSpec, class_folder,
                                                          class_text, draw_image, encode, make_background,
                                                          make_classes, make_spec, spec_from_dict)
from clipdata.pipeline.foundation.imaging import to_rgb

# ---------------------------------------------------------------------------------------------
# Test sets: labelled folders for zero-shot eval and the contamination check.

TRANSFORMS = ("jpeg", "resize", "crop10", "mirror", "brightness")


def transform(image: Image.Image, name: str, rng: random.Random) -> tuple[Image.Image, dict]:
    """A near-duplicate of an RGB image and the parameters used: how test sets come to hold
    copies of training images (re-encoded, rescaled, cropped, flipped, re-exposed)."""
    if name == "jpeg":
        quality = rng.randint(30, 70)
        out = Image.open(io.BytesIO(encode(image, "jpeg", quality))).convert("RGB")
        return out, {"name": name, "quality": quality}
    if name == "resize":
        scale = round(rng.uniform(0.5, 0.8), 3)
        size = (max(32, round(image.width * scale)), max(32, round(image.height * scale)))
        return image.resize(size, Image.BICUBIC), {"name": name, "scale": scale}
    if name == "crop10":
        # 5-10% of each dimension cut away, split at random between the two sides.
        fw, fh = rng.uniform(0.05, 0.10), rng.uniform(0.05, 0.10)
        cut_w, cut_h = round(image.width * fw), round(image.height * fh)
        left, top = rng.randint(0, cut_w), rng.randint(0, cut_h)
        box = (left, top, image.width - (cut_w - left), image.height - (cut_h - top))
        return image.crop(box), {"name": name, "box": list(box)}
    if name == "mirror":
        return ImageOps.mirror(image), {"name": name}
    if name == "brightness":
        factor = round(rng.choice([rng.uniform(0.75, 0.9), rng.uniform(1.1, 1.25)]), 3)
        return ImageEnhance.Brightness(image).enhance(factor), {"name": name, "factor": factor}
    raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")


# The backgrounds of the test images that are new, and of the lookalikes: a texture of their own
# (blurred blobs of colour with grain, as every photograph has). The web's pictures are one shape,
# sometimes two, on a plain, graded or grainy light background, ~40 per class; on such a background
# a new drawing of a class is, up to a crop and a rescale, one of them, which a copy detector
# rightly reports (grain does not tell them apart: a copy upscaled from a thumbnail has lost its
# grain too, so the verifier blurs the sharper picture to the other's sharpness). Measured with the
# demo's held-out set: "noise" and "photo" backgrounds gave 1-2 of 150 flagged, each a ring on grain
# against a web ring on white.
NEW_TEST_BACKGROUNDS = ("photo",)


def _plantable(web: dict) -> list[dict]:
    """Web images a test image may be copied from: valid, small, captioned with their class, so
    they reach the training shards."""
    return [e for e in web["images"] if e["fault"] is None and e["caption_kind"] == "class"
            and max(e["width"], e["height"]) <= 512]


def build_test_set(folder: str, n_images: int, seed: int, planted_from: dict | None = None,
                   planted_count: int = 0, transforms: Sequence[str] = TRANSFORMS,
                   lookalike_count: int = 0, shapes: Sequence[str] | None = None,
                   colours: Sequence[str] | None = None) -> dict:
    """An ImageNet-style labelled folder `folder/<class folder>/<id>.png`, balanced over the
    classes, with `classes.json` (folder name -> class text) and the manifest `test_set.json`,
    which is also returned:

        {"folder", "seed", "classes": {"red_circle": "red circle", ...},
         "images": [{"id", "path", "class", "class_folder", "shape", "colour",
                     "kind": "new" | "planted" | "lookalike",
                     "source": web image id or None,       # planted from / looks like
                     "transform": {"name", ...params} or None, "width", "height"}]}

    Every image is new except `planted_count` transformed copies of web images (`planted_from`,
    the web manifest; transforms taken in turn) and `lookalike_count` lookalikes: a web image's
    class, background and colour redrawn with the shape moved elsewhere, which a duplicate
    detector should *not* report. Classes default to those of planted_from, else all.
    """
    if (planted_count or lookalike_count) and planted_from is None:
        raise ValueError("planted_count and lookalike_count need planted_from (a web manifest)")
    for name in transforms:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
    if planted_count and not transforms:
        raise ValueError("planted_count needs at least one transform")
    if planted_count + lookalike_count > n_images:
        raise ValueError(f"{planted_count} planted + {lookalike_count} lookalikes > {n_images} images")
    if shapes is None:
        shapes = planted_from["shapes"] if planted_from else SHAPES
    if colours is None:
        colours = planted_from["colours"] if planted_from else tuple(COLOURS)
    classes = make_classes(shapes, colours)
    rng = random.Random(f"test:{seed}")

    # Balanced slots; the planted and lookalike slots take a web image of the slot's class.
    slots = [classes[i % len(classes)] for i in range(n_images)]
    rng.shuffle(slots)
    kinds = ["planted"] * planted_count + ["lookalike"] * lookalike_count
    kinds += ["new"] * (n_images - len(kinds))
    rng.shuffle(kinds)
    candidates: dict[tuple, list[dict]] = {}
    if planted_from is not None:
        for e in _plantable(planted_from):
            candidates.setdefault((e["shape"], e["colour"]), []).append(e)
        for group in candidates.values():
            rng.shuffle(group)

    os.makedirs(folder, exist_ok=True)
    folders = {class_folder(s, c): class_text(s, c) for s, c in classes}
    for name in folders:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    entries = []
    planted_seen = 0
    for i, (kind, (shape, colour)) in enumerate(zip(kinds, slots)):
        irng = random.Random(f"test:{seed}:{i}")
        source, params = None, None
        if kind == "new":
            # A texture of its own (grain or photo-like blobs), as every photograph has: one
            # shape of one colour on a plain or graded background is the same picture as some
            # web image up to position and scale, which a copy detector rightly reports (the
            # demo's held-out set showed 17% "overlap" that way).
            spec = make_spec(shape, colour, irng, irng.randint(96, 256), irng.randint(96, 256),
                             distractor_classes=classes, backgrounds=NEW_TEST_BACKGROUNDS)
            image = draw_image(spec)
        else:
            source = _take_source(candidates, (shape, colour), irng)
            shape, colour = source["shape"], source["colour"]
            if kind == "planted":
                with Image.open(os.path.join(planted_from["folder"], source["path"])) as im:
                    original = to_rgb(im)
                image, params = transform(original, transforms[planted_seen % len(transforms)], irng)
                planted_seen += 1
            else:
                image = to_rgb(draw_image(lookalike_spec(spec_from_dict(source["spec"]), irng,
                                                         background=NEW_TEST_BACKGROUNDS)))
        name = class_folder(shape, colour)
        key = f"{i:06d}"
        path = f"{name}/{key}.png"
        image.save(os.path.join(folder, path), "PNG", compress_level=1)
        entries.append({"id": key, "path": path, "class": class_text(shape, colour),
                        "class_folder": name, "shape": shape, "colour": colour, "kind": kind,
                        "source": source["id"] if source else None, "transform": params,
                        "width": image.width, "height": image.height})

    test_set = {"folder": os.path.abspath(folder), "seed": seed, "classes": folders,
                "images": entries}
    with open(os.path.join(folder, "classes.json"), "w") as f:
        json.dump(folders, f, indent=1)
    with open(os.path.join(folder, "test_set.json"), "w") as f:
        json.dump(test_set, f, indent=1)
    return test_set


def _take_source(candidates: dict, cls: tuple, rng: random.Random) -> dict:
    """An unused web image of the class, else of any class that has one left."""
    if candidates.get(cls):
        return candidates[cls].pop()
    left = sorted(c for c, group in candidates.items() if group)
    if not left:
        raise ValueError("the web has too few valid, class-captioned images to plant from; "
                         "build a larger web or plant fewer")
    return candidates[rng.choice(left)].pop()


def lookalike_spec(spec: ImageSpec, rng: random.Random, background: Sequence[str] | None = None) -> ImageSpec:
    """The same class, colour, background and size, the shape smaller, turned and moved as far
    as it will go, no distractor, a fresh texture: the same kind of picture drawn again.
    `background`: kinds to draw a new background from instead (see NEW_TEST_BACKGROUNDS)."""
    m = min(spec.width, spec.height)
    radius = min(spec.radius, int(0.3 * m))
    margin = radius + radius // 12 + 2
    best = None
    for _ in range(20):
        cx = rng.randint(margin, max(margin, spec.width - margin))
        cy = rng.randint(margin, max(margin, spec.height - margin))
        distance = math.hypot(cx - spec.cx, cy - spec.cy)
        if best is None or distance > best[0]:
            best = (distance, cx, cy)
    limit = MAX_ROTATION[spec.shape]
    rotation = round(rng.uniform(-limit, limit), 1)
    new_background = make_background(rng.choice(list(background)), rng) if background else spec.background
    return dataclasses.replace(spec, cx=best[1], cy=best[2], radius=radius, rotation=rotation,
                               distractor=None, background=new_background, seed=rng.getrandbits(32))
