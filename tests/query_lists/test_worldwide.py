"""MetaCLIP 2's per-language list rules: words in several scripts, bigram joining, the entry
filter, the caps, Open Multilingual Wordnet's tab files."""
from collections import Counter

from clipdata.query_lists import worldwide


def counted(text):
    unigrams, bigrams = Counter(), Counter()
    n = worldwide.count_ngrams(text, unigrams, bigrams)
    return n, unigrams, bigrams


def test_spaced_languages_split_on_spaces_and_punctuation():
    n, unigrams, bigrams = counted("Der rote Hund, der schläft. ¿Qué pasa?")
    assert n == 7
    assert unigrams == Counter({"Der": 1, "rote": 1, "Hund": 1, "der": 1, "schläft": 1, "Qué": 1, "pasa": 1})
    assert set(bigrams) == {("Der", "rote"), ("rote", "Hund"), ("der", "schläft"), ("Qué", "pasa")}


def test_cjk_and_thai_characters_are_words_of_their_own():
    n, unigrams, bigrams = counted("一只猫在桌子上。猫")
    assert n == 8 and unigrams["猫"] == 2
    assert ("桌", "子") in bigrams and ("上", "猫") not in bigrams      # "。" breaks the chain
    n, unigrams, _ = counted("แมวบนโต๊ะ")
    assert n == len("แมวบนโต๊ะ")
    n, unigrams, _ = counted("iPhone手机壳")
    assert list(unigrams) == ["iPhone", "手", "机", "壳"]


def test_bigrams_are_joined_without_a_space_in_no_space_languages():
    assert worldwide.bigram_entry("桌", "子", "zh") == "桌子"
    assert worldwide.bigram_entry("ภาษา", "ไทย", "th") == "ภาษาไทย"
    assert worldwide.bigram_entry("rote", "Hund", "de") == "rote Hund"
    assert worldwide.bigram_entry("廣", "東", "zh_yue") == "廣東"          # Chinese variants as zh


def test_the_entry_filter_and_the_caps():
    assert worldwide.entry_ok("Hund") and worldwide.entry_ok("x" * 256)
    assert not worldwide.entry_ok("") and not worldwide.entry_ok("x" * 257)
    assert not worldwide.entry_ok("!?") and not worldwide.entry_ok("。、") and not worldwide.entry_ok("¿")
    assert worldwide.unigram_cap(1_000_000) == 100_000 and worldwide.unigram_cap(10_000_000) == 251_465
    assert worldwide.title_cap(1000) == 760 and worldwide.title_cap(1_000_000) == 61_235
    assert worldwide.top(["a", "!!", "b", "c"], 2) == ["a", "b"]


def test_omw_lemmas_in_file_order_each_once(tmp_path):
    (tmp_path / "jpn").mkdir()
    (tmp_path / "jpn" / "wn-data-jpn.tab").write_text(
        "# Japanese Wordnet\tjpn\thttp://example\tCC BY\n"
        "02084071-n\tjpn:lemma\t犬\n"
        "02084071-n\tjpn:def\t0\tイヌ科の動物\n"
        "02121620-n\tjpn:lemma\t猫\n"
        "02121620-n\tjpn:lemma\tネコ\n"
        "02084071-n\tjpn:lemma\t犬\n"
        "03000000-n\tjpn:lemma\tホット_ドッグ\n"
        "broken line\n", encoding="utf-8")
    lemmas, stats = worldwide.omw_lemmas(str(tmp_path), "ja")
    assert lemmas == ["犬", "猫", "ネコ", "ホット ドッグ"]
    assert stats["files"] == 1 and stats["not_a_lemma"] == 1 and stats["malformed"] == 1
    assert worldwide.omw_lemmas(str(tmp_path), "de") == ([], {"files": 0})
    # Chinese has two OMW sources (cmn, qcn): both are read, in code order
    for code, lemma in (("cmn", "狗"), ("qcn", "貓")):
        (tmp_path / f"wn-data-{code}.tab").write_text(f"1-n\t{code}:lemma\t{lemma}\n", encoding="utf-8")
    assert worldwide.omw_lemmas(str(tmp_path), "zh")[0] == ["狗", "貓"]
