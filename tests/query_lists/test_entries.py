"""Query lists: text and JSON round trips, and a clear error for each kind of bad list."""
import bz2
import gzip
import json
import os
import stat

import pytest

from clipdata.query_lists import entries
from clipdata.query_lists.entries import QueryListError, load_entries, save_entries

ENTRIES = [
    "dog",
    "new york",
    "hot  dog",  # internal double space: kept, entries are matched literally
    " leading and trailing ",
    "café",
    "東京",
    "naïve\u2028line separator",  # not a line break in our format: only \n is
    "tab\there",
    "0",
]


@pytest.mark.parametrize("name", ["queries.txt", "queries", "queries.json", "queries.txt.gz",
                                  "queries.json.gz", "queries.txt.bz2"])
def test_round_trip(tmp_path, name):
    path = str(tmp_path / name)
    save_entries(path, ENTRIES)
    assert load_entries(path) == ENTRIES


def test_text_format_on_disk(tmp_path):
    path = tmp_path / "queries.txt"
    save_entries(str(path), ["a", "café"])
    assert path.read_bytes() == "a\ncafé\n".encode("utf-8")
    # the mode of any new file (umask applied), not the 0600 of a temporary-file helper
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_json_list_saved_as_text_loads_the_same(tmp_path):
    json_path = tmp_path / "metadata.json"
    json_path.write_text(json.dumps(ENTRIES), encoding="utf-8")  # MetaCLIP writes ASCII escapes
    loaded = load_entries(str(json_path))
    save_entries(str(tmp_path / "queries.txt"), loaded)
    assert load_entries(str(tmp_path / "queries.txt")) == loaded == ENTRIES


def test_crlf_bom_and_last_line_without_newline(tmp_path):
    path = tmp_path / "queries.txt"
    path.write_bytes(b"\xef\xbb\xbfdog\r\nnew york\r\n  cat\t\r\nlast")
    assert load_entries(str(path)) == ["dog", "new york", "  cat\t", "last"]


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out" / "queries.txt"
    save_entries(str(path), ["a"])
    save_entries(str(path), ["b", "c"])
    assert load_entries(str(path)) == ["b", "c"]
    assert os.listdir(tmp_path / "out") == ["queries.txt"]


def test_refused_save_writes_nothing(tmp_path):
    path = tmp_path / "queries.txt"
    save_entries(str(path), ["kept"])
    with pytest.raises(QueryListError, match=r"index 1: entry 'two\\nlines' contains a line break"):
        save_entries(str(path), ["ok", "two\nlines"])
    assert load_entries(str(path)) == ["kept"]
    assert os.listdir(tmp_path) == ["queries.txt"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (["a", ""], r"index 1: empty entry"),
        (["a", "b\r"], r"index 1: .* contains a line break"),
        (["a", 3], r"index 1: entry is int 3, not a string"),
        (["a", "b", "a"], r"index 2: entry 'a' repeats index 0"),
    ],
)
def test_save_refuses_bad_entries(tmp_path, bad, message):
    with pytest.raises(QueryListError, match=message):
        save_entries(str(tmp_path / "queries.txt"), bad)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"dog\n\ncat\n", r"queries.txt line 2: empty entry"),
        (b"dog\ncat\n\n", r"queries.txt line 3: empty entry"),
        (b"dog\r\ncat\rfish\n", r"queries.txt line 2: .* contains a line break"),
        (b"dog\ncaf\xe9\n", r"queries.txt line 2: not UTF-8 at byte 3 of the line \(byte 7 of the file\)"),
        (b"dog\ncat\ndog\n", r"queries.txt line 3: entry 'dog' repeats line 1"),
    ],
)
def test_load_refuses_bad_text(tmp_path, content, message):
    path = tmp_path / "queries.txt"
    path.write_bytes(content)
    with pytest.raises(QueryListError, match=message):
        load_entries(str(path))


def test_empty_and_duplicate_entries_allowed_on_request(tmp_path):
    path = tmp_path / "queries.txt"
    path.write_bytes(b"dog\n\ndog\n")
    assert load_entries(str(path), allow_empty=True, allow_duplicates=True) == ["dog", "", "dog"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"dog": 1}', r"expected a JSON list of strings, got a dict"),
        ('["dog", ["cat"]]', r"index 1: entry is list \['cat'\], not a string"),
        ('["dog", null]', r"index 1: entry is NoneType None, not a string"),
        ('["dog", ""]', r"index 1: empty entry"),
        ('["dog", "a\\nb"]', r"index 1: .* contains a line break"),
        ('["dog",\n "cat",]', r"line 2 column 8: not JSON"),
    ],
)
def test_load_refuses_bad_json(tmp_path, content, message):
    path = tmp_path / "metadata.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(QueryListError, match=message):
        load_entries(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(QueryListError, match=r"cannot read query list .*nowhere.txt"):
        load_entries(str(tmp_path / "nowhere.txt"))


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_cut_compressed_list_is_an_error_not_a_shorter_list(tmp_path, suffix, compress):
    whole = compress("".join(f"entry {i}\n" for i in range(20000)).encode())
    path = tmp_path / f"queries.txt{suffix}"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(QueryListError, match=r"ends inside a compressed stream"):
        load_entries(str(path))


def test_iter_chunks_reads_concatenated_streams(tmp_path):
    path = tmp_path / "two.gz"
    path.write_bytes(gzip.compress(b"a\n") + gzip.compress(b"") + gzip.compress(b"b\n"))
    for chunk_size in (1, 5, 1 << 20):
        assert b"".join(entries.iter_chunks(str(path), chunk_size)) == b"a\nb\n"


def test_a_worldwide_manifest_is_told_from_a_list_and_its_paths_resolved(tmp_path):
    (tmp_path / "de.txt").write_text("Hund\n")
    (tmp_path / "list.json").write_text(json.dumps(["dog", "cat"]))
    (tmp_path / "manifest.json").write_text(json.dumps({"languages": {"de": "de.txt", "en": str(tmp_path / "list.json")}}))
    assert not entries.is_manifest(str(tmp_path / "list.json"))
    assert not entries.is_manifest(str(tmp_path / "de.txt"))
    assert entries.is_manifest(str(tmp_path / "manifest.json"))
    lists = entries.load_manifest(str(tmp_path / "manifest.json"))
    assert list(lists) == ["de", "en"]
    assert entries.load_entries(lists["de"]) == ["Hund"] and entries.load_entries(lists["en"]) == ["dog", "cat"]


@pytest.mark.parametrize("languages,message", [
    ({}, "a manifest needs"),
    ({"German": "de.txt"}, "is not a language code"),
    ({"de": "nowhere.txt"}, "does not exist"),
])
def test_a_bad_manifest_says_what_is_wrong(tmp_path, languages, message):
    (tmp_path / "de.txt").write_text("Hund\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"languages": languages}))
    with pytest.raises(entries.QueryListError, match=message):
        entries.load_manifest(str(tmp_path / "manifest.json"))
