"""The synthetic web itself: its image files, the faults a downloader meets (dead links, HTML pages,
truncated files, duplicates, bad URLs, opt-outs, rate limits), the manifest (`web.json`) and the
pool (url, caption) that `clipdata curate` reads."""
from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import random
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from clipdata.pipeline.demo.synthetic_web.captions import CAPTION_FRACTIONS, make_caption
from clipdata.pipeline.demo.synthetic_web.drawing import (COLOURS, EXTENSIONS, SHAPES, class_text, draw_image, encode,
                                                          image_size, make_classes, make_spec)

# ---------------------------------------------------------------------------------------------
# The web: image files, faults, the manifest.

# Pool rows added on top of the n_images good ones, at fault_fraction; each kind at least once.
FAULT_KINDS = {
    "dead-link": "404 Not Found",
    "html": "a .jpg URL answered 200 with an HTML page (text/html)",
    "truncated": "a JPEG cut in half",
    "random-bytes": "random bytes named .jpg",
    "empty-file": "a zero-byte .jpg",
    "duplicate": "the same (url, caption) as another row: exact dedup drops it",
    "ftp-url": "an ftp:// URL",
    "data-url": "a data: URL holding a tiny PNG",
    "malformed-url": "not a usable http URL (no host, bad port, unclosed bracket, space, ...)",
    "opt-out": "a valid image served with X-Robots-Tag: noai",
    "retry-after": "a valid image whose first GET is answered 429 with Retry-After: 1",
}
# Faults whose file is a valid image; a downloader should end with the image (retry-after,
# duplicate) or skip it on purpose (opt-out).
VALID_IMAGE_FAULTS = ("duplicate", "opt-out", "retry-after")
_MALFORMED = ("http://", "http:///img/{key}.jpg", "http://[127.0.0.1/img/{key}.jpg",
              "htp:/127.0.0.1/img/{key}.jpg", "img/{key}.jpg", "http://127.0.0.1:99999/img/{key}.jpg",
              "http://127.0.0.1/img/ {key}.jpg")
FORMAT_FRACTIONS = {"png": 0.28, "webp": 0.12}  # the rest JPEG
LARGE_FRACTION = 0.005
TRANSPARENT_FRACTION = 0.5  # of PNG and WebP images


def _quota(n: int, fractions: dict[str, float], rest: str, rng: random.Random) -> list[str]:
    """n labels holding round(f * n) of each (at least one when n allows), the rest `rest`,
    shuffled: exact proportions, so small webs still hold every kind."""
    labels = []
    for label, fraction in fractions.items():
        if fraction > 0:
            labels += [label] * max(1, round(fraction * n))
    labels = labels[:n] + [rest] * max(0, n - len(labels))
    rng.shuffle(labels)
    return labels


