"""`bench/languages.py`: how often the caption language identifier (pipeline/curate/language.py,
fastText's lid.176 as MetaCLIP 2 ran it) names the right language, on real text in several scripts.

    .venv/bin/python bench/languages.py                  # 500 strings per language
    .venv/bin/python bench/languages.py --per-language 2000 --locale-dir /usr/share/locale

The text: the translations of program messages that Debian installs on this machine
(/usr/share/locale/<lang>/LC_MESSAGES/*.mo, read with Python's gettext): real sentences and short
labels written by people, in each language's script; short strings are like alt texts. Placeholders
(%s, {0}), accelerator marks (_File, &Open) and markup are removed; strings with fewer than 3
letters are left out; a string seen in more than one language (untranslated English, names) is left
out too. Printed: per language, the share identified as that language (all, strings under 30
characters, 30 and over), the most common wrong labels, and the rate in captions per second.
"""
from __future__ import annotations

import argparse
import collections
import gettext
import glob
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# locale folder -> the language lid.176 should name (its labels are ISO 639-1 codes)
LOCALES = {"de": "de", "fr": "fr", "es": "es", "ru": "ru", "pl": "pl", "tr": "tr", "vi": "vi", "el": "el",
           "he": "he", "ar": "ar", "fa": "fa", "hi": "hi", "th": "th", "ko": "ko", "ja": "ja",
           "zh_CN": "zh", "zh_TW": "zh", "uk": "uk", "id": "id", "bn": "bn"}

_NOISE = re.compile(r"%(\([^)]*\))?[-+ #0-9.]*[a-zA-Z]|\{[^}]*\}|<[^>]*>|[_&](?=\w)|\\n|\s+")


def clean(text: str) -> str:
    return " ".join(_NOISE.sub(" ", text).split())


def letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def strings_of(locale_dir: str, folder: str) -> set[str]:
    out = set()
    for path in glob.glob(os.path.join(locale_dir, folder, "LC_MESSAGES", "*.mo")):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except Exception:  # noqa: BLE001 - a damaged or unusual .mo: skip it
            continue
        for key, value in catalog.items():
            msgid = key[0] if isinstance(key, tuple) else key
            if not msgid or not isinstance(value, str):
                continue   # the header entry
            text = clean(value)
            if letters(text) >= 3 and text != clean(msgid):
                out.add(text)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locale-dir", default="/usr/share/locale")
    parser.add_argument("--per-language", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from clipdata.pipeline.curate.language import identify

    found = {folder: strings_of(args.locale_dir, folder) for folder in LOCALES}
    seen = collections.Counter(s for strings in found.values() for s in strings)
    rng = random.Random(args.seed)
    samples = {}
    for folder, strings in found.items():
        unique = sorted(s for s in strings if seen[s] == 1)
        if len(unique) >= 50:
            samples[folder] = rng.sample(unique, min(args.per_language, len(unique)))
    if not samples:
        print(f"no translations found under {args.locale_dir}")
        return 1
    identify(["warm up"])
    total = sum(len(s) for s in samples.values())
    print(f"{total:,} real strings in {len(samples)} languages from {args.locale_dir}\n")
    print(f"{'locale':<8}{'expect':<8}{'strings':>8}{'right':>8}{'< 30 ch':>9}{'>= 30 ch':>10}  most common wrong labels")
    right_all = n_all = 0
    seconds = 0.0
    for folder, strings in samples.items():
        expected = LOCALES[folder]
        start = time.process_time()
        labels = identify(strings)
        seconds += time.process_time() - start
        ok = [label == expected for label in labels]
        short = [k for s, k in zip(strings, ok) if len(s) < 30]
        long = [k for s, k in zip(strings, ok) if len(s) >= 30]
        wrong = collections.Counter(label or "(none)" for label, k in zip(labels, ok) if not k).most_common(3)

        def share(values):
            return f"{100 * sum(values) / len(values):.1f}%" if values else "-"

        print(f"{folder:<8}{expected:<8}{len(strings):>8,}{share(ok):>8}{share(short):>9}{share(long):>10}  "
              + ", ".join(f"{label} {n}" for label, n in wrong))
        right_all += sum(ok)
        n_all += len(ok)
    print(f"\nall: {100 * right_all / n_all:.1f}% of {n_all:,} identified as their language; "
          f"{n_all / seconds:,.0f} strings/s on one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
