"""query_lists/wikidump.py: dumps and indexes written at test time by query_lists/synthetic.py."""
import bz2
import tracemalloc

import pytest

from clipdata.query_lists import synthetic, wikidump
from clipdata.query_lists.wikidump import DumpError, Page

N_PAGES = 250


@pytest.fixture(scope="module")
def pages():
    return [Page(**p) for p in synthetic.make_article_pages(N_PAGES, seed=3, words_per_page=60)]


@pytest.fixture(scope="module")
def plain_dump(pages, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("plain") / "enwiki-20240601-pages-articles.xml.bz2")
    assert synthetic.write_dump(path, pages) is None
    return path


@pytest.fixture(scope="module")
def multistream(pages, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("multi") / "enwiki-20240601-pages-articles-multistream.xml.bz2")
    index = synthetic.write_dump(path, iter(pages), multistream=True, pages_per_stream=100)
    return path, index


def read_all(path, ranges):
    return [page for start, end in ranges for page in wikidump.read_pages(path, start, end)]


# ---------------------------------------------------------------------------------------------
# Reading


def test_plain_dump_reads_every_page(plain_dump, pages):
    assert list(wikidump.read_pages(plain_dump)) == pages


def test_uncompressed_xml_reads_the_same(plain_dump, pages, tmp_path):
    path = tmp_path / "export.xml"
    path.write_bytes(bz2.decompress(open(plain_dump, "rb").read()))
    assert list(wikidump.read_pages(str(path))) == pages


def test_stream_ranges_of_a_multistream_index(multistream):
    path, index = multistream
    assert index.endswith("enwiki-20240601-pages-articles-multistream-index.txt.bz2")
    ranges = wikidump.stream_ranges(index)
    assert len(ranges) == 3  # 250 pages, 100 per stream
    header_end = ranges[0][0]
    assert bz2.decompress(open(path, "rb").read()[:header_end]).rstrip().endswith(b"</siteinfo>")
    assert [end for _, end in ranges[:-1]] == [start for start, _ in ranges[1:]]
    assert ranges[-1][1] is None


@pytest.mark.parametrize("target_bytes", [1, 10**9])
def test_multistream_ranges_read_every_page_exactly_once(multistream, pages, target_bytes):
    path, index = multistream
    ranges = wikidump.group_ranges(wikidump.stream_ranges(index), target_bytes)
    assert len(ranges) == (3 if target_bytes == 1 else 1)
    assert read_all(path, ranges) == pages


def test_a_range_holding_the_header_stream(multistream, pages):
    path, index = multistream
    first_start, first_end = wikidump.stream_ranges(index)[0]
    assert list(wikidump.read_pages(path, 0, first_start)) == []
    assert list(wikidump.read_pages(path, 0, first_end)) == pages[:100]
    assert list(wikidump.read_pages(path, 0)) == pages


def test_footer_in_its_own_stream(multistream, pages, tmp_path):
    # Wikimedia may put `</mediawiki>` in a stream of its own after the last page stream.
    path, index = multistream
    last = wikidump.stream_ranges(index)[-1][0]
    data = open(path, "rb").read()
    tail = bz2.decompress(data[last:]).replace(b"</mediawiki>\n", b"")
    moved = tmp_path / "footer.xml.bz2"
    moved.write_bytes(data[:last] + bz2.compress(tail) + bz2.compress(b"</mediawiki>\n"))
    assert list(wikidump.read_pages(str(moved), last)) == pages[200:]


def test_group_ranges_merges_only_touching_ranges():
    ranges = [(10, 20), (20, 30), (30, 45), (45, None)]
    assert wikidump.group_ranges(ranges, 15) == [(10, 30), (30, 45), (45, None)]
    assert wikidump.group_ranges(ranges, 1000) == [(10, None)]
    assert wikidump.group_ranges([(30, 40), (10, 20)], 1000) == [(10, 20), (30, 40)]
    assert wikidump.group_ranges([], 10) == []