def build_web(folder: str, n_images: int, seed: int, vocabulary: Sequence[str] | None = None,
              fault_fraction: float = 0.05, shapes: Sequence[str] = SHAPES,
              colours: Sequence[str] = tuple(COLOURS),
              fault_kinds: Sequence[str] = tuple(FAULT_KINDS), workers: int = 1,
              languages: Sequence[str] = (), foreign_fraction: float = 0.2) -> dict:
    """Write n_images good images (balanced over the classes) plus fault rows under `folder`,
    and the manifest `folder/web.json`, which is also returned:

        {"folder", "seed", "classes": ["red circle", ...], "shapes", "colours",
         "n_images", "n_faults", "images": [entry, ...]}       # entries in pool row order

    An entry: id, key ("000123"), url (a path such as "/img/000123.jpg" that write_pool joins to
    the server's base URL; faults with odd URLs hold them whole), path (file relative to folder,
    or None), class, shape, colour, caption, caption_kind, fault (None or a FAULT_KINDS key),
    format, width, height, mode, spec (the ImageSpec as a dict), duplicate_of (for duplicates).

    `workers` > 1 draws in that many processes; the files and manifest are the same either way,
    since every image is drawn from its own seed. With `languages` (languages.LANGUAGES), a
    `foreign_fraction` of the images get their alt text in one of them (caption_kind "foreign:de").
    """
    for kind in fault_kinds:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    classes = make_classes(shapes, colours)
    os.makedirs(os.path.join(folder, "img"), exist_ok=True)
    rng = random.Random(f"web:{seed}")

    # Plans fixed up front, so each image's own rng (seeded by its id) is all it needs.
    class_plan = [classes[i % len(classes)] for i in range(n_images)]
    rng.shuffle(class_plan)
    formats = _quota(n_images, FORMAT_FRACTIONS, "jpeg", rng)
    sizes = _quota(n_images, {"large": LARGE_FRACTION}, "small", rng)
    caption_fractions = dict(CAPTION_FRACTIONS)
    if not vocabulary:
        caption_fractions.pop("vocabulary-only")
    if languages:
        caption_fractions["foreign"] = foreign_fraction
    caption_plan = _quota(n_images, caption_fractions, "class", rng)
    caption_plan = [f"foreign:{languages[i % len(languages)]}" if kind == "foreign" else kind
                    for i, kind in enumerate(caption_plan)]

    jobs = []
    for i in range(n_images):
        shape, colour = class_plan[i]
        large = sizes[i] == "large"
        fmt = "jpeg" if large and formats[i] == "webp" else formats[i]  # large WebP encodes slowly
        jobs.append((i, f"web:{seed}:{i}", shape, colour, fmt, large, caption_plan[i]))
    if workers > 1:
        # Contiguous chunks, so the vocabulary travels to the workers a few times, not per image.
        size = -(-len(jobs) // (4 * workers))
        chunks = [jobs[k:k + size] for k in range(0, len(jobs), size)]
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            drawn = pool.map(_draw_images, *zip(*[(folder, c, vocabulary, classes) for c in chunks]))
            entries = [entry for chunk in drawn for entry in chunk]
    else:
        entries = _draw_images(folder, jobs, vocabulary, classes)

    n_faults = max(len(fault_kinds), round(fault_fraction * n_images)) if fault_kinds else 0
    for j in range(n_faults):
        kind = fault_kinds[j % len(fault_kinds)]
        i = n_images + j
        entries.append(_fault_entry(folder, i, kind, j // len(fault_kinds), f"web:{seed}:{i}",
                                    entries[:n_images], classes, vocabulary))

    rng.shuffle(entries)  # faults spread through the pool, as on the web
    web = {"folder": os.path.abspath(folder), "seed": seed,
           "classes": [class_text(s, c) for s, c in classes], "shapes": list(shapes),
           "colours": list(colours), "n_images": n_images, "n_faults": n_faults,
           "images": entries}
    with open(os.path.join(folder, "routes.json"), "w") as f:
        json.dump(_routes(entries), f, indent=1, sort_keys=True)
    with open(os.path.join(folder, "web.json"), "w") as f:
        json.dump(web, f, separators=(",", ":"))
    return web


def _draw_images(folder, jobs, vocabulary, classes) -> list[dict]:
    return [_image_entry(folder, *job, vocabulary, classes) for job in jobs]


def _image_entry(folder, i, seed_text, shape, colour, fmt, large, caption_kind, vocabulary,
                 classes) -> dict:
    rng = random.Random(seed_text)
    width, height = image_size(rng, large)
    transparent = fmt in ("png", "webp") and rng.random() < TRANSPARENT_FRACTION
    spec = make_spec(shape, colour, rng, width, height, transparent, distractor_classes=classes)
    image = draw_image(spec)
    quality = rng.randint(60, 95)
    key = f"{i:06d}"
    path = f"img/{key}.{EXTENSIONS[fmt]}"
    with open(os.path.join(folder, path), "wb") as f:
        f.write(encode(image, fmt, quality))
    return {"id": i, "key": key, "url": "/" + path, "path": path,
            "class": class_text(shape, colour), "shape": shape, "colour": colour,
            "caption": make_caption(spec, caption_kind, rng, vocabulary),
            "caption_kind": caption_kind, "fault": None, "format": fmt, "width": width,
            "height": height, "mode": image.mode, "spec": dict(vars(spec)), "duplicate_of": None}


def _fault_entry(folder, i, kind, occurrence, seed_text, good, classes, vocabulary) -> dict:
    """The `occurrence`-th fault of its kind, for pool row id i."""
    rng = random.Random(seed_text)
    key = f"{i:06d}"
    if kind == "duplicate":
        source = rng.choice(good)
        return dict(source, id=i, key=key, fault=kind, duplicate_of=source["id"])
    shape, colour = rng.choice(classes)
    if kind in ("truncated", "opt-out", "retry-after"):
        fmt = "jpeg"
        entry = _image_entry(folder, i, seed_text + ":image", shape, colour, fmt, False,
                             "class", vocabulary, classes)
        entry["fault"] = kind
        if kind == "truncated":
            full = os.path.join(folder, entry["path"])
            with open(full, "rb") as f:
                data = f.read()
            with open(full, "wb") as f:
                f.write(data[: len(data) // 2])
        return entry
    # The rest have no image behind them; the caption still names a class, so curation keeps
    # them and the failure shows where it belongs (download, or the URL check).
    spec = make_spec(shape, colour, rng, 128, 128)
    entry = {"id": i, "key": key, "url": None, "path": None, "class": class_text(shape, colour),
             "shape": shape, "colour": colour, "caption": make_caption(spec, "class", rng, vocabulary),
             "caption_kind": "class", "fault": kind, "format": None, "width": None, "height": None,
             "mode": None, "spec": None, "duplicate_of": None}
    if kind == "dead-link":
        entry["url"] = f"/img/{key}.jpg"  # no such file
    elif kind in ("html", "random-bytes", "empty-file"):
        path = f"img/{key}.jpg"
        body = {"html": _html_page(entry["caption"]).encode(),
                "random-bytes": rng.randbytes(rng.randint(200, 5000)),
                "empty-file": b""}[kind]
        with open(os.path.join(folder, path), "wb") as f:
            f.write(body)
        entry.update(url="/" + path, path=path)
    elif kind == "ftp-url":
        entry["url"] = f"ftp://127.0.0.1/img/{key}.jpg"
    elif kind == "data-url":
        tiny = encode(Image.new("RGB", (4, 4), COLOURS[colour]), "png")
        entry["url"] = "data:image/png;base64," + base64.b64encode(tiny).decode()
    elif kind == "malformed-url":
        entry["url"] = _MALFORMED[occurrence % len(_MALFORMED)].format(key=key)  # each in turn
    return entry


def _html_page(caption: str) -> str:
    # What a hotlink-protected image URL often answers: a page about the image, not the image.
    return ("<!DOCTYPE html>\n<html><head><title>Image viewer</title></head>\n<body><h1>"
            f"{caption.replace('<', '&lt;')}</h1><p>Click to view full size.</p></body></html>\n")


def _routes(entries: list[dict]) -> dict:
    """Per-path behaviour for the server, from the faults that need more than a file."""
    routes = {}
    for e in entries:
        if e["fault"] == "html":
            routes[e["url"]] = {"content_type": "text/html; charset=utf-8"}
        elif e["fault"] == "opt-out":
            routes[e["url"]] = {"headers": {"X-Robots-Tag": "noai, noimageai"}}
        elif e["fault"] == "retry-after":
            routes[e["url"]] = {"first_status": 429, "headers_first": {"Retry-After": "1"}}
    return routes


def load_web(folder: str) -> dict:
    with open(os.path.join(folder, "web.json")) as f:
        return json.load(f)


def pool_url(entry: dict, base_url: str) -> str:
    """The pool URL of a manifest entry: paths joined to the server, odd URLs kept whole."""
    url = entry["url"]
    return base_url.rstrip("/") + url if url.startswith("/") else url


def write_pool(web: dict, base_url: str, path: str) -> pa.Table:
    """The candidate pool `path` (parquet: url, caption), one row per manifest entry, in order,
    with URLs pointing at the server now running at base_url ("http://127.0.0.1:PORT")."""
    table = pa.table({"url": pa.array([pool_url(e, base_url) for e in web["images"]], pa.string()),
                      "caption": pa.array([e["caption"] for e in web["images"]], pa.string())})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pq.write_table(table, path)
    return table
