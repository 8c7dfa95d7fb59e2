"""WordNet synset head lemmas: one query-list source (CLIP §2.2, "every WordNet synset").

MetaCLIP builds this part of its list with NLTK:

    for ss in wn.all_synsets():
        name = ss.name()[:ss.name().find('.')].replace('_', ' ')

NLTK names a synset after its FIRST lemma, lower-cased, with the adjective syntactic marker
(`(a)`, `(p)`, `(ip)`) removed: `able.a.01`, `dog.n.01`, `new_york.n.01`. We read the WordNet 3.0
database files (`data.noun`, `data.verb`, `data.adj`, `data.adv`, as in Debian's `wordnet-base`
at /usr/share/wordnet or a WordNet 3.0 `dict/` folder) directly, so NLTK and its downloader are
not needed.

MetaCLIP's `name[:name.find('.')]` cuts a lemma at its first dot, so `ph.d.` becomes `ph`,
`st._petersburg` becomes `st` and `.22_caliber` becomes the empty string. That is the default
here (`truncate_at_dot=True`; 86,554 distinct heads on WordNet 3.0, the empty string dropped and
counted), so the list equals MetaCLIP's and users can compare with its published metadata.
`truncate_at_dot=False` (`clipdata queries build --wordnet-full-names`) keeps the whole lemma
instead (86,571 distinct: `st. petersburg`, `ph.d.`, `.22 caliber` rather than `st`, `ph`).

Data file line format (wndb(5WN)):

    offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt ... | gloss

w_cnt is two hex digits, lex_id one hex digit. The license header lines start with spaces.

Run on its own: python -m clipdata.query_lists.wordnet /usr/share/wordnet > wordnet.txt
"""
import re
import sys

from apache_beam.io.filesystems import FileSystems

# Noun, verb, adjective, adverb: the order entries come out in (first occurrence kept).
DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")

# The synset types each file may hold; `s` is an adjective satellite, stored in data.adj.
SS_TYPES = {"data.noun": {"n"}, "data.verb": {"v"}, "data.adj": {"a", "s"}, "data.adv": {"r"}}

# wndb(5WN): the only syntactic markers, found on adjectives: prenominal, predicate, postnominal.
MARKER = re.compile(r"\((?:a|p|ip)\)$")

INSTALL_HINT = (
    "install WordNet 3.0 with `apt-get install wordnet-base` (it lands in /usr/share/wordnet) "
    "or point --wordnet at a WordNet 3.0 `dict/` folder"
)


class WordNetError(Exception):
    """A WordNet folder or data file that cannot be read as WordNet 3.0."""


def parse_synset_line(line, *, where="line"):
    """(ss_type, first word as written) of one synset line of a data file, e.g. ("a", "able(a)").

    `where` ("/usr/share/wordnet/data.adj line 31") goes into the error message.
    """
    fields = line.split(" ", 6)
    if len(fields) < 6:
        raise WordNetError(f"{where}: expected `offset lex_filenum ss_type w_cnt word lex_id ...`, "
                           f"got {line[:80]!r}")
    offset, lex_filenum, ss_type, w_cnt, word, lex_id = fields[:6]
    if not (offset.isascii() and offset.isdigit()):
        raise WordNetError(f"{where}: synset offset {offset!r} is not a decimal number")
    if not (lex_filenum.isascii() and lex_filenum.isdigit()):
        raise WordNetError(f"{where}: lex_filenum {lex_filenum!r} is not a decimal number")
    if ss_type not in ("n", "v", "a", "s", "r"):
        raise WordNetError(f"{where}: ss_type {ss_type!r} is not one of n v a s r")
    try:
        word_count = int(w_cnt, 16)
        int(lex_id, 16)
    except ValueError:
        raise WordNetError(f"{where}: w_cnt {w_cnt!r} and lex_id {lex_id!r} must be "
                           f"hexadecimal") from None
    if word_count < 1:
        raise WordNetError(f"{where}: w_cnt {w_cnt!r} says the synset has no words")
    if not MARKER.sub("", word):
        raise WordNetError(f"{where}: first word {word!r} is empty")
    return ss_type, word


def synset_head(word):
    """NLTK's synset name for a first word: marker removed, lower-cased, underscores kept."""
    return MARKER.sub("", word).lower()


