"""query_lists/synthetic.py writes the real formats: checked here by independent, minimal readers."""
import bz2
import gzip
import os
import re
from collections import Counter

import pytest

from clipdata.query_lists import synthetic

WORDNET_REAL = "/usr/share/wordnet"  # Debian's wordnet-base, when installed


def test_articles_are_deterministic_per_seed():
    assert synthetic.make_article_pages(40, seed=1) == synthetic.make_article_pages(40, seed=1)
    assert synthetic.make_article_pages(40, seed=1) != synthetic.make_article_pages(40, seed=2)
    assert synthetic.make_article_pages(40, seed=1) == list(synthetic.iter_article_pages(40, seed=1))


def test_articles_hold_the_markup_and_page_kinds_a_dump_has():
    pages = synthetic.make_article_pages(400, seed=0)
    assert len({p["title"] for p in pages}) == len({p["page_id"] for p in pages}) == 400
    kinds = Counter("redirect" if p["redirect"] else p["ns"] for p in pages)
    assert set(kinds) == {0, 1, 4, 14, "redirect"}
    assert kinds[0] > 300
    articles = "\n".join(p["text"] for p in pages if p["ns"] == 0 and not p["redirect"])
    for markup in ("'''", "''", "[[Category:", "{{Infobox", "<ref>", "== ", "|", "[[File:", "&amp;", "<", "東京"):
        assert markup in articles, markup
    assert any(":" in p["title"] and p["ns"] == 0 for p in pages)  # the index splits on 2 colons only


def test_article_words_are_zipf_distributed():
    pages = synthetic.make_article_pages(200, seed=0, vocab_size=5000)
    words = Counter(re.findall(r"\b[a-z]+\b", " ".join(p["text"] for p in pages if p["ns"] == 0)))
    counts = sorted(words.values(), reverse=True)
    # Zipf: frequency ~ 1/rank, so the 10th word is ~10x rarer than the 1st, with a long tail.
    assert 4 < counts[0] / counts[9] < 25
    assert sum(1 for c in counts if c == 1) > 500


def test_plain_dump_is_one_bz2_stream_of_the_document(tmp_path):
    pages = synthetic.make_article_pages(20, seed=0)
    path = str(tmp_path / "enwiki-pages-articles.xml.bz2")
    assert synthetic.write_dump(path, iter(pages)) is None
    data = open(path, "rb").read()
    decompressor = bz2.BZ2Decompressor()
    xml = decompressor.decompress(data).decode("utf-8")
    assert decompressor.eof and decompressor.unused_data == b""
    assert xml.startswith('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/"')
    assert xml.count("<page>") == 20 and xml.endswith("</mediawiki>\n")
    assert '<namespace key="14" case="first-letter">Category</namespace>' in xml


def test_multistream_dump_and_index(tmp_path):
    pages = synthetic.make_article_pages(250, seed=0)
    path = str(tmp_path / "enwiki-20240601-pages-articles-multistream.xml.bz2")
    index = synthetic.write_dump(path, pages, multistream=True, pages_per_stream=100)
    assert index == str(tmp_path / "enwiki-20240601-pages-articles-multistream-index.txt.bz2")
    data = open(path, "rb").read()

    lines = bz2.decompress(open(index, "rb").read()).decode("utf-8").splitlines()
    entries = [line.split(":", 2) for line in lines]
    assert [(int(i), t) for _, i, t in entries] == [(p["page_id"], p["title"]) for p in pages]
    offsets = sorted({int(o) for o, _, _ in entries})
    assert Counter(int(o) for o, _, _ in entries) == {offsets[0]: 100, offsets[1]: 100, offsets[2]: 50}

    # Stream 0: the header only; then one stream per 100 pages; the last also closes the root.
    header = bz2.decompress(data[: offsets[0]]).decode("utf-8")
    assert header.startswith("<mediawiki ") and header.endswith("</siteinfo>\n")
    bounds = offsets + [len(data)]
    for k, (start, end) in enumerate(zip(bounds, bounds[1:])):
        decompressor = bz2.BZ2Decompressor()
        text = decompressor.decompress(data[start:end]).decode("utf-8")
        assert decompressor.eof and decompressor.unused_data == b""  # exactly one stream
        assert text.startswith("  <page>\n")
        assert text.count("<page>") == (100 if k < 2 else 50)
        assert text.endswith("</mediawiki>\n") == (k == 2)


def test_xml_escaping(tmp_path):
    page = dict(title='A&B <c> "d"', ns=0, page_id=1, redirect=False, text="x < y & z > \"q\" 'r'")
    xml = synthetic.page_xml(page)
    assert "<title>A&amp;B &lt;c&gt; \"d\"</title>" in xml
    assert "x &lt; y &amp; z &gt; &quot;q&quot; 'r'</text>" in xml
    redirect = synthetic.page_xml(dict(page, redirect=True, text='#REDIRECT [[Q&"A"]]'))
    assert '<redirect title="Q&amp;&quot;A&quot;" />' in redirect
    with pytest.raises(ValueError, match="XML 1.0"):
        synthetic.page_xml(dict(page, text="bell \x07"))


