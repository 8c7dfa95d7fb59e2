"""WordNet head lemmas: hand-written data files, bad lines, and the real WordNet 3.0 database."""
import os
import re

import pytest

from clipdata.query_lists import wordnet
from clipdata.query_lists.wordnet import WordNetError

HEADER = (
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  \n"
)

FILES = {
    "data.noun": [
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived",
        "00002137 03 n 02 Abstraction 0 abstract_entity 0 010 | a general concept",
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 023 | a member of the genus Canis",
        # w_cnt is hexadecimal: 0a = ten words
        "09044862 15 n 0a United_States 0 United_States_of_America 0 America 0 the_States 0 US 0 "
        "U.S. 0 USA 0 U.S.A. 0 United_States_Government 0 Uncle_Sam 0 000 | North American republic",
        "06302866 10 n 01 Ph.D. 0 000 | a doctorate",
        "03149810 06 n 01 .22_caliber 0 000 | a gun",
    ],
    "data.verb": [
        "00001740 29 v 04 breathe 0 take_a_breath 0 respire 0 suspire 3 021 | draw air",
        "01168468 34 v 01 dog 0 000 | go after with the intent to catch",  # same head as a noun
    ],
    "data.adj": [
        "00001740 00 a 01 able(a) 0 005 = 05200169 n 0000 | (usually followed by `to')",
        "01044240 00 s 01 asleep(p) 0 000 | in a state of sleep",
        "01695969 00 s 02 elect(ip) 0 chosen 0 000 | elected but not yet installed",
        "00013160 00 a 01 New 0 000 | not of long duration",  # "new" also comes as an adverb
    ],
    "data.adv": [
        "00019131 02 r 01 new 0 000 | very recently",
        "00028236 02 r 01 i.e. 0 000 | that is to say",
    ],
}


def write_folder(folder, files=FILES, header=HEADER):
    for name, lines in files.items():
        with open(folder / name, "w", encoding="utf-8", newline="") as f:
            f.write(header + "".join(line + "  \n" for line in lines))
    return str(folder)


def test_head_lemmas_of_hand_written_files(tmp_path):
    folder = write_folder(tmp_path)
    assert wordnet.head_lemmas(folder, truncate_at_dot=False) == [
        "entity", "abstraction", "dog", "united states", "ph.d.", ".22 caliber",  # noun
        "breathe",  # verb ("dog" already there)
        "able", "asleep", "elect", "new",  # adj: markers removed, lower-cased
        "i.e.",  # adv ("new" already there)
    ]


def test_metaclip_dot_truncation_is_the_default(tmp_path):
    folder = write_folder(tmp_path)
    entries, stats = wordnet.head_lemmas_and_stats(folder)
    # ph.d. -> "ph", .22_caliber -> "" (dropped), i.e. -> "i"
    assert entries == ["entity", "abstraction", "dog", "united states", "ph", "breathe", "able",
                       "asleep", "elect", "new", "i"]
    assert stats["cut_at_dot"] == 3
    assert stats["dropped_empty"] == 1


def test_stats(tmp_path):
    entries, stats = wordnet.head_lemmas_and_stats(write_folder(tmp_path), truncate_at_dot=False)
    assert stats["synsets"] == {"data.noun": 6, "data.verb": 2, "data.adj": 4, "data.adv": 2}
    assert stats["synsets_total"] == 14
    assert stats["markers_removed"] == 3
    assert stats["distinct_heads"] == len(entries) == 12


def test_crlf_files_read_the_same(tmp_path):
    folder = write_folder(tmp_path)
    expected = wordnet.head_lemmas(folder)
    for name in wordnet.DATA_FILES:
        path = tmp_path / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert wordnet.head_lemmas(folder) == expected


