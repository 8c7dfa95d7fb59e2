"""Synthetic query-list sources in the real file formats, for tests, the benchmark and the demo.

Everything is deterministic given a seed, and written in the formats the real sources come in:
- Wikipedia `pages-articles` XML dumps, plain (`.xml.bz2`, one bz2 stream) or multistream
  (header stream, one bz2 stream per 100 pages, `...-index.txt.bz2` with `offset:page_id:title`);
- articles with real wikitext markup (bold, links, infobox templates, refs, categories, headings)
  over a Zipf-distributed synthetic vocabulary, plus redirects and non-article namespace pages;
- hourly pageview dump files (`en Main_Page 42 0`);
- a WordNet 3.0 database folder (`data.noun`, `data.verb`, `data.adj`, `data.adv`).

A ~200 MB dump for the benchmark is written without holding the pages in memory:

    write_dump("enwiki-pages-articles-multistream.xml.bz2",
               iter_article_pages(60_000, seed=0), multistream=True)
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import itertools
import math
import os
import random
import re
from dataclasses import asdict, is_dataclass
from typing import Iterable, Iterator
from xml.sax.saxutils import escape

EXPORT_NS = "http://www.mediawiki.org/xml/export-0.11/"

# Wikimedia's namespace table (abridged): the header of every real dump lists it.
NAMESPACES = [
    (-2, "Media"), (-1, "Special"), (0, ""), (1, "Talk"), (2, "User"), (3, "User talk"),
    (4, "Wikipedia"), (5, "Wikipedia talk"), (6, "File"), (7, "File talk"), (10, "Template"),
    (11, "Template talk"), (14, "Category"), (15, "Category talk"),
]
NAMESPACE_NAMES = dict(NAMESPACES)

# Characters XML 1.0 cannot hold at all; a dump containing them would be unreadable.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_TEXT_ENTITIES = {'"': "&quot;"}  # MediaWiki escapes quotes in text too


# ---------------------------------------------------------------------------------------------
# Dumps


def dump_header(dbname: str = "enwiki", namespaces: list | None = None, lang: str = "en") -> str:
    """`<mediawiki ...><siteinfo>..</siteinfo>` as a real export starts (no XML declaration);
    `namespaces` (key, name) pairs in the wiki's language (default: English's)."""
    namespace_lines = "\n".join(
        f'      <namespace key="{key}" case="first-letter" />'
        if not name
        else f'      <namespace key="{key}" case="first-letter">{escape(name)}</namespace>'
        for key, name in (namespaces or NAMESPACES)
    )
    return (
        f'<mediawiki xmlns="{EXPORT_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{EXPORT_NS} http://www.mediawiki.org/xml/export-0.11.xsd" '
        f'version="0.11" xml:lang="{escape(lang)}">\n'
        "  <siteinfo>\n"
        "    <sitename>Wikipedia</sitename>\n"
        f"    <dbname>{escape(dbname)}</dbname>\n"
        f"    <base>https://{escape(lang)}.wikipedia.org/wiki/Main_Page</base>\n"
        "    <generator>MediaWiki 1.43.0-wmf.1</generator>\n"
        "    <case>first-letter</case>\n"
        "    <namespaces>\n"
        f"{namespace_lines}\n"
        "    </namespaces>\n"
        "  </siteinfo>\n"
    )


DUMP_FOOTER = "</mediawiki>\n"


def page_xml(page) -> str:
    """One `<page>` element as a real export writes it (two-space indents, revision metadata)."""
    page = _as_dict(page)
    title, text = page["title"], page["text"]
    for value in (title, text):
        if _XML_INVALID.search(value):
            raise ValueError(f"page {title!r}: text holds characters XML 1.0 cannot represent")
    page_id = int(page["page_id"])
    redirect = ""
    if page.get("redirect"):
        target = _redirect_target(text) or title
        redirect = f'    <redirect title="{escape(target, _TEXT_ENTITIES)}" />\n'
    sha1 = _sha1_base36(text)
    return (
        "  <page>\n"
        f"    <title>{escape(title)}</title>\n"
        f"    <ns>{int(page['ns'])}</ns>\n"
        f"    <id>{page_id}</id>\n"
        f"{redirect}"
        "    <revision>\n"
        f"      <id>{page_id * 10 + 1}</id>\n"
        "      <timestamp>2024-06-01T00:00:00Z</timestamp>\n"
        "      <contributor>\n"
        "        <username>SyntheticEditor</username>\n"
        "        <id>1</id>\n"
        "      </contributor>\n"
        "      <model>wikitext</model>\n"
        "      <format>text/x-wiki</format>\n"
        f'      <text bytes="{len(text.encode("utf-8"))}" sha1="{sha1}" xml:space="preserve">'
        f"{escape(text, _TEXT_ENTITIES)}</text>\n"
        f"      <sha1>{sha1}</sha1>\n"
        "    </revision>\n"
        "  </page>\n"
    )


def write_dump(
    path: str, pages: Iterable, multistream: bool = False, pages_per_stream: int = 100,
    dbname: str = "enwiki", namespaces: list | None = None, lang: str = "en",
) -> str | None:
    """Write `pages` (dicts or Page: title, ns, page_id, text, redirect) as a `.xml.bz2` dump.

    Plain: one bz2 stream of the whole document; returns None. Multistream, like Wikimedia's:
    stream 0 = header, then one stream per `pages_per_stream` pages, the last one also holding
    `</mediawiki>`; writes `<dumpname>-index.txt.bz2` next to it (dumpname = path without
    `.xml.bz2`) with an `offset:page_id:title` line per page, and returns the index path.
    `pages` may be an iterator: pages are written as they come.
    """
    if not multistream:
        compressor = bz2.BZ2Compressor(9)
        with open(path, "wb") as out:
            out.write(compressor.compress(dump_header(dbname, namespaces, lang).encode("utf-8")))
            for page in pages:
                out.write(compressor.compress(page_xml(page).encode("utf-8")))
            out.write(compressor.compress(DUMP_FOOTER.encode("utf-8")))
            out.write(compressor.flush())
        return None

    if pages_per_stream < 1:
        raise ValueError("pages_per_stream must be >= 1")
    dumpname = path[: -len(".xml.bz2")] if path.endswith(".xml.bz2") else os.path.splitext(path)[0]
    index_path = f"{dumpname}-index.txt.bz2"
    index = bz2.BZ2Compressor(9)
    with open(path, "wb") as out, open(index_path, "wb") as index_out:
        out.write(bz2.compress(dump_header(dbname, namespaces, lang).encode("utf-8")))
        batches = _batches(iter(pages), pages_per_stream)
        batch = next(batches, None)
        while batch is not None:
            following = next(batches, None)
            offset = out.tell()
            xml = "".join(page_xml(page) for page in batch)
            if following is None:
                xml += DUMP_FOOTER
            out.write(bz2.compress(xml.encode("utf-8")))
            lines = "".join(f"{offset}:{int(p['page_id'])}:{p['title']}\n" for p in map(_as_dict, batch))
            index_out.write(index.compress(lines.encode("utf-8")))
            batch = following
        index_out.write(index.flush())
    return index_path


def _batches(pages: Iterator, size: int) -> Iterator[list]:
    while batch := list(itertools.islice(pages, size)):
        yield batch


def _as_dict(page) -> dict:
    return asdict(page) if is_dataclass(page) else page


def _redirect_target(text: str) -> str | None:
    match = re.match(r"\s*#REDIRECT\s*\[\[([^\]|#]+)", text, re.IGNORECASE)
    return match.group(1).strip() if match else None


def _sha1_base36(text: str) -> str:
    # MediaWiki's <sha1> is the SHA-1 of the text in base 36, zero-padded to 31 characters.
    number = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16)
    digits = []
    while number:
        number, digit = divmod(number, 36)
        digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[digit])
    return "".join(reversed(digits)).rjust(31, "0")


# ---------------------------------------------------------------------------------------------
# Articles

_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def make_vocabulary(vocab_size: int, seed: int) -> list[str]:
    """`vocab_size` distinct lowercase pseudo-words; position = Zipf rank (0 = most frequent)."""
    rng = random.Random(f"vocabulary-{seed}")
    words, seen = [], set()
    while len(words) < vocab_size:
        # Frequent words short, rare words longer, as in natural language.
        n_syllables = 1 + min(3, int(math.log10(len(words) + 10)) - 1 + rng.randint(0, 1))
        word = "".join(rng.choice(_SYLLABLES) for _ in range(n_syllables))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


# Links and redirects point at earlier articles; the pool is capped so a benchmark-sized stream
# of pages keeps memory bounded.
MAX_LINK_TARGETS = 50_000


def iter_article_pages(
    n_pages: int, seed: int, vocab_size: int = 20_000, words_per_page: int = 300, zipf_s: float = 1.07
) -> Iterator[dict]:
    """Generate `n_pages` pages (dicts: title, ns, page_id, text, redirect), one at a time.

    About 88% are articles (ns 0) whose wikitext uses the markup plain_text must handle: bold and
    italics, piped and plain links to other titles, an infobox template, refs holding cite
    templates, headings, a File link, categories, entities (`&amp;`, `<`, quotes) and non-ASCII
    text. Prose words are drawn from a Zipf(`zipf_s`) distribution over make_vocabulary(), so word
    counts after markup stripping follow a realistic long tail. The rest: ~5% redirects
    (`#REDIRECT [[X]]` with the redirect flag) and ~7% pages in Talk (1), Wikipedia (4) and
    Category (14). Markup-only words (template parameters, ref titles) are spelled in capitals
    (`INFOBOXFIELD`, `CITETITLE`) so a test can check that stripping removed them.
    """
    rng = random.Random(f"articles-{seed}")
    vocabulary = make_vocabulary(vocab_size, seed)
    cum_weights = list(itertools.accumulate(1.0 / (rank + 1) ** zipf_s for rank in range(vocab_size)))

    def words(k: int) -> list[str]:
        return rng.choices(vocabulary, cum_weights=cum_weights, k=k)

    titles: list[str] = []  # article titles so far, for links and redirects
    for page_id in range(1, n_pages + 1):
        kind = rng.random()
        if kind < 0.05 and titles:
            target = rng.choice(titles)
            title = f"{_title(words(2))} {page_id}"
            yield dict(title=title, ns=0, page_id=page_id, redirect=True,
                       text=f"#REDIRECT [[{target}]]\n\n{{{{R from alternative name}}}}")
            continue
        if kind < 0.12:
            ns = rng.choice([1, 4, 14])
            title = f"{NAMESPACE_NAMES[ns]}:{_title(words(2))} {page_id}"
            yield dict(title=title, ns=ns, page_id=page_id, redirect=False,
                       text=f"Discussion: {' '.join(words(40))}. ~~~~\n[[Category:Meta {page_id}]]")
            continue
        title = _article_title(words, page_id, rng)
        text = _article_text(title, words, titles, rng, words_per_page, page_id)
        if len(titles) < MAX_LINK_TARGETS:
            titles.append(title)
        yield dict(title=title, ns=0, page_id=page_id, redirect=False, text=text)


def make_article_pages(
    n_pages: int, seed: int, vocab_size: int = 20_000, words_per_page: int = 300
) -> list[dict]:
    """iter_article_pages() as a list."""
    return list(iter_article_pages(n_pages, seed, vocab_size=vocab_size, words_per_page=words_per_page))


def _title(words: list[str]) -> str:
    return " ".join(words).capitalize()


def _article_title(words, page_id: int, rng: random.Random) -> str:
    # Unique (page id), with the awkward characters real titles have: colons (the index splits
    # on the first two only), "&", quotes, non-ASCII.
    base = _title(words(rng.randint(1, 3)))
    variant = rng.random()
    if variant < 0.05:
        return f"{base}: the {' '.join(words(1))} {page_id}"
    if variant < 0.08:
        return f"{base} & {' '.join(words(1))} {page_id}"
    if variant < 0.10:
        return f'"{base}" (café) {page_id}'
    return f"{base} {page_id}"


def _article_text(
    title: str, words, titles: list[str], rng: random.Random, n_words: int, page_id: int
) -> str:
    def sentence() -> str:
        tokens = words(rng.randint(6, 16))
        i = rng.randrange(len(tokens))
        style = rng.random()
        if style < 0.25 and titles:
            target = rng.choice(titles)
            tokens[i] = f"[[{target}|{tokens[i]}]]"  # piped link: only the text is prose
        elif style < 0.40:
            tokens[i] = f"[[{tokens[i]}]]"  # plain link: the title is the prose
        elif style < 0.50:
            tokens[i] = f"''{tokens[i]}''"
        elif style < 0.55:
            tokens[i] = f"{tokens[i]} &amp; {tokens[(i + 1) % len(tokens)]}"
        ref = ""
        if rng.random() < 0.15:
            ref = (f"<ref>{{{{cite web |url=https://example.org/{page_id} |title=CITETITLE "
                   f"{page_id}}}}}</ref>")
        return " ".join(tokens) + "." + ref

    parts = [
        f"{{{{Infobox thing\n| name = {title}\n| INFOBOXFIELD = INFOBOXVALUE {page_id}\n}}}}",
        f"'''{title}''' is {' '.join(words(3))}.",
    ]
    written = 0
    section = 0
    while written < n_words:
        paragraph = [sentence() for _ in range(rng.randint(2, 5))]
        written += sum(p.count(" ") + 1 for p in paragraph)
        parts.append(" ".join(paragraph))
        if rng.random() < 0.3:
            section += 1
            parts.append(f"== {' '.join(words(2)).capitalize()} ==")
    if rng.random() < 0.2:
        parts.append(f"[[File:Picture {page_id}.jpg|thumb|CAPTIONWORD {page_id}]]")
    if rng.random() < 0.1:
        parts.append("Comparison: x < y and naïve “quotes” in 東京.")
    parts.append(f"[[Category:{' '.join(words(2)).capitalize()}]]")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# Pageviews


def write_pageviews(path: str, rows: Iterable[tuple]) -> None:
    """Hourly pageview dump lines `project title views bytes` (e.g. `en Main_Page 42 0`).

    `rows`: (project, title, views) or (project, title, views, bytes); spaces in titles become
    underscores, as in the real files. A path ending in `.gz` is gzip-compressed.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="\n") as out:
        for row in rows:
            project, title, views = row[0], row[1], row[2]
            size = row[3] if len(row) > 3 else 0
            out.write(f"{project} {title.replace(' ', '_')} {int(views)} {int(size)}\n")


