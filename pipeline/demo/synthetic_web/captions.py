"""The synthetic web's alt texts, written the way the web writes them: clip-art phrasing, file
names, empty alts, HTML entities, mojibake."""
from __future__ import annotations

import random
from typing import Sequence

from clipdata.pipeline.demo.synthetic_web.drawing import ImageSpec

# ---------------------------------------------------------------------------------------------
# Captions: alt text as the web writes it.

CLASS_TEMPLATES = (
    "{a} {colour} {shape} on a {background} background",
    "{Colour} {shape} sticker, vector clip art",
    "photo of {a} {colour} {shape} | free download",
    "{colour} {shape} icon png",
    "{colour} {shape}",
    "{A} {colour} {shape}.",
    "simple {colour} {shape} shape isolated on {background}",
    "{colour} {shape} clipart",
    "flat {colour} {shape} symbol - vector illustration",
    "{Colour} {shape} emoji",
    "cute {colour} {shape} drawing for kids",
    "the {shape} is {colour}",
    "{colour} {shape} logo design template",
    "Stock image: {colour} {shape} #{number}",
    "{Colour} {Shape} Wall Decal",
    "a picture of {a} {colour} {shape}",
)
WITH_DISTRACTOR_TEMPLATES = (
    "{a} {colour} {shape} and a small {d_colour} {d_shape}",
    "{colour} {shape} with a little {d_colour} {d_shape}",
)
SHAPE_ONLY_TEMPLATES = ("{shape} icon", "geometric {shape} shape", "{Shape} clip art free",
                        "outline of a {shape}")
# Names cameras, scanners and editors give files: no colour or shape word, no number 0..99 as a
# separate word (query lists hold "0".."99").
NO_MATCH_TEMPLATES = ("IMG_{n4}", "DSC{n5}.JPG", "untitled", "untitled-{n1}", "P{n7}",
                      "image-{hex}", "{hex}.png", "scan0{n3}")
EMPTY_CAPTIONS = ("", " ", "   ", "\n", "\t ", "&nbsp;")
FILLERS = ("free", "hd", "wallpaper", "vector", "download", "best", "new", "design", "art", "graphic")
BACKGROUND_WORDS = {"plain": "plain", "gradient": "gradient", "noise": "textured", "photo": "colorful",
                    "transparent": "transparent"}

# What each caption kind is; the first three name the image's class.
CAPTION_KINDS = {
    "class": "colour and shape words in a clip-art style template",
    "html-entities": "a class caption with HTML entities (&amp; &quot; &#8211;)",
    "mojibake": "a class caption with UTF-8 read as cp1252 (cafÃ©), which ftfy repairs",
    "shape-only": "names the shape but not the colour",
    "no-match": "a file name (IMG_2034, untitled): no query-list entry",
    "empty": "empty or whitespace-only (or &nbsp;)",
    "vocabulary-only": "vocabulary words only: matches queries, says nothing of the image",
    "foreign": "colour and shape in another language (\"foreign:de\", ...; languages.py), for the worldwide demo",
}
CLASS_CAPTION_KINDS = ("class", "html-entities", "mojibake")
CAPTION_FRACTIONS = {"html-entities": 0.03, "mojibake": 0.03, "shape-only": 0.05,
                     "no-match": 0.05, "empty": 0.03, "vocabulary-only": 0.04}

_HTML_NOISE = ("{caption} &amp; free vector", "&quot;{caption}&quot;", "{caption} &#8211; clip art",
               "{caption} &#x2605; icon", "{caption} &lt;3")
_MOJIBAKE_NOISE = ("{caption} – café design", "{caption}™", "{caption} © 2019", "naïve {caption}",
                   "{caption} • déjà vu")


def _words(rng: random.Random, vocabulary: Sequence[str] | None, k: int) -> list[str]:
    pool = vocabulary if vocabulary else FILLERS
    return [rng.choice(pool) for _ in range(k)]


def _class_caption(spec: ImageSpec, rng: random.Random, vocabulary) -> str:
    d = spec.distractor
    if d and rng.random() < 0.4:
        template = rng.choice(WITH_DISTRACTOR_TEMPLATES)
    else:
        template = rng.choice(CLASS_TEMPLATES)
    bg = spec.background
    background = "white" if bg["kind"] == "plain" and bg["colours"][0] == [255, 255, 255] \
        else BACKGROUND_WORDS[bg["kind"]]
    article = "an" if spec.colour[0] in "aeiou" else "a"
    caption = template.format(
        colour=spec.colour, Colour=spec.colour.capitalize(), shape=spec.shape,
        Shape=spec.shape.capitalize(), background=background, a=article, A=article.capitalize(),
        number=rng.randint(1000, 99999), d_colour=d["colour"] if d else "",
        d_shape=d["shape"] if d else "")
    # Filler words around the description, as alt text stuffed for search engines does.
    if rng.random() < (0.3 if vocabulary else 0.15):
        words = " ".join(_words(rng, vocabulary, rng.randint(1, 4)))
        caption = f"{caption} {words}" if rng.random() < 0.6 else f"{words}: {caption}"
    if rng.random() < 0.03:
        caption = caption.upper()
    return caption


def make_caption(spec: ImageSpec, kind: str, rng: random.Random,
                 vocabulary: Sequence[str] | None = None) -> str:
    """Alt text of the given kind (CAPTION_KINDS) for an image."""
    if kind == "class":
        return _class_caption(spec, rng, vocabulary)
    if kind.startswith("foreign:"):
        from clipdata.pipeline.demo.synthetic_web import languages

        return languages.caption(spec.shape, spec.colour, kind.split(":", 1)[1], rng)
    if kind == "html-entities":
        return rng.choice(_HTML_NOISE).format(caption=_class_caption(spec, rng, vocabulary))
    if kind == "mojibake":
        clean = rng.choice(_MOJIBAKE_NOISE).format(caption=_class_caption(spec, rng, vocabulary))
        return clean.encode("utf-8").decode("cp1252")
    if kind == "shape-only":
        return rng.choice(SHAPE_ONLY_TEMPLATES).format(shape=spec.shape, Shape=spec.shape.capitalize())
    if kind == "no-match":
        return rng.choice(NO_MATCH_TEMPLATES).format(
            n1=rng.randint(100, 999), n3=rng.randint(100, 999), n4=rng.randint(1000, 9999),
            n5=rng.randint(10000, 99999), n7=rng.randint(1000000, 9999999),
            hex=f"{rng.getrandbits(32):08x}")
    if kind == "empty":
        return rng.choice(EMPTY_CAPTIONS)
    if kind == "vocabulary-only":
        return " ".join(_words(rng, vocabulary, rng.randint(2, 6)))
    raise ValueError(f"unknown caption kind {kind!r}")
