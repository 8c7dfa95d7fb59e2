"""WAT files written at test time in Common Crawl's real layout (warcinfo, then metadata records
holding Common Crawl's JSON): the WAT reader's tests and the curate tests read them."""
import io
import json

from warcio.warcwriter import WARCWriter


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