def _read_data_file(folder, name):
    """Yield (line number, text) of each synset line of one data file, header lines skipped."""
    path = FileSystems.join(folder, name)
    with FileSystems.open(path) as f:
        data = f.read()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        # NLTK skips every line that starts with whitespace: the license header ("  1 This
        # software ...") and a trailing empty line.
        if not raw or raw[:1].isspace():
            continue
        try:
            yield number, raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError as e:
            raise WordNetError(f"{path} line {number}: not UTF-8 at byte {e.start} "
                               f"({raw[e.start:e.start + 4]!r})") from None


def check_folder(folder):
    """Raise WordNetError unless `folder` holds all four data files."""
    # Files, not the folder, are tested: an object store (gs://) has no folders to find.
    missing = [n for n in DATA_FILES if not FileSystems.exists(FileSystems.join(folder, n))]
    if len(missing) == len(DATA_FILES) and not FileSystems.exists(folder):
        raise WordNetError(f"WordNet folder {folder!r} does not exist; expected "
                           f"{', '.join(DATA_FILES)} in it; {INSTALL_HINT}")
    if missing:
        raise WordNetError(f"WordNet folder {folder!r} lacks {', '.join(missing)} (expected "
                           f"{', '.join(DATA_FILES)}); {INSTALL_HINT}")


def head_lemmas_and_stats(folder, *, truncate_at_dot=True):
    """All distinct synset head lemmas of a WordNet folder, and stats for the sidecar JSON.

    Entries come in file order noun, verb, adj, adv, each at its first occurrence, with
    underscores turned into spaces. Stats: synsets per data file, synsets in all, distinct heads,
    heads whose syntactic marker was removed, and (with truncate_at_dot) heads cut at a dot and
    those dropped because the cut left nothing.
    """
    check_folder(folder)
    entries, seen = [], set()
    stats = {
        "source": "wordnet",
        "folder": folder,
        "truncate_at_dot": truncate_at_dot,
        "synsets": {},
        "synsets_total": 0,
        "markers_removed": 0,
        "cut_at_dot": 0,
        "dropped_empty": 0,
    }
    for name in DATA_FILES:
        count = 0
        for number, line in _read_data_file(folder, name):
            where = f"{FileSystems.join(folder, name)} line {number}"
            ss_type, word = parse_synset_line(line, where=where)
            if ss_type not in SS_TYPES[name]:
                raise WordNetError(f"{where}: synset type {ss_type!r} does not belong in {name}")
            count += 1
            head = synset_head(word)
            if head != word.lower():
                stats["markers_removed"] += 1  # synsets whose first word had (a), (p) or (ip)
            if truncate_at_dot and "." in head:
                head = head[:head.find(".")]
                stats["cut_at_dot"] += 1  # synsets, not distinct heads
                if not head:  # `.22_caliber`: an empty entry would match every caption
                    stats["dropped_empty"] += 1
                    continue
            entry = head.replace("_", " ")
            if entry not in seen:
                seen.add(entry)
                entries.append(entry)
        if count == 0:
            raise WordNetError(f"{FileSystems.join(folder, name)}: no synset lines; is this a "
                               f"WordNet data file? {INSTALL_HINT}")
        stats["synsets"][name] = count
        stats["synsets_total"] += count
    stats["distinct_heads"] = len(entries)
    return entries, stats


def head_lemmas(folder, *, truncate_at_dot=True):
    """All distinct synset head lemmas of a WordNet folder (see head_lemmas_and_stats)."""
    return head_lemmas_and_stats(folder, truncate_at_dot=truncate_at_dot)[0]


def main(argv=None):
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Print WordNet synset head lemmas, one per line.")
    parser.add_argument("folder", help="WordNet 3.0 dict/ folder (e.g. /usr/share/wordnet)")
    parser.add_argument("--full-names", dest="truncate_at_dot", action="store_false",
                        help="keep each head whole (default: cut at its first dot, as MetaCLIP's NLTK code does)")
    args = parser.parse_args(argv)
    try:
        entries, stats = head_lemmas_and_stats(args.folder, truncate_at_dot=args.truncate_at_dot)
    except WordNetError as e:
        sys.exit(f"error: {e}")
    sys.stdout.write("".join(e + "\n" for e in entries))
    print(json.dumps(stats), file=sys.stderr)


if __name__ == "__main__":
    main()
