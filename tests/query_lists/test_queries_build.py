"""`clipdata queries build` end to end on sources written at test time in the real formats.

The corpus is small enough to count by hand: after markup stripping, the two articles read
"Red fox runs. Red fox sleeps." and "Blue whale sings. Red fox runs."; the redirect and the talk
page must not count. So N = 12 words: Red 3, fox 3, runs 2, sleeps/Blue/whale/sings 1, and
PMI(Blue whale) = PMI(whale sings) = log2(1 * 12 / (1 * 1)) = log2 12, PMI(Red fox) = log2(3 * 12 / 9) = 2.
"""
import gzip
import json
import math
import os
import re

import pytest

from clipdata.pipeline import cli
from clipdata.pipeline.foundation.words import size as size_words
from clipdata.query_lists import build, entries, synthetic

PAGES = [
    dict(title="Red fox", ns=0, page_id=1, redirect=False,
         text="'''Red fox''' runs. [[Red fox|Red fox]] sleeps.<ref>cite this source</ref>"
              "{{Infobox animal|name=Whale whale}}\n[[Category:Animals]]"),
    dict(title="Blue whale", ns=0, page_id=2, redirect=False, text="Blue whale sings. [[Red fox]] runs."),
    dict(title="Fox", ns=0, page_id=3, redirect=True, text="#REDIRECT [[Red fox]] red red red"),
    dict(title="Talk:Red fox", ns=1, page_id=4, redirect=False, text="Red fox red fox red fox"),
]

PAGEVIEW_FILES = {
    "pageviews-20220101-000000.gz": [
        b"en Red_fox 60 0", b"en Red_fox 20 0", b"de Rotfuchs 100 0", b"en Talk:Red_fox 500 0",
        b"en Blue_whale 80 0", b"en garbage", b"en Broken xx 0",
    ],
    "pageviews-20220101-010000.gz": [b"en Red_fox 55 0", b"en \xff\xfe 90 0"],
}

SYNSETS = [
    dict(pos="n", words=["dog", "domestic dog"], gloss="a dog"),
    dict(pos="n", words=["Red fox", "Vulpes vulpes"], gloss="a fox"),
    dict(pos="n", words=["fox"], gloss="a fox"),
    dict(pos="v", words=["run"], gloss="move fast"),
    dict(pos="a", words=["blue(a)"], gloss="a colour"),
    dict(pos="r", words=["quickly"], gloss="fast"),
]

EXPECTED_ENTRIES = [str(i) for i in range(100)] + [
    "dog", "red fox", "fox", "run", "blue", "quickly",  # WordNet: file order, lower-cased, no markers
    "Red", "runs",  # words seen >= 2 times, most frequent first ("fox" is already in)
    "Blue whale", "whale sings",  # bigrams with PMI >= 3 bits
    "Red fox",  # titles with >= 70 views ("Blue whale" is already in)
]


def write_sources(folder, multistream):
    dump = os.path.join(folder, "enwiki-pages-articles.xml.bz2")
    index = synthetic.write_dump(dump, PAGES, multistream=multistream, pages_per_stream=1)
    for name, lines in PAGEVIEW_FILES.items():
        with gzip.open(os.path.join(folder, name), "wb") as out:
            out.write(b"\n".join(lines) + b"\n")
    synthetic.write_wordnet(os.path.join(folder, "wordnet"), SYNSETS)
    return dump, index


def build_args(folder, dump, index, output):
    args = ["queries", "build", "--output", output, "--wikipedia", dump,
            "--pageviews", os.path.join(folder, "pageviews-*.gz"), "--wordnet", os.path.join(folder, "wordnet"),
            "--min-count", "2", "--min-pmi", "3"]
    if index:
        args += ["--wikipedia-index", index]
    return args


@pytest.mark.parametrize("multistream", [False, True], ids=["plain", "multistream"])
def test_build_gives_the_hand_counted_list(tmp_path, monkeypatch, capsys, multistream):
    # One bz2 stream per work item, so the multistream run really is split four ways.
    monkeypatch.setattr(build, "DUMP_BYTES_PER_WORK_ITEM", 1)
    dump, index = write_sources(str(tmp_path), multistream)
    output = str(tmp_path / "out")
    assert cli.main(build_args(str(tmp_path), dump, index, output)) == 0

    # The progress line's last word: every byte of the dump read (of a multistream dump, the
    # streams its index lists), the articles, the pageview files.
    last = [line for line in capsys.readouterr().err.splitlines() if line.startswith("queries: ")][-1]
    read = re.match(r"queries: Wikipedia (\S+ \S+) of (\S+ \S+) read \(", last)
    assert read and read.group(1) == read.group(2), last
    if not multistream:
        assert read.group(1) == size_words(os.path.getsize(dump))
    assert "2 articles counted, pageviews 2/2 files (9 lines) in " in last
    assert not [f for f in os.listdir(os.path.join(output, "counts")) if f.startswith("progress-")]

    assert entries.load_entries(os.path.join(output, "queries.txt")) == EXPECTED_ENTRIES
    sidecar = json.loads(open(os.path.join(output, "queries.json")).read())
    assert sidecar["entries"] == len(EXPECTED_ENTRIES)
    assert sidecar["wikipedia_words"] == 12
    assert sidecar["per_source"]["titles"] == dict(offered=2, added=1, duplicate=1, forbidden=0, over_cap=0)
    assert sidecar["per_source"]["unigrams"]["duplicate"] == 1
    counters = sidecar["counters"]
    assert counters["pages_counted"] == 2
    assert counters["pages_skipped_redirect"] == 1
    assert counters["pages_skipped_namespace"] == 1
    assert counters["pageview_lines_counted"] == 3
    for reason in ("below-line-minimum", "project", "namespace", "fields", "views", "utf8"):
        assert counters[f"pageview_lines_{reason}"] == 1, reason

    # The audit counts beside the list: exact word counts and PMI values.
    counts = os.path.join(output, "counts")
    words = dict(line.split("\t") for f in sorted(os.listdir(counts)) if f.startswith("words")
                 for line in open(os.path.join(counts, f)).read().splitlines())
    assert words == {"Red": "3", "fox": "3", "runs": "2"}
    bigrams = {line.split("\t")[0]: (float(line.split("\t")[1]), int(line.split("\t")[2]))
               for f in os.listdir(counts) if f.startswith("bigrams")
               for line in open(os.path.join(counts, f)).read().splitlines()}
    assert bigrams == {"Blue whale": (math.log2(12), 1), "whale sings": (math.log2(12), 1)}


