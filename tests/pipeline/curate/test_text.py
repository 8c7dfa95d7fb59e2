"""Caption cleaning and URL checks: the reason of every drop on hand-written rows, and clean_batch's
shortcut around ftfy giving exactly what fix_text on every caption gives."""
import random

import pyarrow as pa
import pytest

from clipdata.pipeline.curate.text import MAX_CAPTION_CHARS, clean_batch, clean_caption
from clipdata.pipeline.foundation.pool import POOL_SCHEMA, pool_batch

# (url, caption, expected: cleaned caption, or the drop reason in brackets)
CASES = [
    ("http://a.example/1.jpg", "  A  red\tbus\r\non a\u00a0road \u3000", "A red bus on a road"),
    ("https://a.example/2.jpg", "caf\u00c3\u00a9 &amp; bar", "café & bar"),
    ("https://a.example/3.jpg", "\u201cquoted\u201d \ufb01ne \uff21", "\"quoted\" fine A"),
    (" http://a.example/4.jpg\n", "url with spaces around", "url with spaces around"),
    ("HTTPS://user:pw@[2001:db8::1]:8080/p?q=1#f", "IPv6 host", "IPv6 host"),
    ("http://例え.jp/画像.jpg", "non-ASCII host and path", "non-ASCII host and path"),
    ("http://a.example/5.jpg", "x" * MAX_CAPTION_CHARS, "x" * MAX_CAPTION_CHARS),
    ("http://a.example/6.jpg", "y" * MAX_CAPTION_CHARS + "   ", "y" * MAX_CAPTION_CHARS),
    ("http://a.example/7.jpg", "z" * (MAX_CAPTION_CHARS + 1), "[caption-too-long]"),
    ("http://a.example/8.jpg", None, "[empty-caption]"),
    ("http://a.example/9.jpg", "", "[empty-caption]"),
    ("http://a.example/10.jpg", " \n\t\u2028\u3000 ", "[empty-caption]"),
    ("http://a.example/11.jpg", "\x00\x07\x1b[31m", "[empty-caption]"),  # control chars only
    (None, "no url", "[bad-url]"),
    ("", "empty url", "[bad-url]"),
    ("ftp://a.example/x.jpg", "ftp", "[bad-url]"),
    ("data:image/png;base64,AAAA", "data url", "[bad-url]"),
    ("//a.example/x.jpg", "scheme-relative", "[bad-url]"),
    ("http:///x.jpg", "no host", "[bad-url]"),
    ("http://user@/x.jpg", "userinfo, no host", "[bad-url]"),
    ("http://[::1/x.jpg", "unbalanced IPv6 bracket", "[bad-url]"),
    ("http://a.example:80a/x.jpg", "bad port", "[bad-url]"),
    ("http://a.example/a b.jpg", "space inside", "[bad-url]"),
    ("http://a.example/a\tb.jpg", "tab inside", "[bad-url]"),
    ("http://a.example/\x00.jpg", "NUL inside", "[bad-url]"),
    ("http://a.example/\u00a0.jpg", "no-break space inside", "[bad-url]"),
    ("ftp://a.example/x.jpg", None, "[bad-url]"),  # bad URL comes first
    ("http://a.example/12.jpg", "\u00e9 " * 600, "[caption-too-long]"),
]


def batch_of(rows):
    return pool_batch([r[0] for r in rows], [r[1] for r in rows], "pool.parquet", range(len(rows)))


def test_reason_per_row():
    kept, dropped = clean_batch(batch_of(CASES))
    assert kept.schema == POOL_SCHEMA and dropped.schema.names == POOL_SCHEMA.names + ["reason"]
    got = {r["source_row"]: r["caption"] for r in kept.to_pylist()}
    got.update({r["source_row"]: f"[{r['reason']}]" for r in dropped.to_pylist()})
    assert [got[i] for i in range(len(CASES))] == [c[2] for c in CASES]
    assert sorted(got) == list(range(len(CASES)))  # every row exactly once
    assert kept.num_rows + dropped.num_rows == len(CASES)
    # kept rows carry the trimmed URL; dropped rows keep the row exactly as it came in
    assert kept.to_pylist()[3]["url"] == "http://a.example/4.jpg"
    for row in dropped.to_pylist():
        assert (row["url"], row["caption"]) == CASES[row["source_row"]][:2]


def test_max_caption_chars_and_other_columns_kept():
    batch = batch_of([("http://a.example/1.jpg", "four"), ("http://a.example/2.jpg", "fives")])
    batch = batch.append_column("score", pa.array([0.5, 0.7]))
    kept, dropped = clean_batch(batch, max_caption_chars=4)
    assert kept.to_pylist() == [{"url": "http://a.example/1.jpg", "caption": "four",
                                 "source_file": "pool.parquet", "source_row": 0, "page_url": None,
                                 "score": 0.5}]
    assert dropped.column("reason").to_pylist() == ["caption-too-long"]
    assert dropped.column("score").to_pylist() == [0.7]


def test_empty_batch():
    kept, dropped = clean_batch(batch_of([]))
    assert kept.num_rows == dropped.num_rows == 0


