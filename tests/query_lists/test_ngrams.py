import math
import random
from collections import Counter

from clipdata.query_lists import ngrams


def test_punctuation_splits_words_and_breaks_bigrams():
    assert list(ngrams.segments("New York, NY is big.")) == [["New", "York"], ["NY", "is", "big"]]
    assert list(ngrams.segments("a dog-friendly café")) == [["a", "dog"], ["friendly", "café"]]
    assert list(ngrams.segments("don't  stop\n\tnow")) == [["don"], ["t", "stop", "now"]]
    assert list(ngrams.segments("「東京」、日本")) == [["東京"], ["日本"]]
    assert list(ngrams.segments(" ... ")) == []


def test_counts_are_exact_and_case_sensitive():
    words, pairs = Counter(), Counter()
    n = ngrams.count_ngrams("The cat sat. the cat, The cat", words, pairs)
    assert n == 7
    assert words == Counter({"The": 2, "cat": 3, "sat": 1, "the": 1})
    assert pairs == Counter({("The", "cat"): 2, ("cat", "sat"): 1, ("the", "cat"): 1})


def test_pmi_is_nltk_bits_with_total_words():
    # log2(n(ab) * N / (n(a) * n(b))) = log2(2 * 64 / (4 * 2)) = 4 bits
    assert ngrams.pmi(2, 4, 2, 64) == 4.0
    assert math.isclose(ngrams.pmi(1, 1, 1, 2**30), 30.0)


def test_word_bound_never_excludes_a_qualifying_bigram():
    rng = random.Random(0)
    text = " ".join(rng.choice("abcdefghijklmnopqrstuvwxyz"[: rng.randint(2, 26)]) for _ in range(3000))
    words, pairs = Counter(), Counter()
    total = ngrams.count_ngrams(text, words, pairs)
    for min_pmi in (0.5, 1.0, 2.0, 4.0):
        bound = ngrams.max_word_count_for_pmi(min_pmi, total)
        for (a, b), n in pairs.items():
            if ngrams.pmi(n, words[a], words[b], total) >= min_pmi:
                assert words[a] <= bound and words[b] <= bound