def test_uncompressed_index_and_titles_with_colons(tmp_path):
    index = tmp_path / "index.txt"
    index.write_text("463:10:Talk:Foo: bar\n463:11:A\n\n9000:12:B:C\n", encoding="utf-8")
    assert wikidump.stream_ranges(str(index)) == [(463, 9000), (9000, None)]


def test_any_export_namespace_and_awkward_text(tmp_path):
    page = Page(title='AT&T <"x"> café', ns=0, page_id=7, text="a < b && c > 'd' \"e\" 東京\n\nend", redirect=False)
    deleted = (
        "  <page>\n    <title>Gone</title>\n    <ns>0</ns>\n    <id>8</id>\n"
        '    <revision><id>1</id><text bytes="0" deleted="deleted" /></revision>\n  </page>\n'
    )
    xml = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">\n'
        + synthetic.page_xml(page) + deleted + "</mediawiki>\n"
    )
    path = tmp_path / "old.xml.bz2"
    path.write_bytes(bz2.compress(xml.encode("utf-8")))
    assert list(wikidump.read_pages(str(path))) == [page, Page("Gone", 0, 8, "", False)]


def test_is_article_gives_the_reason(pages):
    reasons = {}
    for page in pages:
        reasons.setdefault(wikidump.is_article(page), []).append(page)
    assert set(reasons) == {None, "redirect", "namespace"}
    assert all(p.ns == 0 and not p.redirect for p in reasons[None])
    assert all(p.redirect and p.text.startswith("#REDIRECT [[") for p in reasons["redirect"])
    assert {p.ns for p in reasons["namespace"]} == {1, 4, 14}
    # A redirect without the <redirect> element (older exports) is still a redirect.
    assert wikidump.is_article(Page("X", 0, 1, "#redirect [[Y]]", False)) == "redirect"
    assert wikidump.is_article(Page("Talk:X", 1, 1, "#REDIRECT [[Y]]", True)) == "namespace"


# ---------------------------------------------------------------------------------------------
# plain_text


@pytest.mark.parametrize(
    "wikitext, expected",
    [
        ("'''Paris''' is the [[capital city|capital]] of [[France]].", "Paris is the capital of France."),
        ("{{Infobox city|name=Paris|pop=2}}\nParis is big.", "Paris is big."),
        ("Paris.<ref name=\"a\">{{cite web|title=Secret}} Ref words</ref> Big.<ref name=\"a\"/>", "Paris. Big."),
        ("Text [[File:Eiffel.jpg|thumb|A caption]] more [[Category:Cities]]", "Text  more "),
        ("''It'' [[:Category:Towns]] [[Image:x.png]] ok", "It   ok"),
        ("'''Bold <ref>inner</ref>''' end &amp; &eacute;<!-- hidden -->", "Bold  end & é"),
        ("== History ==\nFounded.\n\n\n\n{| class=\"wikitable\"\n|-\n| cell || cell\n|}\nAfter [http://x.org the site].",
         " History \nFounded.\n\nAfter the site."),
    ],
)
def test_plain_text_strips_markup_and_keeps_link_text(wikitext, expected):
    assert wikidump.plain_text(wikitext) == expected


@pytest.mark.parametrize("wikitext", ["", "{{" * 3000 + "x", "[[" * 20000, "<ref>" * 500, "{|\n" * 300, "\x00\ud800"])
def test_plain_text_never_raises(wikitext):
    assert isinstance(wikidump.plain_text(wikitext), str)


def test_plain_text_falls_back_to_raw_text(monkeypatch):
    def broken(text):
        raise RecursionError("too deep")

    monkeypatch.setattr(wikidump.mwparserfromhell, "parse", broken)
    assert wikidump.plain_text("{{a}} b") == "{{a}} b"


def test_plain_text_of_generated_articles_drops_markup_words(pages):
    for page in pages:
        if wikidump.is_article(page) is None:
            text = wikidump.plain_text(page.text)
            for marker in ("INFOBOX", "CITETITLE", "CAPTIONWORD", "Category:", "[[", "{{", "'''", "<ref"):
                assert marker not in text, (page.title, marker)
            assert text.startswith(page.title)


