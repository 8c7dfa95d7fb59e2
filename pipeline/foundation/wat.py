"""Common Crawl WAT files as a pool: one row per `<img src alt>` of a crawled page.

A WAT file is a WARC file (`.wat`, or `.wat.gz` with one gzip member per record) whose `metadata`
records each hold the JSON Common Crawl extracted from one record of a crawl WARC. For an HTML
response the links of the page are in

    Envelope.Payload-Metadata.HTTP-Response-Metadata.HTML-Metadata.Links
        [{"path": "IMG@/src", "url": "/img/a.jpg", "alt": "a red bus"},
         {"path": "A@/href", "url": "...", "text": "..."}, ...]

and the page's URL in Envelope.WARC-Header-Metadata.WARC-Target-URI. A row is kept for a link
with path `IMG@/src` and an alt text that is not blank; its URL is resolved against the page's
`<base href>` (HTML-Metadata.Head.Base, itself resolved against the page) when there is one, else
against the page URL. The caption is the alt text as written; text.py cleans it like any caption.

What is passed over is counted in WatStats.drops, by reason:
  non-image-link    a link that is not IMG@/src (anchors, scripts, stylesheets ...), per link
  missing-alt       an IMG@/src link without alt text, or only whitespace, per link
  unresolvable-url  an IMG@/src link without a URL, or one that resolves to no absolute URL
  bad-json          a metadata record whose payload is not JSON, per record
  no-links          a metadata record with no Links list, per record: the records of requests,
                    of non-HTML responses and crawl metadata, and pages without links
  truncated-file    the file ends inside a record (a download cut short): what was read before
                    it is kept, the cut record is not, and WatStats.truncated is True
Records that are not `metadata` (the `warcinfo` at the start) are not rows and are skipped.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin

import pyarrow as pa
from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeadersParserException

from clipdata.pipeline.foundation.pool import DEFAULT_BATCH_ROWS, PoolReadError, SourceStream, pool_batch

IMAGE_PATH = "IMG@/src"
_HAS_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # as urllib splits a scheme off
REASONS = ("non-image-link", "missing-alt", "unresolvable-url", "bad-json", "no-links",
           "truncated-file")


@dataclass
class WatStats:
    """What one WAT file held. Every IMG@/src link is a row or one of the per-link drops:
    image_links == rows + drops["missing-alt"] + drops["unresolvable-url"]."""

    records: int = 0  # metadata records read (cut record excluded)
    image_links: int = 0  # IMG@/src links seen
    rows: int = 0  # rows yielded
    drops: Counter = field(default_factory=Counter)  # reason -> count, reasons as in REASONS
    truncated: bool = False  # the file ends inside a record; rows before the cut were kept


def page_images(doc, target_uri: str | None, drops: Counter):
    """(page URL, [one entry per IMG@/src link of the page, in order]) of one WAT JSON document.

    An entry is (absolute URL, alt text), or None for a link that is dropped; the reason is added
    to `drops`. `target_uri` is the record's WARC-Target-URI, used when the JSON lacks one.
    Returns (page URL, None) when the document has no Links list (counted as no-links).
    """
    envelope = _get(doc, "Envelope")
    page_url = _get(envelope, "WARC-Header-Metadata").get("WARC-Target-URI") or target_uri
    html = _get(_get(_get(envelope, "Payload-Metadata"), "HTTP-Response-Metadata"), "HTML-Metadata")
    links = html.get("Links")
    if not isinstance(links, list) or not links:
        drops["no-links"] += 1
        return page_url, None
    base = page_url if isinstance(page_url, str) else ""
    head_base = _get(html, "Head").get("Base")
    if isinstance(head_base, str) and head_base.strip():
        base = _resolve(base, head_base.strip()) or base  # <base href> may itself be relative
    images = []
    for link in links:
        if not isinstance(link, dict) or link.get("path") != IMAGE_PATH:
            drops["non-image-link"] += 1
            continue
        alt, src = link.get("alt"), link.get("url")
        if not isinstance(alt, str) or not alt.strip():
            drops["missing-alt"] += 1
            images.append(None)
            continue
        url = _resolve(base, src.strip()) if isinstance(src, str) and src.strip() else None
        if url is None:
            drops["unresolvable-url"] += 1
            images.append(None)
            continue
        images.append((url, alt))
    return page_url, images


def _get(mapping, key) -> dict:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, dict) else {}


def _resolve(base: str, url: str) -> str | None:
    """`url` made absolute against `base`; None when that gives no scheme (no usable base) or the
    URL cannot be parsed. Non-http(s) results (data:, javascript:) are kept for text.py to drop as
    bad-url, as a table pool's would be."""
    try:
        absolute = urljoin(base, url)
    except ValueError:  # e.g. an unbalanced [ in the host
        return None
    return absolute if _HAS_SCHEME.match(absolute) else None


