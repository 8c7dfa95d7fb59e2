"""`bench/languages.py`: how often the caption language identifier (pipeline/curate/language.py,
fastText's lid.176 as MetaCLIP 2 ran it) names the right language, on real text in several scripts;
and (`matcher`) the worldwide matcher's speed per language beside MetaCLIP 2's own approach.

    .venv/bin/python bench/languages.py                  # 500 strings per language
    .venv/bin/python bench/languages.py --per-language 2000 --locale-dir /usr/share/locale
    .venv/bin/python bench/languages.py matcher          # 200k entries, 50k captions per language

`matcher`: per language (English, German, Chinese), a generated list of --entries entries (words
and bigrams of a Zipf vocabulary; for Chinese, character 1- to 4-grams) and --captions captions,
matched by match_worldwide.WorldwideMatcher and by MetaCLIP 2's substr_matching.py approach (one
pyahocorasick automaton over the padded entries, iterated over each spaced caption), same answers
checked; captions/s on one core each, and the ratio.

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


def _vocabulary(language: str, rng: random.Random, n: int) -> list[str]:
    if language == "zh":
        chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3500)]
        return chars
    letters = "abcdefghijklmnoprstuvwyz" if language == "en" else "abcdefghiklmnoprstuwzäöüß"
    return sorted({"".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(n)})


_CUMULATIVE: dict[int, list[float]] = {}


def _zipf(rng: random.Random, items: list[str], k: int) -> list[str]:
    if len(items) not in _CUMULATIVE:   # the cumulative weights once per vocabulary size
        total, cumulative = 0.0, []
        for r in range(len(items)):
            total += 1 / (r + 1)
            cumulative.append(total)
        _CUMULATIVE[len(items)] = cumulative
    return rng.choices(items, cum_weights=_CUMULATIVE[len(items)], k=k)


def world_matcher_bench(entries_n: int, captions_n: int, seed: int) -> int:
    import ahocorasick

    from clipdata.pipeline.curate.match import spacing
    from clipdata.pipeline.curate.match_worldwide import WorldwideMatcher, padded

    print(f"{'language':<10}{'entries':>10}{'captions':>10}{'ours/s':>12}{'MetaCLIP 2/s':>14}{'ratio':>8}  same answers")
    for language in ("en", "de", "zh"):
        rng = random.Random(f"{seed}:{language}")
        vocab = _vocabulary(language, rng, 60_000)
        if language == "zh":
            entries = sorted({"".join(_zipf(rng, vocab, rng.randint(1, 4))) for _ in range(entries_n * 2)})[:entries_n]
            captions = ["".join(_zipf(rng, vocab, rng.randint(8, 30))) + rng.choice(["", "。", "，图片"])
                        for _ in range(captions_n)]
        else:
            words = set(vocab[: entries_n // 2])
            pairs = {f"{a} {b}" for a, b in zip(_zipf(rng, vocab, entries_n), _zipf(rng, vocab, entries_n))}
            entries = sorted(words | set(list(pairs)[: entries_n - len(words)]))
            captions = [" ".join(_zipf(rng, vocab, rng.randint(3, 14))) + rng.choice(["", ".", ", png"])
                        for _ in range(captions_n)]
        ours = WorldwideMatcher(entries)
        start = time.process_time()
        offsets, ids = ours.match_batch(captions)
        ours_s = time.process_time() - start
        automaton = ahocorasick.Automaton()
        for i, entry in enumerate(entries):
            automaton.add_word(padded(entry), i)
        automaton.make_automaton()
        start = time.process_time()
        theirs = [sorted({i for _, i in automaton.iter(spacing(c))}) for c in captions]
        theirs_s = time.process_time() - start
        same = all(ids[offsets[k]:offsets[k + 1]].tolist() == theirs[k] for k in range(len(captions)))
        matched = sum(bool(t) for t in theirs)
        print(f"{language:<10}{len(entries):>10,}{len(captions):>10,}{len(captions) / ours_s:>12,.0f}"
              f"{len(captions) / theirs_s:>14,.0f}{theirs_s / ours_s:>7.2f}x  {same} ({matched:,} captions matched)")
    return 0


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "matcher":
        parser = argparse.ArgumentParser(prog="bench/languages.py matcher")
        parser.add_argument("--entries", type=int, default=200_000)
        parser.add_argument("--captions", type=int, default=50_000)
        parser.add_argument("--seed", type=int, default=0)
        args = parser.parse_args(argv[1:])
        return world_matcher_bench(args.entries, args.captions, args.seed)
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