# ---------------------------------------------------------------------------------------------
# Damaged input: DumpError naming the file and a position


def damaged(tmp_path, name, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_truncated_bz2(plain_dump, tmp_path):
    data = open(plain_dump, "rb").read()
    path = damaged(tmp_path, "cut.xml.bz2", data[: len(data) // 2])
    with pytest.raises(DumpError, match=r"cut\.xml\.bz2: truncated bz2 data in the bz2 stream starting at byte 0$"):
        list(wikidump.read_pages(path))


def test_truncated_multistream_range(multistream, tmp_path):
    path, index = multistream
    start, end = wikidump.stream_ranges(index)[1]
    with pytest.raises(DumpError, match=rf"truncated bz2 data in the bz2 stream starting at byte {start}$"):
        list(wikidump.read_pages(path, start, end - 10))
    # A range one stream too long ends in the next stream's first bytes.
    with pytest.raises(DumpError, match=rf"truncated bz2 data in the bz2 stream starting at byte {end} "
                                        rf"\(range starting at byte {start}\)"):
        list(wikidump.read_pages(path, start, end + 10))
    # A file cut exactly at a stream boundary still lacks its </mediawiki>.
    cut = damaged(tmp_path, "cut-at-stream.xml.bz2", open(path, "rb").read()[:end])
    with pytest.raises(DumpError, match=r"cut-at-stream\.xml\.bz2: XML ends before </mediawiki> .*byte"):
        list(wikidump.read_pages(cut, start))


def test_corrupt_bz2_bytes(plain_dump, tmp_path):
    data = bytearray(open(plain_dump, "rb").read())
    data[2000:2100] = bytes(b ^ 0xFF for b in data[2000:2100])
    path = damaged(tmp_path, "corrupt.xml.bz2", bytes(data))
    with pytest.raises(DumpError, match=r"corrupt\.xml\.bz2: invalid bz2 data .* starting at byte 0"):
        list(wikidump.read_pages(path))


def test_range_not_at_a_stream_start(multistream):
    path, index = multistream
    start, end = wikidump.stream_ranges(index)[1]
    with pytest.raises(DumpError, match=rf"multistream\.xml\.bz2: no bz2 stream starts at byte {start + 3}"):
        list(wikidump.read_pages(path, start + 3, end))


def test_garbage_between_streams(multistream, tmp_path):
    path, index = multistream
    start, end = wikidump.stream_ranges(index)[1]
    data = open(path, "rb").read()
    bad = damaged(tmp_path, "junk.xml.bz2", data[:end] + b"junk" + data[end:])
    with pytest.raises(DumpError, match=rf"junk\.xml\.bz2: invalid bz2 data .* starting at byte {end} "):
        list(wikidump.read_pages(bad, start))


def test_malformed_xml(plain_dump, tmp_path):
    xml = bz2.decompress(open(plain_dump, "rb").read())
    first_title = xml.index(b"</title>")
    broken = xml[:first_title] + xml[first_title + len(b"</title>"):]  # unclosed <title>
    line = broken[: broken.index(b"</page>")].count(b"\n") + 1  # where the mismatch shows
    path = damaged(tmp_path, "unclosed.xml.bz2", bz2.compress(broken))
    with pytest.raises(DumpError, match=r"unclosed\.xml\.bz2: malformed XML \(mismatched tag\) at line \d+, "
                                        r"column \d+ in the bz2 stream starting at byte 0"):
        list(wikidump.read_pages(path))
    plain = damaged(tmp_path, "unclosed.xml", broken)
    with pytest.raises(DumpError, match=r"unclosed\.xml: malformed XML \(mismatched tag\) at line (\d+)") as err:
        list(wikidump.read_pages(plain))
    assert f"at line {line}," in str(err.value)


def test_malformed_xml_in_a_multistream_range(multistream, tmp_path):
    path, index = multistream
    (_, second), (_, third) = wikidump.stream_ranges(index)[:2]
    data = open(path, "rb").read()
    fragment = bz2.decompress(data[second:third]).replace(b"</ns>", b"</nz>", 1)
    bad = damaged(tmp_path, "bad-range.xml.bz2", data[:second] + bz2.compress(fragment))
    # Line 3 of the range is "    <ns>0</nz>"; expat's columns are 0-based, at the tag name.
    with pytest.raises(DumpError, match=rf"bad-range\.xml\.bz2: malformed XML \(mismatched tag\) at line 3, "
                                        rf"column 11 of the range in the bz2 stream starting at byte {second}"):
        list(wikidump.read_pages(bad, second))


def test_invalid_utf8_inside_text(multistream, tmp_path):
    path, index = multistream
    first, second = wikidump.stream_ranges(index)[0]
    data = open(path, "rb").read()
    fragment = bz2.decompress(data[first:second])
    where = fragment.index(b'xml:space="preserve">') + len(b'xml:space="preserve">') + 5
    fragment = fragment[:where] + b"\xff\xfe" + fragment[where:]
    bad = damaged(tmp_path, "utf8.xml.bz2", data[:first] + bz2.compress(fragment) + data[second:])
    expected = (rf"utf8\.xml\.bz2: invalid UTF-8 \(invalid start byte\) at byte {where} of the decompressed text "
                rf"of the bz2 stream starting at byte {first}$")
    with pytest.raises(DumpError, match=expected):
        list(wikidump.read_pages(bad, first, second))
    with pytest.raises(DumpError, match=expected[:-1] + r" \(range starting at byte 0\)$"):
        list(wikidump.read_pages(bad))


def test_empty_file(tmp_path):
    with pytest.raises(DumpError, match=r"empty\.xml: no XML .* at byte 0"):
        list(wikidump.read_pages(damaged(tmp_path, "empty.xml", b"")))


def test_malformed_index_line(tmp_path):
    index = tmp_path / "enwiki-index.txt.bz2"
    index.write_bytes(bz2.compress(b"463:10:A\n463:11:B: c\n463-12-C\n"))
    with pytest.raises(DumpError, match=r"enwiki-index\.txt\.bz2: line 3: expected 'offset:page_id:title'"):
        wikidump.stream_ranges(str(index))


def test_truncated_index(multistream, tmp_path):
    _, index = multistream
    data = open(index, "rb").read()
    path = damaged(tmp_path, "cut-index.txt.bz2", data[: len(data) // 2])
    with pytest.raises(DumpError, match=r"cut-index\.txt\.bz2: truncated or damaged bz2 data after line \d+"):
        wikidump.stream_ranges(path)


def test_a_page_without_an_id(tmp_path):
    xml = "<mediawiki><page><title>No id</title><ns>0</ns></page></mediawiki>"
    path = damaged(tmp_path, "noid.xml", xml.encode())
    with pytest.raises(DumpError, match=r"noid\.xml: page 'No id' has a missing or non-integer <ns>/<id> at byte"):
        list(wikidump.read_pages(path))


def test_memory_stays_bounded(tmp_path, monkeypatch):
    # Finished pages are dropped from the tree, so reading holds about one chunk and one page.
    many = synthetic.make_article_pages(1500, seed=5, words_per_page=60)
    path = tmp_path / "many.xml.bz2"
    synthetic.write_dump(str(path), many)
    xml = tmp_path / "many.xml"  # uncompressed, so bz2's own 4 MB state does not hide the tree
    xml.write_bytes(bz2.decompress(path.read_bytes()))
    monkeypatch.setattr(wikidump, "READ_CHUNK_BYTES", 16 << 10)
    list(wikidump.read_pages(str(xml), 0, 0))  # imports Beam's FileSystems outside the measurement
    tracemalloc.start()
    try:
        count = sum(1 for _ in wikidump.read_pages(str(xml)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 1500
    assert peak < xml.stat().st_size / 5, (peak, xml.stat().st_size)
