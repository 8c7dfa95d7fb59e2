"""Common Crawl WAT files: a WAT written at test time in the real layout (warcinfo, then metadata
records holding Common Crawl's JSON), read back to exact rows and exact counts per drop reason."""
import io
import json
import zlib
from collections import Counter

import pytest
from warcio.warcwriter import WARCWriter

from clipdata.pipeline.foundation.pool import POOL_SCHEMA, PoolReadError, read_pool_file
from clipdata.pipeline.foundation.wat import WatStats, page_images, read_wat


def wat_json(target_uri, links=None, base=None, kind="response"):
    """A WAT metadata payload as Common Crawl writes it (fields we do not read trimmed)."""
    envelope = {
        "Format": "WARC",
        "WARC-Header-Length": "420",
        "WARC-Header-Metadata": {"WARC-Type": kind, "WARC-Date": "2024-02-20T10:11:12Z",
                                 "WARC-Record-ID": "<urn:uuid:0>"},
    }
    if target_uri:
        envelope["WARC-Header-Metadata"]["WARC-Target-URI"] = target_uri
    if kind == "request":
        envelope["Payload-Metadata"] = {
            "Actual-Content-Type": "application/http; msgtype=request",
            "HTTP-Request-Metadata": {"Request-Message": {"Method": "GET", "Path": "/"}}}
    else:
        response = {"Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
                    "Headers": {"Content-Type": "text/html; charset=UTF-8"},
                    "Entity-Length": "5120"}
        if links is not None:
            head = {"Title": "A page",
                    "Metas": [{"name": "viewport", "content": "width=device-width"}]}
            if base:
                head["Base"] = base
            response["HTML-Metadata"] = {"Head": head, "Links": links}
        envelope["Payload-Metadata"] = {"Actual-Content-Type": "application/http; msgtype=response",
                                        "HTTP-Response-Metadata": response}
    return json.dumps({"Container": {"Filename": "CC-MAIN-x.warc.gz", "Compressed": True,
                                     "Offset": "1234", "Gzip-Metadata": {}},
                       "Envelope": envelope}).encode()


PAGE_1 = "http://example.com/dir/page.html"
PAGE_2 = "https://shop.example.org/p/item?id=1"
PAGE_3 = "http://example.net/a/b"
RECORDS = [
    # (record type, WARC-Target-URI of the record, payload)
    ("metadata", PAGE_1, wat_json(PAGE_1, kind="request")),  # no-links
    ("metadata", PAGE_1, wat_json(PAGE_1, links=[
        {"path": "A@/href", "url": "/about", "text": "About us"},  # non-image-link
        {"path": "IMG@/src", "url": "/img/a.jpg", "alt": "A red bus"},  # image 0
        {"path": "IMG@/src", "url": "../b.png", "alt": "   "},  # image 1: missing-alt
        {"path": "IMG@/src", "url": "../b.png", "alt": "Blue sky"},  # image 2
        {"path": "IMG@/src", "url": "//cdn.example.com/c.jpg", "alt": "Cat\non a mat"},  # image 3
        {"path": "IMG@/src", "url": "d.jpg"},  # image 4: missing-alt
        {"path": "LINK@/href", "url": "style.css", "rel": "stylesheet"},  # non-image-link
        {"path": "IMG@/src", "alt": "no src"},  # image 5: unresolvable-url
    ])),
    ("metadata", PAGE_2, wat_json(PAGE_2, base="https://static.example.org/assets/", links=[
        {"path": "IMG@/src", "url": "x/e.jpg", "alt": "Shoe"},  # image 6
        {"path": "IMG@/src", "url": "/f.jpg", "alt": "Hat "},  # image 7
        {"path": "A@/href", "url": "/cart", "text": "Cart"},  # non-image-link
        {"path": "IMG@/src", "url": "http://[::1/g.jpg", "alt": "bad host"},  # 8: unresolvable-url
        {"path": "IMG@/src", "url": "data:image/png;base64,AAAA", "alt": "pixel"},  # image 9
    ])),
    ("metadata", PAGE_1, b"this payload is not JSON"),  # bad-json
    ("metadata", PAGE_2, wat_json(PAGE_2)),  # a non-HTML response: no-links
    ("response", PAGE_2, b"HTTP/1.1 200 OK\r\n\r\nnot a WAT record; skipped"),
    # The target URI only in the WARC header, and a relative <base href>.
    ("metadata", PAGE_3, wat_json(None, base="/base/", links=[
        {"path": "IMG@/src", "url": "c.jpg", "alt": "Relative base"},  # image 10
    ])),
]
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


def write_wat(path, records=RECORDS):
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=str(path).endswith(".gz"))
    writer.write_record(writer.create_warcinfo_record(
        "CC-MAIN-x.warc.wat.gz", {"software": "clipdata test", "format": "WARC File Format 1.0"}))
    for record_type, uri, payload in records:
        writer.write_record(writer.create_warc_record(
            uri, record_type, payload=io.BytesIO(payload), warc_content_type="application/json"))
    path.write_bytes(buffer.getvalue())
    return str(path)


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
