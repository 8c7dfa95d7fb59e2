"""Word and bigram counts over plain text, and the PMI that selects bigrams.

Tokenisation follows MetaCLIP's rebuild of CLIP's list (metaclip/metadata/build_ngram.py): split
on whitespace, and every punctuation character is a token of its own that is not counted and
breaks the bigram chain. So "dog-friendly" gives the words "dog" and "friendly" but no bigram
"dog friendly", and "New York, NY" gives the bigram "New York" only. Case is kept: the matcher is
case-sensitive by default, so "Apple" and "apple" are different entries.

Counting a text does only C-level work per word (re.split, str.split, Counter.update), which is
what lets one core keep up with bz2 decompression of the dump.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Iterator

# ASCII punctuation plus the CJK and typographic marks MetaCLIP adds to it.
PUNCTUATION = string.punctuation + "，。、；：？¿！“”‘’（）【】《》〈〉「」『』～—"
_PUNCTUATION_SPLIT = re.compile("[" + re.escape(PUNCTUATION) + "]")


def segments(text: str) -> Iterator[list[str]]:
    """The runs of words between punctuation marks: bigrams never cross a segment boundary."""
    for segment in _PUNCTUATION_SPLIT.split(text):
        words = segment.split()
        if words:
            yield words


def count_ngrams(text: str, unigrams: Counter, bigrams: Counter, split=None) -> int:
    """Add the words of `text` to `unigrams` and its adjacent word pairs (as tuples) to `bigrams`.

    Returns the number of words counted. `split` gives the runs of words (default: `segments`,
    English's; worldwide.segments for MetaCLIP 2's other languages).
    """
    n_words = 0
    for words in (split or segments)(text):
        unigrams.update(words)
        n_words += len(words)
        if len(words) > 1:
            bigrams.update(zip(words, words[1:]))
    return n_words


def pmi(pair_count: int, first_count: int, second_count: int, total_words: int) -> float:
    """Pointwise mutual information in bits, as NLTK's BigramAssocMeasures.pmi computes it.

    MetaCLIP scores bigrams with NLTK, where PMI = log2(n(ab) * N / (n(a) * n(b))) and N is the
    total number of words (not of bigrams); CLIP's threshold of 30 is in these units.
    """
    return math.log2(pair_count * total_words) - math.log2(first_count * second_count)


def max_word_count_for_pmi(min_pmi: float, total_words: int) -> float:
    """No word seen more often than this can be part of a bigram with PMI >= min_pmi.

    From n(ab) <= n(b): PMI >= p implies n(a) <= N * n(ab) / (n(b) * 2**p) <= N / 2**p, and the
    same for b. The Beam job uses it to join bigrams only with the words that can qualify.
    """
    return total_words / 2.0**min_pmi