def test_low_pmi_threshold_scores_every_pair_like_nltk(tmp_path):
    dump, _ = write_sources(str(tmp_path), multistream=False)
    config = build.BuildConfig(output=str(tmp_path / "out"), wikipedia=[dump], sources=("digits", "bigrams"),
                               min_pmi=1.0)
    build.run_build(config)
    counts = str(tmp_path / "out" / "counts")
    scored = {line.split("\t")[0]: float(line.split("\t")[1]) for f in os.listdir(counts) if f.startswith("bigrams")
              for line in open(os.path.join(counts, f)).read().splitlines()}
    assert scored == {"Red fox": 2.0, "fox runs": 2.0, "fox sleeps": 2.0,
                      "Blue whale": math.log2(12), "whale sings": math.log2(12)}


def test_truncated_dump_fails_with_file_and_position_and_writes_no_list(tmp_path, capsys):
    dump, _ = write_sources(str(tmp_path), multistream=False)
    data = open(dump, "rb").read()
    with open(dump, "wb") as out:
        out.write(data[: len(data) // 2])
    output = str(tmp_path / "out")
    assert cli.main(build_args(str(tmp_path), dump, None, output)) == 2
    err = capsys.readouterr().err
    assert "enwiki-pages-articles.xml.bz2" in err and "byte" in err
    assert not os.path.exists(os.path.join(output, "queries.txt"))


def test_truncated_pageview_file_fails_instead_of_losing_views(tmp_path, capsys):
    dump, _ = write_sources(str(tmp_path), multistream=False)
    cut = os.path.join(str(tmp_path), "pageviews-20220101-000000.gz")
    data = gzip.compress(b"en Red_fox 60 0\n" * 5000)
    with open(cut, "wb") as out:
        out.write(data[: len(data) // 2])
    output = str(tmp_path / "out")
    assert cli.main(build_args(str(tmp_path), dump, None, output)) == 2
    assert "pageviews-20220101-000000.gz" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(output, "queries.txt"))


def test_sources_order_and_cap_are_options(tmp_path):
    dump, _ = write_sources(str(tmp_path), multistream=False)
    output = str(tmp_path / "out")
    args = build_args(str(tmp_path), dump, None, output) + ["--sources", "titles,digits", "--max-entries", "3"]
    assert cli.main(args) == 0
    assert entries.load_entries(os.path.join(output, "queries.txt")) == ["Red fox", "Blue whale", "0"]


def test_cli_runs_on_two_local_worker_processes(tmp_path):
    dump, index = write_sources(str(tmp_path), multistream=True)
    output = str(tmp_path / "out")
    args = build_args(str(tmp_path), dump, index, output) + ["--direct_num_workers", "2"]
    assert cli.main(args) == 0
    assert entries.load_entries(os.path.join(output, "queries.txt")) == EXPECTED_ENTRIES


def test_wordnet_names_are_metaclips_unless_full_names_are_asked_for(tmp_path):
    synthetic.write_wordnet(str(tmp_path / "wordnet"), SYNSETS + [dict(pos="n", words=["St._Petersburg"], gloss="a city")])
    lists = {}
    for name, extra in (("metaclip", []), ("full", ["--wordnet-full-names"])):
        out = str(tmp_path / name)
        assert cli.main(["queries", "build", "--output", out, "--wordnet", str(tmp_path / "wordnet"),
                         "--sources", "digits,wordnet", *extra]) == 0
        lists[name] = entries.load_entries(os.path.join(out, "queries.txt"))[100:]
        assert json.load(open(os.path.join(out, "queries.json")))["wordnet_names"].startswith(name)
    assert lists["metaclip"] == ["dog", "red fox", "fox", "st", "run", "blue", "quickly"]   # nouns first
    assert lists["full"] == ["dog", "red fox", "fox", "st. petersburg", "run", "blue", "quickly"]