@pytest.mark.parametrize(
    "bad_line, what",
    [
        ("00002137 03 n", "expected `offset lex_filenum ss_type"),
        ("0000x137 03 n 01 thing 0 000 | x", "offset '0000x137'"),
        ("00002137 03 q 01 thing 0 000 | x", "ss_type 'q'"),
        ("00002137 03 n 0g thing 0 000 | x", "w_cnt '0g'"),
        ("00002137 03 n 01 thing z 000 | x", "lex_id 'z'"),
        ("00002137 03 n 00 thing 0 000 | x", "no words"),
        ("00002137 03 v 01 thing 0 000 | x", "synset type 'v' does not belong in data.noun"),
        ("00002137 03 n 01 (a) 0 000 | x", "first word '(a)' is empty"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, what):
    files = dict(FILES, **{"data.noun": FILES["data.noun"][:2] + [bad_line]})
    folder = write_folder(tmp_path, files)
    with pytest.raises(WordNetError) as err:
        wordnet.head_lemmas(folder)
    # two header lines, then the synset lines: the bad one is line 5
    assert "data.noun line 5: " in str(err.value)
    assert what in str(err.value)


def test_non_utf8_line(tmp_path):
    folder = write_folder(tmp_path)
    with open(tmp_path / "data.verb", "ab") as f:
        f.write(b"00002137 03 v 01 caf\xe9 0 000 | x\n")
    with pytest.raises(WordNetError, match=r"data.verb line 5: not UTF-8"):
        wordnet.head_lemmas(folder)


def test_missing_folder_says_what_to_install(tmp_path):
    with pytest.raises(WordNetError) as err:
        wordnet.head_lemmas(str(tmp_path / "nowhere"))
    message = str(err.value)
    assert "does not exist" in message
    assert "data.noun, data.verb, data.adj, data.adv" in message
    assert "apt-get install wordnet-base" in message and "--wordnet" in message


def test_missing_data_file_is_named(tmp_path):
    folder = write_folder(tmp_path)
    os.remove(tmp_path / "data.adv")
    with pytest.raises(WordNetError, match=r"lacks data.adv .*apt-get install wordnet-base"):
        wordnet.head_lemmas(folder)


def test_header_only_file_is_refused(tmp_path):
    files = dict(FILES, **{"data.adv": []})
    folder = write_folder(tmp_path, files)
    with pytest.raises(WordNetError, match=r"data.adv: no synset lines"):
        wordnet.head_lemmas(folder)


REAL = "/usr/share/wordnet"


@pytest.mark.skipif(not os.path.exists(os.path.join(REAL, "data.noun")),
                    reason="WordNet 3.0 not installed (apt-get install wordnet-base; CI installs it)")
def test_real_wordnet_against_independent_count():
    entries, stats = wordnet.head_lemmas_and_stats(REAL, truncate_at_dot=False)
    # Independently: the fifth space-separated field of every line that starts with a digit,
    # any trailing "(...)" removed, lower-cased, "_" -> " ".
    word = re.compile(r"^\d{8} \d\d [nvasr] [0-9a-f]{2} (\S+?)(?:\([a-z]+\))? ", re.MULTILINE)
    expected = set()
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        with open(os.path.join(REAL, name), encoding="utf-8") as f:
            expected.update(w.lower().replace("_", " ") for w in word.findall(f.read()))
    assert len(entries) == len(set(entries)) == len(expected)
    assert set(entries) == expected
    assert not any("_" in e for e in entries)
    # WordNet 3.0: 117,659 synsets; NLTK names them with 86,571 distinct heads (86,555 after
    # MetaCLIP's cut at the first dot, the empty string among them).
    assert stats["synsets_total"] == 117659
    assert len(entries) == 86571
    metaclip = wordnet.head_lemmas(REAL)   # the default: MetaCLIP's names
    assert len(metaclip) == 86554
    # MetaCLIP's NLTK code (`name[:name.find('.')]`) has these and not their whole forms
    assert {"st", "mr", "et al", "lake st", "ph"} <= set(metaclip)
    assert not {"st. petersburg", "ph.d.", ".22 caliber", ""} & set(metaclip)
    assert {"st. petersburg", "ph.d.", ".22 caliber"} <= set(entries)