# ---------------------------------------------------------------------------------------------
# WordNet

WORDNET_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "s": "data.adj", "r": "data.adv"}
# Lexicographer file number per part of speech (noun.Tops = 03, verb.body = 29, adj.all = 00,
# adv.all = 02): only the format matters to readers, so one per file.
_LEX_FILENUM = {"n": 3, "v": 29, "a": 0, "s": 0, "r": 2}
_HEADER_LINES = 29


def _wordnet_header() -> str:
    # Real files start with the 29-line Princeton license, each line "  N text  "; readers skip
    # every line that starts with two spaces. This header says what the file is instead.
    text = [
        "Synthetic WordNet 3.0 format database written by clipdata.query_lists.synthetic.",
        "It is not Princeton WordNet: lemmas, glosses and pointers are generated for tests.",
        "Format: offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt",
        "[ptr...] [frames...] | gloss, with offset the byte offset of the line.",
    ]
    text += [""] * (_HEADER_LINES - len(text))
    return "".join(f"  {i} {line}  \n" for i, line in enumerate(text, start=1))


def write_wordnet(folder: str, synsets: list[dict]) -> dict[str, list[int]]:
    """Write data.noun / data.verb / data.adj / data.adv in WordNet 3.0's format into `folder`.

    Each synset is a dict: `pos` ("n", "v", "a", "s" adjective satellite, "r"), `words` (lemmas;
    spaces become underscores; adjectives may end in a marker "(a)", "(p)", "(ip)"), `gloss`, and
    optional `pointers`: [(symbol, i), ...] with i the position of the target synset in
    `synsets` (e.g. ("@", 0) = hypernym), and for verbs optional `frames`: [(f_num, w_num), ...]
    (default [(2, 0)]: "Somebody ----s"). Returns each synset's byte offset, per file name.
    """
    os.makedirs(folder, exist_ok=True)
    header = _wordnet_header()
    by_file: dict[str, list[int]] = {name: [] for name in sorted(set(WORDNET_FILES.values()))}
    for i, synset in enumerate(synsets):
        by_file[WORDNET_FILES[synset["pos"]]].append(i)

    # Every offset in a line is 8 digits wide, so a line's length does not depend on the offsets:
    # lay the lines out with placeholders first, then write them with the real offsets.
    placeholders = dict.fromkeys(range(len(synsets)), 0)
    offsets: dict[int, int] = {}
    for name, members in by_file.items():
        position = len(header.encode("utf-8"))
        for i in members:
            offsets[i] = position
            position += len(_synset_line(synsets, i, placeholders).encode("utf-8"))
    for name, members in by_file.items():
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="\n") as out:
            out.write(header)
            for i in members:
                out.write(_synset_line(synsets, i, offsets))
    return {name: [offsets[i] for i in members] for name, members in by_file.items()}