# Pieces that exercise every fix ftfy makes, and the shortcut's edges: '&', '<', control chars,
# ESC sequences, every kind of line break and whitespace, mojibake, width, ligatures, NFC.
PIECES = [
    "a", "bus", "The", "42", " ", "  ", "\t", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85",
    "\u00a0", "\u2028", "\u2029", "\u3000", "\u200b", "\ufeff", "&", "&amp;", "&lt;b&gt;", "&nbsp;",
    "&#39;", "&eacute;", "&notanentity;", "<b>", "</b>", "<", ">", "caf\u00c3\u00a9",
    "\u00c3\u00bcber", "\u00e2\u20ac\u0153quoted\u00e2\u20ac\x9d", "voil\u00c3\u00a0 le travail",
    "\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2", "\u201ccurly\u201d", "\u2018single\u2019",
    "\ufb01", "\uff26\uff55\uff4c\uff4c", "\x1b[31m", "\x1b[0m", "\x00", "\x07", "\x7f", "\x9d",
    "e\u0301", "\u65e5\u672c\u8a9e", "\U0001f600", "\u00e9", "Ã", "Â", "\u00a9", "ÃƒÂ©",
    "sÃ³",
    "~!@#$%^*()_+{}|:\"?`-=[]\\;',./",
]


def random_captions(n, seed=0):
    rng = random.Random(seed)
    ascii_only = [p for p in PIECES if p.isascii()]
    captions = []
    for i in range(n):
        pool = ascii_only if i % 3 == 0 else PIECES  # a third take the ASCII shortcut's edges
        captions.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 10))))
    return captions


def test_same_as_fix_text_on_every_caption():
    captions = random_captions(4000)
    batch = batch_of([(f"http://a.example/{i}.jpg", c) for i, c in enumerate(captions)])
    kept, dropped = clean_batch(batch, max_caption_chars=40)
    got = {r["source_row"]: r["caption"] for r in kept.to_pylist()}
    got.update({r["source_row"]: r["reason"] for r in dropped.to_pylist()})
    for i, caption in enumerate(captions):
        reference = clean_caption(caption)
        want = "empty-caption" if not reference else (
            "caption-too-long" if len(reference) > 40 else reference)
        assert got[i] == want, (i, caption)
    assert 1000 < kept.num_rows < 4000 and dropped.num_rows > 100


@pytest.mark.parametrize("caption,cleaned", [
    ("caf\u00c3\u00a9", "café"), ("&lt;b&gt;bold&lt;/b&gt;", "<b>bold</b>"),
    ("<b>kept &amp; as is</b>", "<b>kept &amp; as is</b>"),  # ftfy leaves entities in HTML alone
    ("line\r\nbreak", "line break"),
])
def test_clean_caption(caption, cleaned):
    assert clean_caption(caption) == cleaned
    kept, _ = clean_batch(batch_of([("http://a.example/1.jpg", caption)]))
    assert kept.column("caption").to_pylist() == [cleaned]


def badness_alphabet():
    """Every character ftfy's mojibake detector looks at, plus ordinary non-ASCII text."""
    from re import _constants as c, _parser

    from ftfy import badness

    chars = set()
    tree = _parser.parse(badness.BADNESS_RE.pattern, badness.BADNESS_RE.flags)
    for alternative in tree.data[0][1][1]:
        for op, value in alternative:
            if op == c.LITERAL:
                chars.add(chr(value))
            elif op == c.IN:
                for kind, arg in value:
                    if kind == c.LITERAL:
                        chars.add(chr(arg))
                    elif kind == c.RANGE:
                        chars.update(map(chr, range(arg[0], arg[1] + 1)))
    return sorted(chars) + list("éüñçøåœßàèìòùâêîôûëïÿ東京日本語한국어Ελληνικάмосква😀🎉") + ["e\u0301", "\u2019"]


def test_fast_path_is_fix_text_on_mojibake_alphabet():
    """The shortcut's claim, checked where it is sharpest: strings of the very characters the
    mojibake detector reads, next to ordinary accented, Greek, Cyrillic, CJK and emoji text."""
    rng = random.Random(1)
    alphabet = badness_alphabet()
    words = ["the", "a", "photo", " ", " ", "-", ".", "Ã", "Â", "café", "naïve"]
    captions = []
    for _ in range(6000):
        parts = [rng.choice(alphabet) if rng.random() < 0.6 else rng.choice(words) for _ in range(rng.randint(1, 8))]
        captions.append("".join(parts))
    # Real mojibake: UTF-8 text decoded with the codecs ftfy undoes.
    for text in ["café crème", "Zürich Straße", "naïve señor", "Москва", "Ελλάδα", "“quoted” — dash"]:
        for codec in ("latin-1", "cp1252", "cp1251", "cp1253", "macroman"):
            try:
                captions.append(text.encode("utf-8").decode(codec))
            except UnicodeDecodeError:
                pass
    batch = batch_of([(f"http://a.example/{i}.jpg", c) for i, c in enumerate(captions)])
    kept, dropped = clean_batch(batch)
    got = {r["source_row"]: r["caption"] for r in kept.to_pylist()}
    for i, caption in enumerate(captions):
        reference = clean_caption(caption)
        assert got.get(i, "") == reference, (i, caption)
    # The shortcut does skip fix_text for ordinary accented and CJK text.
    from clipdata.pipeline.curate.text import _may_change

    ordinary = pa.array(["café in Zürich", "naïve résumé", "東京 tower", "😀 party", "plain words"])
    assert _may_change(ordinary).to_pylist() == [False] * 5