class _WatRecords(ArchiveIterator):
    """warcio's iterator, noting whether the file ended inside a gzip member: warcio itself stops
    there without an error."""

    ended_inside_member = False

    def close(self):
        decompressor = self.reader.decompressor if self.reader is not None else None
        if decompressor is not None and not decompressor.eof:
            self.ended_inside_member = True
        super().close()


def _metadata_payloads(stream: SourceStream, stats: WatStats) -> Iterator[tuple[str | None, bytes]]:
    """(WARC-Target-URI, JSON payload) of each whole metadata record, in file order; a cut record
    at the end sets stats.truncated and ends the stream."""
    # no_record_parse: a record's block is read whole, as its Content-Length counts it.
    records = _WatRecords(stream, no_record_parse=True)
    whole = 0  # records read whole, of any type
    problem = None
    try:
        for record in records:
            if record.format != "warc":  # warcio reads any text as a legacy ARC record
                raise PoolReadError(stream.path, f"not a WARC/WAT file (a record at byte "
                                                 f"{records.offset} reads as {record.format})")
            payload = record.raw_stream.read()
            # warcio hands out a record cut inside its headers (no Content-Length) or its payload.
            if record.length is None or len(payload) < record.length:
                if stream.at_eof:
                    break
                raise PoolReadError(stream.path, f"a WARC record shorter than its Content-Length "
                                                 f"before the end of the file (at byte "
                                                 f"{records.offset})")
            whole += 1
            if record.rec_type == "metadata":
                yield record.rec_headers.get_header("WARC-Target-URI"), payload
        else:
            if not records.ended_inside_member:
                return
    except (ArchiveLoadFailed, StatusAndHeadersParserException, ValueError, EOFError) as err:
        if err is stream.io_error:
            raise
        problem = err
        # At the end (within warcio's read-ahead) it is a cut file; before that, not a WAT file.
        if not stream.at_eof:
            raise PoolReadError(stream.path, f"not a readable WARC/WAT file: {err}") from err
    if not whole:
        if stream.tell() == 0:
            return  # an empty file: no records, no rows
        raise PoolReadError(stream.path, "not a WARC/WAT file, or cut before the end of its first "
                                         f"record{f': {problem}' if problem else ''}")
    stats.truncated = True
    stats.drops["truncated-file"] += 1


def read_wat(path: str, batch_rows: int = DEFAULT_BATCH_ROWS,
             stats: WatStats | None = None) -> Iterator[pa.RecordBatch]:
    """The image rows of one WAT file as RecordBatches of POOL_SCHEMA (page_url set), at most
    `batch_rows` rows each. Pass a WatStats to read the counts once the batches are consumed."""
    stats = stats if stats is not None else WatStats()
    # warcio reads the gzip members itself, so the file is opened as it is.
    stream = SourceStream(path)
    urls, captions, page_urls, source_rows = [], [], [], []
    image_index = 0  # of each IMG@/src link across the file: the rows' source_row

    def batch(n):  # the first n rows collected
        made = pool_batch(urls[:n], captions[:n], path, source_rows[:n], page_urls[:n])
        for column in (urls, captions, page_urls, source_rows):
            del column[:n]
        stats.rows += n
        return made

    try:
        for target_uri, payload in _metadata_payloads(stream, stats):
            stats.records += 1
            try:
                doc = json.loads(payload.decode("utf-8", "replace"))
            except ValueError:
                stats.drops["bad-json"] += 1
                continue
            page_url, images = page_images(doc, target_uri, stats.drops)
            for image in images or ():
                if image is not None:
                    urls.append(image[0])
                    captions.append(image[1])
                    page_urls.append(page_url if isinstance(page_url, str) else None)
                    source_rows.append(image_index)
                image_index += 1
            stats.image_links = image_index
            while len(urls) >= batch_rows:
                yield batch(batch_rows)
        if urls:
            yield batch(len(urls))
    except PoolReadError as err:
        err.rows_read = stats.rows
        raise
    finally:
        stream.close()