@pytest.mark.parametrize("name", ["pageviews-20240601-120000", "pageviews-20240601-130000.gz"])
def test_pageviews(tmp_path, name):
    path = str(tmp_path / name)
    synthetic.write_pageviews(path, [("en", "Main Page", 42), ("en", "AT&T", 7, 1234), ("de", "Köln", 3)])
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        assert f.read() == "en Main_Page 42 0\nen AT&T 7 1234\nde Köln 3 0\n"


# ---------------------------------------------------------------------------------------------
# WordNet: read back with the rules of wndb(5), independently of the writer.


def read_data_file(path):
    """{offset: (line, fields)} of a WordNet data file, checking each offset is the line's byte offset."""
    synsets, header = {}, 0
    with open(path, "rb") as f:
        position = 0
        for raw in f:
            line = raw.decode("utf-8")
            if line.startswith("  "):
                header += 1
            else:
                assert int(line[:8]) == position, (path, line[:40])
                synsets[position] = parse_synset_line(line)
            position += len(raw)
    return header, synsets


def parse_synset_line(line):
    data, gloss = line.rstrip("\n").split(" | ", 1)
    fields = data.split()
    offset, lex_filenum, ss_type, w_cnt = fields[:4]
    n_words = int(w_cnt, 16)
    words = fields[4: 4 + 2 * n_words: 2]
    lex_ids = fields[5: 5 + 2 * n_words: 2]
    rest = fields[4 + 2 * n_words:]
    p_cnt = int(rest[0])
    pointers = [tuple(rest[1 + 4 * i: 5 + 4 * i]) for i in range(p_cnt)]
    frames = rest[1 + 4 * p_cnt:]
    if ss_type == "v":
        assert int(frames[0]) == (len(frames) - 1) // 3
    else:
        assert frames == []
    assert len(offset) == 8 and len(lex_filenum) == 2 and len(w_cnt) == 2
    assert all(re.fullmatch(r"[0-9a-f]", lex_id) for lex_id in lex_ids)
    return dict(ss_type=ss_type, words=words, pointers=pointers, gloss=gloss.strip())


@pytest.mark.skipif(not os.path.exists(f"{WORDNET_REAL}/data.adj"), reason="wordnet-base not installed")
def test_the_reader_accepts_real_wordnet_lines():
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        with open(f"{WORDNET_REAL}/{name}", encoding="utf-8") as f:
            lines = [line for _, line in zip(range(2000), f)]
        assert sum(line.startswith("  ") for line in lines) == 29
        for line in lines[29:]:
            parse_synset_line(line)


def test_wordnet_files(tmp_path):
    synsets = [
        dict(pos="n", words=["entity"], gloss="that which is perceived"),
        dict(pos="n", words=["ice cream", "icecream"], gloss="frozen dessert", pointers=[("@", 0)]),
        dict(pos="v", words=["breathe", "respire"], gloss="draw air", frames=[(2, 0), (8, 0)]),
        dict(pos="a", words=["able"], gloss="having the means", pointers=[("&", 4)]),
        dict(pos="s", words=["handy", "ready to hand(p)"], gloss="easy to reach", pointers=[("&", 3)]),
        dict(pos="s", words=["outback(a)", "galore(ip)"], gloss="remote; \"whiskey galore\""),
        dict(pos="r", words=["a cappella"], gloss="without music"),
    ]
    offsets = synthetic.write_wordnet(str(tmp_path), synsets)
    files = {name: read_data_file(tmp_path / name) for name in ("data.noun", "data.verb", "data.adj", "data.adv")}
    assert all(header == 29 for header, _ in files.values())
    assert {name: list(lines) for name, (_, lines) in files.items()} == offsets

    first_words = {name: [s["words"][0] for s in lines.values()] for name, (_, lines) in files.items()}
    assert first_words == {"data.noun": ["entity", "ice_cream"], "data.verb": ["breathe"],
                           "data.adj": ["able", "handy", "outback(a)"], "data.adv": ["a_cappella"]}
    noun = files["data.noun"][1]
    entity, ice_cream = noun.values()
    assert ice_cream["pointers"] == [("@", f"{offsets['data.noun'][0]:08d}", "n", "0000")]
    adjectives = list(files["data.adj"][1].values())
    assert [a["ss_type"] for a in adjectives] == ["a", "s", "s"]
    assert adjectives[1]["words"] == ["handy", "ready_to_hand(p)"]
    # A pointer to a satellite names it "a", as real data.adj does; its offset finds the line.
    assert adjectives[0]["pointers"] == [("&", f"{offsets['data.adj'][1]:08d}", "a", "0000")]
    assert files["data.adj"][1][offsets["data.adj"][1]]["words"][0] == "handy"
    verb_line = (tmp_path / "data.verb").read_text().splitlines()[29]
    assert verb_line.endswith(" 000 02 + 02 00 + 08 00 | draw air  ")


def test_generated_synsets_round_trip(tmp_path):
    synsets = synthetic.make_synsets(300, seed=4)
    assert synsets == synthetic.make_synsets(300, seed=4)
    offsets = synthetic.write_wordnet(str(tmp_path), synsets)
    total = 0
    for name, expected in offsets.items():
        header, lines = read_data_file(tmp_path / name)
        assert header == 29 and list(lines) == expected
        total += len(lines)
        for synset in lines.values():
            for _, target, pos, _ in synset["pointers"]:
                target_file = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}[pos]
                assert int(target) in offsets[target_file]
    assert total == 300
