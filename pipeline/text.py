"""Clean a pool's captions and check its URLs, a RecordBatch at a time.

clean_batch(batch) -> (kept, dropped). Every input row is in exactly one of them.

    kept     the rows with a usable URL and caption; caption cleaned (clean_caption), URL with
             surrounding whitespace removed
    dropped  the other rows as they came in, plus `reason`, the first that applies of:
               bad-url           null; not http:// or https://; no host; unparseable host or port;
                                 whitespace or a control character inside it
               empty-caption     null, or nothing left after cleaning
               caption-too-long  over max_caption_chars characters after cleaning

A caption is cleaned as clean_caption() says: ftfy.fix_text (mojibake such as "cafÃ©" -> "café",
HTML entities, curly quotes, control characters), then every run of whitespace (Python's
str.isspace: newlines, tabs, no-break and ideographic spaces ...) becomes one space, ends stripped.

ftfy is the slow part: fix_text takes 15-70 us a caption (one core), the rest of clean_batch
about 1.5 us a row. fix_text can only change an ASCII caption through `&` (HTML entities), control
characters and ESC sequences, or line breaks (\\r\\n -> \\n, which whitespace folding turns into
one space anyway), so captions of printable ASCII, tabs and newlines without `&` skip it; the result
is the same as calling fix_text on every caption (tests/test_text.py checks this on thousands of
strings). Captions repeated within a batch are fixed once.
"""
from __future__ import annotations

import ftfy
import pyarrow as pa
import pyarrow.compute as pc

# CLIP's text encoder reads 77 BPE tokens, roughly 300-400 characters of English, so nothing past
# that reaches training. 1000 leaves room for captions whose matching query word comes late, and
# drops what is not a caption at all: pasted page bodies and SEO keyword lists, which also make
# substring matching slow.
MAX_CAPTION_CHARS = 1000
REASONS = ("bad-url", "empty-caption", "caption-too-long")

# Python's whitespace (str.isspace / str.split), spelled for RE2, pyarrow's regex engine.
_WHITESPACE = "".join(f"\\x{{{c:x}}}" for c in range(0x110000) if chr(c).isspace())
_WHITESPACE_RUN = f"[{_WHITESPACE}]+"
# Captions fix_text leaves as they are, up to line breaks: printable ASCII without '&', \t \n \r.
_MAY_NEED_FTFY = r"[^\t\n\r\x20-\x25\x27-\x7e]"
# http(s)://[userinfo@]host[:port][/?#...]; host a bracketed IPv6 literal or a name.
_URL = (r"^(?i:https?)://(?:[^/?#@]*@)?(?:\[[0-9A-Fa-f:.]+\]|[^/?#@:\[\]]+)(?::[0-9]*)?"
        r"(?:[/?#].*)?$")
_URL_BAD_CHAR = r"[\s\p{Z}\p{Cc}]"


def clean_caption(caption: str) -> str:
    """The cleaning rule for one caption; clean_batch gives the same result, faster."""
    return " ".join(ftfy.fix_text(caption).split())


def clean_batch(batch: pa.RecordBatch, max_caption_chars: int = MAX_CAPTION_CHARS
                ) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """(kept, dropped) rows of a batch with `url` and `caption` string columns (POOL_SCHEMA or
    any schema holding them); dropped has the batch's columns plus `reason`."""
    urls = pc.utf8_trim_whitespace(batch.column("url"))
    url_ok = pc.and_kleene(pc.match_substring_regex(urls, _URL),
                           pc.invert(pc.match_substring_regex(urls, _URL_BAD_CHAR)))
    url_ok = pc.fill_null(url_ok, False)

    # ftfy only where it can change something, and only for rows whose URL is usable.
    raw = batch.column("caption")
    needs_ftfy = pc.fill_null(pc.and_(pc.match_substring_regex(raw, _MAY_NEED_FTFY), url_ok), False)
    captions = _fix_where(raw, needs_ftfy)
    captions = pc.utf8_trim(pc.replace_substring_regex(captions, _WHITESPACE_RUN, " "), " ")

    length = pc.utf8_length(captions)
    empty = pc.fill_null(pc.equal(length, 0), True)
    too_long = pc.fill_null(pc.greater(length, max_caption_chars), False)
    reason = pc.case_when(
        pc.make_struct(pc.invert(url_ok), empty, too_long),
        pa.scalar("bad-url"), pa.scalar("empty-caption"), pa.scalar("caption-too-long"))
    keep = pc.is_null(reason)

    names = batch.schema.names
    cleaned = batch.set_column(names.index("url"), "url", urls)
    cleaned = cleaned.set_column(names.index("caption"), "caption", captions)
    kept = cleaned.filter(keep)
    dropped = batch.append_column("reason", reason).filter(pc.invert(keep))
    return kept, dropped


def _fix_where(captions: pa.Array, mask: pa.Array) -> pa.Array:
    """`captions` with ftfy.fix_text applied where `mask` is true."""
    todo = pc.filter(captions, mask).to_pylist()
    if not todo:
        return captions
    fixed = {}
    for text in todo:
        if text not in fixed:
            fixed[text] = ftfy.fix_text(text)
    return pc.replace_with_mask(captions, mask, pa.array([fixed[t] for t in todo], pa.string()))
