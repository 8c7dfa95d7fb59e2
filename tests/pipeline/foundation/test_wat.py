"""Common Crawl WAT files: a WAT written at test time in the real layout (warcinfo, then metadata
records holding Common Crawl's JSON), read back to exact rows and exact counts per drop reason."""
import json
import zlib
from collections import Counter

import pytest
from wat_files import PAGE_1, PAGE_2, PAGE_3, wat_json, write_wat

from clipdata.pipeline.foundation.pool import POOL_SCHEMA, PoolReadError, read_pool_file
from clipdata.pipeline.foundation.wat import WatStats, page_images, read_wat

ROWS = [
    ("http://example.com/img/a.jpg", "A red bus", PAGE_1, 0),
    ("http://example.com/b.png", "Blue sky", PAGE_1, 2),
    ("http://cdn.example.com/c.jpg", "Cat\non a mat", PAGE_1, 3),
    ("https://static.example.org/assets/x/e.jpg", "Shoe", PAGE_2, 6),
    ("https://static.example.org/f.jpg", "Hat ", PAGE_2, 7),
    ("data:image/png;base64,AAAA", "pixel", PAGE_2, 9),  # text.py drops it as bad-url
    ("http://example.net/base/c.jpg", "Relative base", PAGE_3, 10),
]
DROPS = {"non-image-link": 3, "missing-alt": 2, "unresolvable-url": 2, "bad-json": 1, "no-links": 2}


def rows_of(batches, path):
    rows = [row for batch in batches for row in batch.to_pylist()]
    assert all(row["source_file"] == path for row in rows)
    return [(r["url"], r["caption"], r["page_url"], r["source_row"]) for r in rows]


@pytest.mark.parametrize("name", ["x.warc.wat.gz", "x.warc.wat"])
def test_rows_and_drop_counts(tmp_path, name):
    path = write_wat(tmp_path / name)
    stats = WatStats()
    batches = list(read_wat(path, batch_rows=4, stats=stats))
    assert [b.num_rows for b in batches] == [4, 3] and all(b.schema == POOL_SCHEMA for b in batches)
    assert rows_of(batches, path) == ROWS
    assert dict(stats.drops) == DROPS
    assert (stats.records, stats.image_links, stats.rows, stats.truncated) == (6, 11, 7, False)
    assert_links_add_up(stats)


def assert_links_add_up(stats):
    # every IMG@/src link is a row or a per-link drop
    assert stats.image_links == (stats.rows + stats.drops["missing-alt"]
                                 + stats.drops["unresolvable-url"])


def test_read_pool_file_delegates_wat(tmp_path):
    path = write_wat(tmp_path / "x.wat.gz")
    stats = WatStats()
    assert rows_of(read_pool_file(path, url_col="ignored", wat_stats=stats), path) == ROWS
    assert dict(stats.drops) == DROPS


def test_truncated_wat_gz_keeps_what_was_read(tmp_path):
    path = write_wat(tmp_path / "x.wat.gz")
    data = open(path, "rb").read()
    # The last record (page 3) is the last gzip member; cut it at points from its start to its end.
    # Cut in its payload, the record is lost; cut after it (in the gzip trailer), it is whole and
    # kept; either way the file is reported truncated.
    last_member = data.rindex(b"\x1f\x8b\x08")
    outcomes = []
    for cut in list(range(last_member + 1, len(data), 23)) + [len(data) - 1]:
        cut_path = tmp_path / "cut.wat.gz"
        cut_path.write_bytes(data[:cut])
        stats = WatStats()
        rows = rows_of(read_wat(str(cut_path), stats=stats), str(cut_path))
        assert stats.truncated and stats.drops["truncated-file"] == 1
        assert (rows, stats.records) in ((ROWS[:-1], 5), (ROWS, 6))
        outcomes.append(len(rows))
    assert outcomes == sorted(outcomes) and outcomes[0] == 6 and outcomes[-1] == 7
    assert outcomes.count(6) > 5


@pytest.mark.parametrize("name", ["x.warc.wat.gz", "x.warc.wat"])
def test_cut_anywhere_gives_a_prefix_of_the_rows(tmp_path, name):
    path = write_wat(tmp_path / name)
    data = open(path, "rb").read()
    # Cut after the warcinfo record: a file cut inside its first record is not taken for a WAT.
    # (The end of the first gzip member, found by decompressing it: searching for the next
    # member's magic bytes can hit them inside the compressed data, whose record ids and dates
    # differ on every run.)
    if name.endswith(".gz"):
        first = zlib.decompressobj(31)
        first.decompress(data)
        warcinfo_end = len(data) - len(first.unused_data)
    else:
        warcinfo_end = data.index(b"WARC/1.0", 2)
    for cut in range(warcinfo_end, len(data), 41):
        cut_path = tmp_path / ("cut-" + name)
        cut_path.write_bytes(data[:cut])
        stats = WatStats()
        rows = rows_of(read_wat(str(cut_path), stats=stats), str(cut_path))
        assert rows == ROWS[:len(rows)]
        assert_links_add_up(stats)


def test_not_a_wat_file(tmp_path):
    path = tmp_path / "notes.wat"
    path.write_text("these are my notes, not a WARC file\n" * 10)
    with pytest.raises(PoolReadError, match="notes.wat: not a WARC/WAT file"):
        list(read_wat(str(path)))
    empty = tmp_path / "empty.wat.gz"
    empty.write_bytes(b"")
    assert list(read_wat(str(empty))) == []


def test_page_images_resolution_and_order():
    drops = Counter()
    doc = json.loads(wat_json("http://h.example/x/y.html", base="../up/", links=[
        {"path": "IMG@/src", "url": "  z.jpg  ", "alt": "spaced src"},
        {"path": "IMG@/src", "url": "HTTPS://Other.example/Q.JPG", "alt": "absolute"},
        {"path": "IMG@/src", "url": "", "alt": "empty src"},
        "not a link",
    ]))
    page, images = page_images(doc, None, drops)
    assert page == "http://h.example/x/y.html"
    assert images == [("http://h.example/up/z.jpg", "spaced src"),
                      ("HTTPS://Other.example/Q.JPG", "absolute"), None]
    assert drops == {"unresolvable-url": 1, "non-image-link": 1}
    # Without any page URL, a relative src cannot be resolved.
    orphan = json.loads(wat_json(None, links=[{"path": "IMG@/src", "url": "/a.jpg", "alt": "a"}]))
    assert page_images(orphan, None, drops) == (None, [None])
