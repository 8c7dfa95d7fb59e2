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
about 1.5 us a row. So fix_text runs only on captions it could change (see _may_change_pattern):
ones holding a character one of its fixers rewrites (`&` for HTML entities, control characters,
curly quotes, ligatures, full-width forms, odd line breaks...), a character its mojibake detector
needs to see, or that are not in NFC. Plain ASCII and ordinary accented or CJK text skip it; the
result is the same as calling fix_text on every caption (tests/pipeline/curate/test_text.py checks this on
thousands of strings). Captions repeated within a batch are fixed once.
"""
from __future__ import annotations

import functools
import unicodedata

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
# A caption the whitespace rule changes: other whitespace than " ", two spaces, or a space at an end.
_WHITESPACE_TO_FIX = "[" + _WHITESPACE.replace("\\x{20}", "") + "]|  |^ | $"
# The fallback when ftfy's internals are not what _may_change_pattern expects: every caption with
# a character outside printable ASCII (plus tab and line breaks), or with '&', goes to fix_text.
_MAY_NEED_FTFY = r"[^\t\n\r\x20-\x25\x27-\x7e]"
# http(s)://[userinfo@]host[:port][/?#...]; host a bracketed IPv6 literal or a name; nowhere
# whitespace, a separator or a control character (_URL_BAD_CHAR, left out of every class that
# could take one, so that one regex pass checks both).
_URL_BAD_CHAR = r"[\s\p{Z}\p{Cc}]"
_URL = (r"^(?i:https?)://(?:[^/?#@\s\p{Z}\p{Cc}]*@)?(?:\[[0-9A-Fa-f:.]+\]|[^/?#@:\[\]\s\p{Z}\p{Cc}]+)"
        r"(?::[0-9]*)?(?:[/?#][^\s\p{Z}\p{Cc}]*)?$")


def clean_caption(caption: str) -> str:
    """The cleaning rule for one caption; clean_batch gives the same result, faster."""
    return " ".join(ftfy.fix_text(caption).split())


def clean_batch(batch: pa.RecordBatch, max_caption_chars: int = MAX_CAPTION_CHARS,
                patterns: tuple[str, str] | None = None) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """(kept, dropped) rows of a batch with `url` and `caption` string columns (POOL_SCHEMA or
    any schema holding them); dropped has the batch's columns plus `reason`. `patterns` is
    fast_path_patterns(), worked out once by the caller (0.3 s) rather than once per process."""
    urls = pc.utf8_trim_whitespace(batch.column("url"))
    url_ok = pc.fill_null(pc.match_substring_regex(urls, _URL), False)

    # Most captions need neither ftfy nor whitespace squeezing: one regex pass over the column
    # finds the few that might (_attention_pattern), and only those are looked at closer.
    raw = batch.column("caption")
    patterns = patterns or fast_path_patterns()
    attention = pc.fill_null(pc.and_(pc.match_substring_regex(raw, _attention_pattern(patterns)), url_ok), False)
    captions = raw
    if pc.any(attention).as_py():
        closer = pc.filter(raw, attention)
        # ftfy only where it can change something, and only for rows whose URL is usable.
        fixed = _fix_where(closer, _may_change(closer, patterns))
        captions = pc.replace_with_mask(raw, attention, _squeeze_whitespace(fixed))

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
    dropped = batch.append_column("reason", reason)
    if pc.all(keep).as_py():  # the usual case; a filter would copy every string
        return cleaned, dropped.slice(0, 0)
    return cleaned.filter(keep), dropped.filter(pc.invert(keep))


def _squeeze_whitespace(captions: pa.Array) -> pa.Array:
    """Every whitespace run as one space, ends stripped; the regex replace only where it changes
    something (most captions are already clean, and the replace is the slow part)."""
    todo = pc.fill_null(pc.match_substring_regex(captions, _WHITESPACE_TO_FIX), False)
    if not pc.any(todo).as_py():
        return captions
    squeezed = pc.utf8_trim(pc.replace_substring_regex(pc.filter(captions, todo), _WHITESPACE_RUN, " "), " ")
    return pc.replace_with_mask(captions, todo, squeezed)


@functools.lru_cache(maxsize=4)
def _attention_pattern(patterns: tuple[str, str]) -> str:
    """Captions the cleaning might change match this: a character ftfy might change, one that can
    be off NFC, whitespace to squeeze (fix_text itself only changes captions of the first two)."""
    return "|".join([*patterns, _WHITESPACE_TO_FIX])


# Bump when what fast_path_patterns() returns changes for the same ftfy and Unicode versions
# (callers cache it by these three).
FAST_PATH_VERSION = 1


def fast_path_patterns() -> tuple[str, str]:
    """The two character classes the ftfy shortcut needs: (_may_change_pattern(),
    _maybe_not_nfc_pattern()); a pure function of the ftfy and Unicode versions."""
    return _may_change_pattern(), _maybe_not_nfc_pattern()


def _may_change(captions: pa.Array, patterns: tuple[str, str] | None = None) -> pa.Array:
    """Per caption: could fix_text change it? (False may be trusted, True is conservative.)"""
    may_change, maybe_not_nfc = patterns or fast_path_patterns()
    by_char = pc.fill_null(pc.match_substring_regex(captions, may_change), False)
    # NFC is the last step of fix_text. (pyarrow's utf8_normalize cannot be used for the check:
    # pyarrow 25 returns decomposed text for "NFC".) Only captions holding a character that can
    # be off NFC (_maybe_not_nfc_pattern) need the check.
    other = pc.and_(pc.fill_null(pc.match_substring_regex(captions, maybe_not_nfc), False), pc.invert(by_char))
    if not pc.any(other).as_py():
        return by_char
    not_nfc = [not unicodedata.is_normalized("NFC", c) for c in pc.filter(captions, other).to_pylist()]
    return pc.or_(by_char, pc.replace_with_mask(pa.array([False] * len(captions)), other, pa.array(not_nfc)))


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


# --------------------------------------------------------------------------------------------
# Which captions fix_text could change.
#
# With ftfy's default config, fix_text(c) == c unless c holds a character of one of these kinds:
#  - one that a character-level fixer rewrites: HTML unescaping needs '&'; fix_c1_controls,
#    fix_latin_ligatures, fix_character_width, uncurl_quotes, fix_line_breaks, fix_surrogates,
#    remove_terminal_escapes and remove_control_chars each act on given characters, found here by
#    running each fixer on every character of the BMP and SMP (0.2 s, once per process);
#  - one its mojibake detector (ftfy.badness.BADNESS_RE) needs to see: fix_encoding does nothing
#    unless that regex matches, and every alternative of the regex requires one character from
#    some class; we take, for each alternative, its class with the fewest letters, so ordinary
#    accented text ("café", "Zürich") usually needs none of them;
#  - a character past U+1FFFF (rare; not scanned), or a caption not in NFC (checked apart).


def _fixer_triggers() -> set[int]:
    from ftfy import chardata, fixes

    fixers = [fixes.fix_c1_controls, fixes.fix_latin_ligatures, fixes.fix_character_width,
              fixes.uncurl_quotes, fixes.fix_line_breaks, fixes.fix_surrogates,
              fixes.remove_terminal_escapes, fixes.remove_control_chars]
    triggers = {ord("&"), 0x1B}
    for code in range(0x20000):
        char = chr(code)
        if any(fixer(char) != char for fixer in fixers):
            triggers.add(code)
    triggers.update(code for code in chardata.CONTROL_CHARS if isinstance(code, int))
    return triggers


def _item_chars(item) -> set[int] | None:
    """The characters one regex item must consume, or None when it is not a plain set."""
    from re import _constants as c

    op, value = item
    if op == c.LITERAL:
        return {value}
    if op == c.IN:
        chars: set[int] = set()
        for kind, arg in value:
            if kind == c.LITERAL:
                chars.add(arg)
            elif kind == c.RANGE:
                chars.update(range(arg[0], arg[1] + 1))
            else:  # NEGATE, CATEGORY (\s, \w): too broad to require
                return None
        return chars
    if op == c.MAX_REPEAT and value[0] >= 1 and len(value[2]) == 1:
        return _item_chars(value[2][0])
    return None


def _commonness(code: int) -> int:
    """How often a character turns up in ordinary captions, roughly: ASCII always, accented Latin
    letters often, other letters sometimes, symbols rarely."""
    if code < 0x80:
        return 1000
    if chr(code).isalpha():
        return 50 if code <= 0x24F else 10
    return 1


def _badness_requirements() -> set[int]:
    """One required character class per alternative of ftfy's BADNESS_RE, unioned."""
    from re import _constants as c, _parser

    from ftfy import badness

    tree = _parser.parse(badness.BADNESS_RE.pattern, badness.BADNESS_RE.flags)
    if len(tree.data) != 1 or tree.data[0][0] != c.BRANCH:
        raise ValueError("unexpected BADNESS_RE shape")
    required: set[int] = set()
    for alternative in tree.data[0][1][1]:
        sets = [chars for chars in map(_item_chars, alternative) if chars]
        if not sets:
            raise ValueError("an alternative of BADNESS_RE requires no particular character")
        required |= min(sets, key=lambda chars: sum(map(_commonness, chars)))
    # The one anchored alternative (^[ÃÂ] ) must not depend on where a caption starts.
    required.update(map(ord, "ÃÂ"))
    return required


