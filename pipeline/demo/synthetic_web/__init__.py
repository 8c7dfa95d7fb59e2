"""A synthetic web of labelled images, served on 127.0.0.1: the embedded default every stage runs on.

The images are coloured shapes ("red circle", "blue star", ...) drawn with PIL at random places,
sizes and rotations on varied backgrounds, so a tiny CLIP model trained on a few thousand of them
for a few hundred CPU steps reaches zero-shot accuracy far above chance. Their alt texts are
written the way the web writes them (clip-art phrasing, file names, empty alts, HTML entities,
mojibake), and the pool carries the faults a downloader meets (dead links, HTML pages, truncated
files, duplicates, bad URLs, opt-outs, rate limits). Everything is deterministic given a seed, and
the manifests (`web.json`, `test_set.json`) are the ground truth the demo and the tests check.

    web = build_web("demo/web", n_images=3000, seed=0, vocabulary=words)   # files + web.json
    with serve("demo/web") as base_url:                 # http://127.0.0.1:PORT, a real server
        write_pool(web, base_url, "demo/pool.parquet")  # url, caption: what curate reads
        ...                                             # curate, download while it runs
    build_test_set("demo/test", 480, seed=1, planted_from=web, planted_count=24,
                   lookalike_count=24)                  # ImageNet-style folders + test_set.json

Modules: drawing.py (classes and pictures), captions.py (alt texts), languages.py (alt texts and
Wikipedia articles in German, Chinese, Japanese, Thai, Arabic), web.py (files, faults,
manifest, pool), server.py (the HTTP server), testsets.py (labelled test sets). The names below are
the package's API; import them from here.

Layout of a web folder:
    img/000123.jpg|png|webp   one image per manifest id (faults included, when they have a file)
    web.json                  the manifest: every pool row with its class, caption and fault
    routes.json               per-path behaviour the server applies (content type, headers, 429)
"""
from clipdata.pipeline.demo.synthetic_web.drawing import (COLOURS, SHAPES, ImageSpec, class_folder, draw_image,
                                                          make_classes, make_spec)
from clipdata.pipeline.demo.synthetic_web.languages import LANGUAGES
from clipdata.pipeline.demo.synthetic_web.server import serve
from clipdata.pipeline.demo.synthetic_web.testsets import TRANSFORMS, build_test_set, lookalike_spec, transform
from clipdata.pipeline.demo.synthetic_web.web import build_web, load_web, pool_url, write_pool

__all__ = ["COLOURS", "SHAPES", "LANGUAGES", "ImageSpec", "class_folder", "draw_image", "make_classes", "make_spec", "serve",
           "TRANSFORMS", "build_test_set", "lookalike_spec", "transform", "build_web", "load_web", "pool_url",
           "write_pool"]
