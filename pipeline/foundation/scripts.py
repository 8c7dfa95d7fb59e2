"""Writing systems, as MetaCLIP 2 tells them apart (facebookresearch/MetaCLIP,
`metaclip/curation/substr_matching.py` and `metaclip/metadata/build_ngram.py`): which characters are
"CJK-like" (a word of their own, matched as a raw substring, never padded with spaces), which are
punctuation, and which Wikipedia languages are written without spaces between words. Shared by
the query lists (how a language's text is split into words) and curation (how an entry matches).

CJK-like: a character in one of MetaCLIP 2's ranges (CJK ideographs and their extensions,
compatibility ideographs, radicals and description characters; Thai, Lao, Burmese, Khmer, Tibetan)
or punctuation (ASCII's, and the 25 CJK marks MetaCLIP 2's matcher lists). Kept exactly, gaps
included: Japanese kana (U+3040-30FF) and Hangul are not CJK-like in MetaCLIP 2.
"""
from __future__ import annotations

import string

# MetaCLIP 2's `additional_punctuation` in substr_matching.py (its metadata builders add "¿").
CJK_PUNCTUATION = frozenset("\uff0c\u3002\u3001\uff1b\uff1a\uff1f\uff01\u201c\u201d\u2018\u2019\uff08\uff09"
                            "\u3010\u3011\u300a\u300b\u3008\u3009\u300c\u300d\u300e\u300f\uff5e\u2014")
PUNCTUATION = frozenset(string.punctuation) | CJK_PUNCTUATION

# (first, last) code points, inclusive: MetaCLIP 2's ranges, in its order.
CJK_LIKE_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF),
    (0x2FF0, 0x2FFF),
    (0x0E00, 0x0E7F),   # Thai
    (0x0E80, 0x0EFF),   # Lao
    (0x1000, 0x109F),   # Burmese
    (0x1780, 0x17FF),   # Khmer
    (0x0F00, 0x0FFF),   # Tibetan
)

# Wikipedia languages written without spaces between words (MetaCLIP 2's `no_space_languages` of
# its metadata builders; zh_classical and zh_yue are merged into zh here, as its lists are):
# their bigrams are joined without a space.
NO_SPACE_LANGUAGES = frozenset({"bo", "dz", "ja", "km", "lo", "my", "ryu", "th", "zh"})


def is_cjk_like(char: str) -> bool:
    if char in PUNCTUATION:
        return True
    point = ord(char)
    return any(first <= point <= last for first, last in CJK_LIKE_RANGES)


def is_punctuation(text: str) -> bool:
    """Whether every character of `text` is punctuation (MetaCLIP 2 drops such entries)."""
    return all(char in PUNCTUATION for char in text)
