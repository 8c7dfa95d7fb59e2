"""MetaCLIP 2's matching rule: hand-written captions in several scripts, the rule's own reading
of each (written out by hand below), and the matcher against the rule written out (reference)."""
import random

import pytest

from clipdata.pipeline.curate.match_worldwide import WorldwideMatcher, padded, reference_matches
from clipdata.pipeline.foundation.scripts import is_cjk_like


def test_which_ends_are_padded():
    assert padded("dog") == " dog "
    assert padded("猫") == "猫"                    # CJK ideograph both ends: a raw substring
    assert padded("แมว") == "แมว"                  # Thai
    assert padded("iPhone手机") == " iPhone手机"     # Latin start padded, CJK end not
    assert padded("手机壳case") == "手机壳case "
    assert padded("カメラ") == " カメラ "            # katakana is not in MetaCLIP 2's ranges
    assert padded("(cat)") == "(cat)"              # ASCII punctuation counts as CJK-like
    assert padded("《红楼梦》") == "《红楼梦》"
    assert is_cjk_like("。") and is_cjk_like("—") and not is_cjk_like("é") and not is_cjk_like("가")


ENTRIES = ["猫", "桌子", "一只", "dog", "red dog", "iPhone手机", "แมว", "โต๊ะ", "Hund", "カメラ", "قطة",
           "ཁྱི", "(cat)", "U.S.", "猫"]          # the last repeats the first: both ids match

CASES = [
    ("一只猫在桌子上", [0, 1, 2, 14]),
    ("a red dog, 猫", [0, 3, 4, 14]),              # "猫" raw: found after the space too
    ("我的iPhone手机壳", []),                        # "iPhone手机" needs a space (or punctuation) before "i"
    ("新 iPhone手机壳", [5]),
    ("แมวบนโต๊ะ", [6, 7]),                          # Thai: raw substrings, no spaces needed
    ("Der Hund läuft", [8]),
    ("Hundefutter", []),                             # German: padded, whole words only
    ("新しいカメラです", []),                         # katakana entry padded: not inside a sentence
    ("カメラ 新品", [9]),
    ("قطة على الطاولة", [10]),
    ("ཁྱི་ནི", [11]),                                  # Tibetan
    ("a (cat) here", [12]),
    ("made in the U.S. today", []),                  # spacing splits "U.S." apart, as MetaCLIP 2's does
    ("猫，桌子。一只", [0, 1, 2, 14]),              # next to CJK punctuation: raw entries match
    ("（iPhone手机）", []),                            # "（" is not a space: the Latin start is padded
    ("【dog】 red dog!", [3, 4]),                    # "dog" not inside 【】 but before "!" (spaced out)
    ("【dog】", []),                                  # spacing leaves 【】 alone: no space around "dog"
    ("", []),
    (None, []),
]


@pytest.mark.parametrize("caption,expected", CASES)
def test_each_caption_matches_what_the_rule_says(caption, expected):
    matcher = WorldwideMatcher(ENTRIES)
    assert matcher.match(caption) == expected
    assert reference_matches(ENTRIES, caption or "") == expected


def test_a_batch_gives_the_same_as_one_caption_at_a_time():
    matcher = WorldwideMatcher(ENTRIES)
    captions = [c for c, _ in CASES]
    offsets, ids = matcher.match_batch(captions)
    assert [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(captions))] == [e for _, e in CASES]


def test_random_captions_in_mixed_scripts_agree_with_the_rule_written_out():
    rng = random.Random(0)
    pieces = ["猫", "桌子", "上", "一只", "dog", "red", " ", " ", ",", ".", "iPhone", "手机", "แมว", "โต๊ะ",
              "Hund", "カメラ", "(", "cat", ")", "U", "S", "!", "。", "、"]
    matcher = WorldwideMatcher(ENTRIES)
    captions = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    offsets, ids = matcher.match_batch(captions)
    for i, caption in enumerate(captions):
        assert ids[offsets[i]:offsets[i + 1]].tolist() == reference_matches(ENTRIES, caption), caption
    assert sum(len(reference_matches(ENTRIES, c)) > 0 for c in captions) > 1000   # the check is not vacuous


def test_lowercase_applies_to_entries_and_captions():
    matcher = WorldwideMatcher(["Hund", "iPhone手机"], lowercase=True)
    assert matcher.match("DER HUND") == [0]
    assert matcher.match("neu IPHONE手机") == [1]


def test_an_english_only_list_needs_no_automaton():
    matcher = WorldwideMatcher(["dog", "red dog"])
    assert matcher.automaton is None and matcher.raw_entries == 0
    assert matcher.match("a red dog") == [0, 1]


def test_a_mixed_batch_gives_each_caption_its_own_languages_global_ids():
    from clipdata.pipeline.curate.match_worldwide import WorldwideLists

    lists = WorldwideLists({"en": ["dog", "red dog"], "de": ["Hund", "rot"], "zh": ["猫", "桌子"]})
    captions = ["一只猫在桌子上睡觉", "a red dog sleeps on the sofa in the sun", "le chat dort sur le canapé",
                "Der Hund ist rot und schläft im Garten", "小猫在桌子上", "a dog is playing in the garden"]
    offsets, ids, languages = lists.match_languages(captions)
    assert languages == ["zh", "en", "other", "de", "zh", "en"]
    per_caption = [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(captions))]
    assert per_caption == [[4, 5], [0, 1], [], [2, 3], [4, 5], [0]]   # de starts at 2, zh at 4
    assert lists.match_batch(captions)[1].tolist() == ids.tolist()