def _synset_line(synsets: list[dict], i: int, offsets: dict[int, int]) -> str:
    synset = synsets[i]
    pos = synset["pos"]
    words = [w.replace(" ", "_") for w in synset["words"]]
    if not 1 <= len(words) <= 255:
        raise ValueError(f"synset {i}: a synset has 1..255 words")
    fields = [f"{offsets[i]:08d}", f"{_LEX_FILENUM[pos]:02d}", pos, f"{len(words):02x}"]
    for word in words:
        fields += [word, "0"]
    pointers = synset.get("pointers", [])
    fields.append(f"{len(pointers):03d}")
    for symbol, target in pointers:
        # Pointers name a satellite's part of speech as "a", as the real data.adj does.
        target_pos = "a" if synsets[target]["pos"] == "s" else synsets[target]["pos"]
        fields += [symbol, f"{offsets[target]:08d}", target_pos, "0000"]
    if pos == "v":
        frames = synset.get("frames", [(2, 0)])
        fields.append(f"{len(frames):02d}")
        for f_num, w_num in frames:
            fields += ["+", f"{f_num:02d}", f"{w_num:02x}"]
    return " ".join(fields) + f" | {synset['gloss']}  \n"


def make_synsets(n_synsets: int, seed: int) -> list[dict]:
    """`n_synsets` synsets over all parts of speech with hypernym pointers, multi-word lemmas,
    adjective markers and an occasional lemma shared between synsets (as "bank" is)."""
    rng = random.Random(f"wordnet-{seed}")
    vocabulary = make_vocabulary(max(50, n_synsets * 2), seed + 1)
    synsets = []
    for i in range(n_synsets):
        pos = rng.choice("nnnnvvaasr")
        words = [rng.choice(vocabulary) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.2:
            words[0] = f"{words[0]} {rng.choice(vocabulary)}"  # a collocation: "ice cream"
        if pos in "as" and rng.random() < 0.2:
            words[-1] += rng.choice(["(a)", "(p)", "(ip)"])
        pointers = []
        same_pos = [j for j in range(i) if synsets[j]["pos"] == pos]
        if pos in "nv" and same_pos:
            pointers.append(("@", rng.choice(same_pos)))
        gloss = " ".join(rng.choice(vocabulary) for _ in range(6)) + '; "an example"'
        synsets.append(dict(pos=pos, words=list(dict.fromkeys(words)), pointers=pointers, gloss=gloss))
    return synsets