def _as_re2_class(codes: set[int]) -> str:
    ranges, codes = [], sorted(codes)
    start = previous = codes[0]
    for code in codes[1:]:
        if code != previous + 1:
            ranges.append((start, previous))
            start = code
        previous = code
    ranges.append((start, previous))
    return "[" + "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges) \
        + "\\x{20000}-\\x{10ffff}]"


@functools.lru_cache(maxsize=1)
def _maybe_not_nfc_pattern() -> str:
    """An RE2 character class: a caption without any of these is in NFC.

    A string is in NFC when none of its characters has NFC_Quick_Check No or Maybe and none has a
    non-zero combining class (nothing to reorder). No: the characters NFC changes on their own;
    Maybe: the second character of a canonical composition pair, Hangul medial vowels and final
    consonants included. Past U+1FFFF every caption goes to fix_text anyway.
    """
    codes = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    for code in range(0x20000):
        char = chr(code)
        if unicodedata.combining(char) or unicodedata.normalize("NFC", char) != char:
            codes.add(code)
        decomposition = unicodedata.decomposition(char).split()
        if len(decomposition) == 2 and not decomposition[0].startswith("<"):
            codes.add(int(decomposition[1], 16))
    return _as_re2_class(codes)


@functools.lru_cache(maxsize=1)
def _may_change_pattern() -> str:
    """An RE2 character class: a caption without any of these is one fix_text leaves alone."""
    try:
        codes = _fixer_triggers() | _badness_requirements()
    except (ImportError, AttributeError, ValueError, TypeError):
        return _MAY_NEED_FTFY  # another ftfy: fix every caption that is not plain ASCII
    codes |= set(range(0x00, 0x09)) | {0x0B, 0x0C} | set(range(0x0E, 0x20)) | {0x7F}
    return _as_re2_class(codes)
