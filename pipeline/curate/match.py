"""Which query-list entries occur in a caption: MetaCLIP's substring rule, matched in batches.

The rule (facebookresearch/MetaCLIP `substr_matching.py`), reproduced exactly:

    spaced = " " + caption + " "
    for p in ", . ; : ? ! `":   spaced = spaced.replace(p, " " + p + " ")
    for c in "\\t \\n \\r":      spaced = spaced.replace(c, " ")
    entry i matches  <=>  " " + entries[i] + " " in spaced

Every matching entry counts, not only the longest; ids are list positions, so a string that is in
the list twice matches under both ids. Matching is case-sensitive unless `lowercase=True`, which
lowercases the entries once at build and every caption with `str.lower` before spacing.

Two matchers give the same answers:
- `ReferenceMatcher`: MetaCLIP's own approach, an Aho-Corasick automaton over `" " + entry + " "`
  run on each spaced caption (pyahocorasick). Kept as the definition to test against.
- `Matcher`: the fast one. Splitting the spaced caption on single spaces turns the rule into a
  question about token sequences: `" " + e + " "` occurs in `spaced` exactly when `e.split(" ")`
  is a run of consecutive tokens of `spaced[1:-1].split(" ")` (consecutive spaces give empty
  tokens on both sides, so `"big dog"` does not match `"big  dog"` and `" dog"` matches
  `"a  dog"`). Entries become paths in a trie over token ids. A batch of captions is joined into
  one UTF-8 buffer whose token boundaries numpy finds without building the spaced text; each
  token's bytes (packed into uint64 words, not hashed) give its id, and the trie is walked from
  every token at once, one depth per numpy step, only positions still on a path going further.
  Every comparison is of whole bytes or ids, so there are no hash collisions to rule out.
  Entries that no spaced caption can contain (a tab or newline in them, or a punctuation mark
  inside a word, like "dog," or "St.") are left out of the trie.

    matcher = Matcher(entries)                      # once per worker (Beam DoFn.setup)
    offsets, entry_ids = matcher.match_batch(captions)
    entry_ids[offsets[i]:offsets[i + 1]]            # caption i's matched ids, ascending
"""
from __future__ import annotations

import itertools
import re
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PUNCTUATION = ",.;:?!`"  # each is wrapped in spaces
BLANKS = "\t\n\r"  # each becomes one space

_SPECIAL = re.compile("[" + re.escape(PUNCTUATION + BLANKS) + "]")

# Caption separator inside a batch. Captions' own newlines become spaces before joining, and no
# entry that contains a newline can match (the spaced text never has one), so the token "\n"
# always marks the border between two captions.
_SEPARATOR = "\n"
_UNKNOWN, _BORDER = -1, -2

# Fibonacci hashing: multiply by 2^64 / golden ratio, keep the top bits.
_FIB = np.uint64(0x9E3779B97F4A7C15)


def spacing(caption: str) -> str:
    """MetaCLIP's spaced text for one caption."""
    spaced = f" {caption} "
    for punct in PUNCTUATION:
        spaced = spaced.replace(punct, f" {punct} ")
    for blank in BLANKS:
        spaced = spaced.replace(blank, " ")
    return spaced


def check_entries(entries: Iterable[str], lowercase: bool = False) -> list[str]:
    """The entries as the matchers use them; an empty or non-string entry is refused by id.

    The empty entry is refused rather than matched by the letter of the rule (it would match any
    caption with two consecutive spaces), since it can only come from a broken list.
    """
    checked = []
    for entry_id, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise TypeError(f"query list entry {entry_id} is {type(entry).__name__}, not str: {entry!r}")
        if not entry:
            raise ValueError(f"query list entry {entry_id} is the empty string; remove it from the list")
        checked.append(entry.lower() if lowercase else entry)
    return checked


def _clean_captions(captions: Sequence) -> list[str]:
    # None (a null in an Arrow column) is a caption with no text: it matches nothing.
    if isinstance(captions, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_string(captions.type) or pa.types.is_large_string(captions.type):
            # Every value is a str: only nulls need replacing.
            return pc.fill_null(captions, "").to_pylist() if captions.null_count else captions.to_pylist()
        captions = captions.to_pylist()
    cleaned = ["" if caption is None else caption for caption in captions]
    for i, caption in enumerate(cleaned):
        if not isinstance(caption, str):
            raise TypeError(f"caption {i} is {type(caption).__name__}, not str: {caption!r}")
    return cleaned


def _to_csr(per_caption: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(per_caption) + 1, dtype=np.int64)
    np.cumsum([len(ids) for ids in per_caption], out=offsets[1:])
    entry_ids = np.fromiter(itertools.chain.from_iterable(per_caption), dtype=np.int32, count=int(offsets[-1]))
    return offsets, entry_ids


class ReferenceMatcher:
    """MetaCLIP's matcher: Aho-Corasick over `" " + entry + " "` on each spaced caption.

    Unlike MetaCLIP's `add_word(key, (idx, key))`, which keeps only the last id of a repeated
    string, every id of a repeated string is kept.
    """

    def __init__(self, entries: Iterable[str], lowercase: bool = False):
        import ahocorasick

        self.lowercase = lowercase
        ids_of_key: dict[str, list[int]] = {}
        for entry_id, entry in enumerate(check_entries(entries, lowercase)):
            ids_of_key.setdefault(f" {entry} ", []).append(entry_id)
        self.automaton = ahocorasick.Automaton()
        for key, ids in ids_of_key.items():
            self.automaton.add_word(key, ids)
        self.automaton.make_automaton()

    def match(self, caption: str | None) -> list[int]:
        if not caption:
            return []
        spaced = spacing(caption.lower() if self.lowercase else caption)
        matched = set()
        for _, ids in self.automaton.iter(spaced):
            matched.update(ids)
        return sorted(matched)

    def match_batch(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return _to_csr([self.match(caption) for caption in _clean_captions(captions)])


class _KeyMap:
    """Exact map from keys of one or more uint64 columns to int32 values; missing keys give -1.

    A table of about twice as many slots as keys, indexed by a multiplicative hash of the key,
    holds one key per slot; keys whose slot was taken go to a smaller map of the same kind with
    another hash. A lookup is a few whole-array numpy steps, and only queries whose slot
    overflowed look further.
    """

    def __init__(self, columns: tuple[np.ndarray, ...], values: np.ndarray, level: int = 0):
        values = np.asarray(values, dtype=np.int32)
        columns = tuple(np.asarray(column, dtype=np.uint64) for column in columns)
        self.seed = np.uint64((0x632BE59BD9B4E019 * (level + 1)) & 0xFFFFFFFFFFFFFFFF)
        bits = max(1, len(values).bit_length() + 1)
        self.shift = np.uint64(64 - bits)
        slot = self._slot(columns)
        order = np.argsort(slot, kind="stable")
        first = np.ones(len(order), dtype=bool)
        first[1:] = slot[order[1:]] != slot[order[:-1]]
        placed, rest = order[first], order[~first]
        self.keys = tuple(np.zeros(1 << bits, dtype=np.uint64) for _ in columns)
        for mine, column in zip(self.keys, columns):
            mine[slot[placed]] = column[placed]
        self.values = np.full(1 << bits, -1, dtype=np.int32)
        self.values[slot[placed]] = values[placed]
        self.overflowed = np.zeros(1 << bits, dtype=bool)
        self.overflowed[slot[rest]] = True
        if level > 32:  # distinct keys stop colliding after a few levels; equal ones never do
            raise ValueError("_KeyMap keys must be distinct")
        self.overflow = _KeyMap(tuple(c[rest] for c in columns), values[rest], level + 1) if len(rest) else None

    def _slot(self, columns: tuple[np.ndarray, ...]) -> np.ndarray:
        mixed = (columns[0] ^ self.seed) * _FIB
        for column in columns[1:]:
            mixed ^= column
            mixed *= _FIB
        mixed >>= self.shift
        return mixed.view(np.int64)

    def lookup(self, columns: tuple[np.ndarray, ...]) -> np.ndarray:
        slot = self._slot(columns)
        equal = self.keys[0][slot] == columns[0]
        for mine, column in zip(self.keys[1:], columns[1:]):
            equal &= mine[slot] == column
        found = np.where(equal, self.values[slot], -1)
        if self.overflow is not None:
            further = np.flatnonzero(self.overflowed[slot] & ~equal)
            if len(further):
                found[further] = self.overflow.lookup(tuple(column[further] for column in columns))
        return found


# Byte classes of the joined batch (UTF-8, so a multi-byte character never looks like one of
# these): 1 = becomes a space; 2 = stands alone between spaces (the punctuation, and the caption
# separator, which is spaced out the same way and so becomes a token of its own).
_BYTE_CLASS = np.zeros(256, dtype=np.uint8)
_BYTE_CLASS[[ord(" "), ord("\t"), ord("\r")]] = 1
_BYTE_CLASS[[ord(p) for p in PUNCTUATION + _SEPARATOR]] = 2
_IS_CUT = bytes(_BYTE_CLASS.astype(bool))  # a bytes.translate table: 1 where a byte cuts
_IS_ALONE = _BYTE_CLASS == 2
# Low `n` bytes of a little-endian uint64, n = 0..8.
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=np.uint64)
# Tokens are keyed by their bytes, 8 per uint64 word, in tiers by byte length: up to 7 bytes
# (length packed into the top byte), 16 and 32; longer tokens go through a dict.
_TIERS = (7, 16, 32)
_TIER_OF_LENGTH = np.searchsorted(np.array(_TIERS), np.arange(_TIERS[-1] + 2)).astype(np.uint8)


def _encode(text: str) -> bytes:
    # surrogatepass: a caption may hold lone surrogates; the encoding stays one-to-one.
    return text.encode("utf-8", "surrogatepass")


def _words(data: bytes) -> np.ndarray:
    """`words[i]` = the 8 bytes of `data` from offset i as a little-endian uint64, for every i up
    to len(data) + 32 (zeros past the end), so any token's words can be read without a bound check."""
    padded = data + bytes(_TIERS[-1] + 8)
    return np.ndarray((len(data) + _TIERS[-1] + 1,), dtype="<u8", buffer=padded, strides=(1,))


def _split_spaced(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(start, byte length) of every token of the spaced text, without building it.

    `spacing` turns a class-1 byte into one space and a class-2 byte b into " b ", and tokens
    are what lies between single spaces. So a class-1 byte ends one token and starts the next
    one byte later; a class-2 byte ends one token, is a token, and starts the next right after.
    """
    at = np.flatnonzero(np.frombuffer(data.translate(_IS_CUT), dtype=np.bool_))
    alone = _IS_ALONE[np.frombuffer(data, dtype=np.uint8)[at]]
    n_alone = np.cumsum(alone)
    # Token `ends[first[j]]` ends at cut j; a class-2 cut adds one more token after it.
    first = np.arange(len(at)) + n_alone - alone
    n = len(at) + (int(n_alone[-1]) if len(at) else 0) + 1
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    starts[0], ends[-1] = 0, len(data)
    ends[first] = at
    starts[first + 1] = at + ~alone
    at_alone, first_alone = at[alone], first[alone] + 1
    ends[first_alone] = at_alone + 1
    starts[first_alone + 1] = at_alone + 1
    return starts, ends - starts


class _TokenIds:
    """Exact map from a token's UTF-8 bytes to its vocabulary id, vectorised over a batch.

    A token of up to 7 bytes is keyed by one uint64: its bytes and its length. A longer one, up
    to 32 bytes, by its bytes in 2 or 4 uint64 words (zero past its end) and its length. Longer
    tokens go through a dict. No key is a hash, so there are no collisions to rule out.
    """

    def __init__(self, tokens: list[str], ids: np.ndarray):
        encoded = [_encode(token) for token in tokens]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        starts = np.cumsum(lengths) - lengths
        words = _words(b"".join(encoded))
        tier_of = _tier_of(lengths)
        self.maps = []
        for tier, longest in enumerate(_TIERS):
            picked = np.flatnonzero(tier_of == tier)
            self.maps.append(_KeyMap(_token_key(words, starts[picked], lengths[picked], longest), ids[picked]))
        self.long = {encoded[i]: int(ids[i]) for i in np.flatnonzero(tier_of == len(_TIERS))}

    def lookup(self, data: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        words = _words(data)
        ids = np.full(len(starts), _UNKNOWN, dtype=np.int64)
        tier_of = _tier_of(lengths)
        for tier, (longest, tier_map) in enumerate(zip(_TIERS, self.maps)):
            picked = np.flatnonzero(tier_of == tier)
            ids[picked] = tier_map.lookup(_token_key(words, starts[picked], lengths[picked], longest))
        if self.long:
            for i in np.flatnonzero(tier_of == len(_TIERS)).tolist():
                ids[i] = self.long.get(data[starts[i]:starts[i] + lengths[i]], _UNKNOWN)
        return ids


def _tier_of(lengths: np.ndarray) -> np.ndarray:
    """0 for tokens of up to 7 bytes, 1 up to 16, 2 up to 32, 3 longer."""
    return _TIER_OF_LENGTH[np.minimum(lengths, _TIERS[-1] + 1)]


def _token_key(words: np.ndarray, starts: np.ndarray, lengths: np.ndarray, longest: int) -> tuple[np.ndarray, ...]:
    """Key columns of tokens of at most `longest` bytes (see `_TokenIds`)."""
    if longest < 8:
        return ((words[starts] & _LOW_BYTES[lengths]) | (lengths.astype(np.uint64) << np.uint64(56)),)
    columns = [words[starts]]  # a token in this tier has at least 8 bytes
    for offset in range(8, longest, 8):
        columns.append(words[starts + offset] & _LOW_BYTES[np.clip(lengths - offset, 0, 8)])
    columns.append(lengths.astype(np.uint64))
    return tuple(columns)


class Matcher:
    """Fast exact matcher: a token trie walked over a whole batch of captions with numpy.

    Build once per worker (Beam `DoFn.setup`) or pickle a built one (plain numpy arrays).
    `match_batch` gives the same ids as `ReferenceMatcher` for every caption.
    """

    # Captions matched per numpy pass; bounds the working memory of one huge batch.
    chunk_size = 50_000

    def __init__(self, entries: Iterable[str], lowercase: bool = False):
        self.lowercase = lowercase
        checked = check_entries(entries, lowercase)
        self.n_entries = len(checked)

        # One trie path per distinct string; a string's "group" lists its entry ids.
        vocab: dict[str, int] = {}
        owners: list[list[int]] = []
        group_of: dict[str, int] = {}
        paths: list[list[int]] = []
        for entry_id, entry in enumerate(checked):
            group = group_of.get(entry)
            if group is not None:
                owners[group].append(entry_id)
            elif _can_match(entry):
                group_of[entry] = len(owners)
                owners.append([entry_id])
                paths.append([vocab.setdefault(token, len(vocab)) for token in entry.split(" ")])
        del group_of, checked

        # No entry that can match holds a newline, so the separator is never a vocabulary token.
        n_tokens = self.n_tokens = len(vocab)
        self.token_ids = _TokenIds(list(vocab) + [_SEPARATOR], np.append(np.arange(n_tokens), _BORDER))
        del vocab

        # The trie over token ids; node 0 is the root. An edge's key is parent * n_tokens + token.
        edges: dict[int, int] = {}
        terminal = [-1]
        for group, path in enumerate(paths):
            node = 0
            for token in path:
                key = node * n_tokens + token
                node = edges.get(key)
                if node is None:
                    node = edges[key] = len(terminal)
                    terminal.append(-1)
            terminal[node] = group
        del paths
        keys = np.fromiter(edges.keys(), dtype=np.int64, count=len(edges))
        children = np.fromiter(edges.values(), dtype=np.int32, count=len(edges))
        del edges
        self.terminal = np.asarray(terminal, dtype=np.int32)
        deeper = keys >= n_tokens
        self.has_child = np.zeros(len(terminal), dtype=bool)
        self.has_child[keys[deeper] // n_tokens] = True
        self.edges = _KeyMap((keys[deeper].view(np.uint64),), children[deeper])
        # Depth one is indexed by token id: the group of a one-token entry, and the node to go
        # on from. Two trailing -1 slots make token ids -1 and -2 index "nothing".
        token, node = keys[~deeper], children[~deeper]
        self.single = np.full(n_tokens + 2, -1, dtype=np.int32)
        self.single[token] = self.terminal[node]
        self.first = np.full(n_tokens + 2, -1, dtype=np.int32)
        self.first[token] = np.where(self.has_child[node], node, -1)

        # Group -> entry ids: `owner` is the first; `shared` lists all when a string repeats.
        self.owner = np.fromiter((ids[0] for ids in owners), dtype=np.int64, count=len(owners))
        self.shared = None
        if any(len(ids) > 1 for ids in owners):
            sizes = np.fromiter(map(len, owners), dtype=np.int64, count=len(owners))
            flat = np.fromiter(itertools.chain.from_iterable(owners), dtype=np.int64, count=int(sizes.sum()))
            self.shared = (sizes, np.cumsum(sizes) - sizes, flat)

    def match(self, caption: str | None) -> list[int]:
        return self.match_batch([caption])[1].tolist()

    def match_batch(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """CSR matches: caption i's entry ids are `entry_ids[offsets[i]:offsets[i + 1]]`, ascending."""
        captions = _clean_captions(captions)
        parts = [self._match_chunk(captions[i:i + self.chunk_size])
                 for i in range(0, len(captions), self.chunk_size)]
        if len(parts) == 1:
            return parts[0]
        offsets = [np.zeros(1, dtype=np.int64)]
        for part_offsets, part_ids in parts:
            offsets.append(part_offsets[1:] + offsets[-1][-1])
        return np.concatenate(offsets), np.concatenate([ids for _, ids in parts] or [np.zeros(0, np.int32)])

    def _match_chunk(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tokens = self._token_ids(captions)
        starts, groups = self._walk(tokens)
        caption_of = np.cumsum(tokens == _BORDER)[starts]
        if self.shared is None:
            entry_ids = self.owner[groups]
        else:
            caption_of, entry_ids = self._expand_shared(caption_of, groups)
        # Sort by (caption, entry id) and drop repeats (an entry seen twice in one caption).
        bits = np.int64(max(self.n_entries - 1, 1).bit_length())
        keys = (caption_of << bits) | entry_ids
        keys.sort()
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        keys = keys[first]
        offsets = np.zeros(len(captions) + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys >> bits, minlength=len(captions)), out=offsets[1:])
        return offsets, (keys & ((1 << bits) - 1)).astype(np.int32)

    def _token_ids(self, captions: list[str]) -> np.ndarray:
        """One id per token of the chunk's spaced captions: vocabulary id, -1 unknown, -2 border.

        Captions are joined by the separator, which becomes a token of its own; one more ends the
        chunk, and a final -2 stands after the last (empty) token, so every trie path ends inside.
        """
        text = _SEPARATOR.join(captions)
        if text.count(_SEPARATOR) != len(captions) - 1:
            text = _SEPARATOR.join(c.replace(_SEPARATOR, " ") if _SEPARATOR in c else c for c in captions)
        text += _SEPARATOR
        if self.lowercase:
            text = text.lower()
        data = _encode(text)
        starts, lengths = _split_spaced(data)
        return np.append(self.token_ids.lookup(data, starts, lengths), _BORDER)

    def _walk(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start position, group) of every entry occurrence, one trie depth per numpy step."""
        group = self.single[tokens]
        position = np.flatnonzero(group >= 0)
        starts, groups = [position], [group[position]]
        state = self.first[tokens]
        position = np.flatnonzero(state >= 0)
        state = state[position].astype(np.int64)
        depth = 0
        while len(position):
            depth += 1
            token = tokens[position + depth]
            known = token >= 0
            position, state, token = position[known], state[known], token[known]
            state = self.edges.lookup(((state * self.n_tokens + token).view(np.uint64),))
            found = state >= 0
            position, state = position[found], state[found]
            group = self.terminal[state]
            hit = group >= 0
            starts.append(position[hit])
            groups.append(group[hit])
            go_on = self.has_child[state]
            position, state = position[go_on], state[go_on].astype(np.int64)
        return np.concatenate(starts), np.concatenate(groups)

    def _expand_shared(self, caption_of: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes, firsts, ids = self.shared
        counts = sizes[groups]
        row = np.repeat(np.arange(len(groups)), counts)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return caption_of[row], ids[firsts[groups][row] + within]


def _can_match(entry: str) -> bool:
    """False for entries no spaced caption can contain: the spaced text has no tab or newline,
    and every punctuation mark in it stands alone between spaces."""
    if _SPECIAL.search(entry) is None:
        return True
    if any(blank in entry for blank in BLANKS):
        return False
    for token in entry.split(" "):
        if len(token) > 1 and any(punct in token for punct in PUNCTUATION):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# A built matcher as a file: built once (per query list), loaded by every worker in milliseconds.

# Bump when Matcher's attributes change: a file of another format is rebuilt, never misread.
MATCHER_FILE_FORMAT = 1


def matcher_file_key(list_bytes: bytes, list_kind: str, lowercase: bool) -> str:
    """A name for the matcher of a query list: the hash of the list file's bytes, how they are
    read (`list_kind`: text or JSON, compression), the case rule and the file format."""
    import hashlib

    # The pickle names Matcher by its module path, so a move of the module is a new format too.
    from clipdata.pipeline.curate import match_worldwide

    digest = hashlib.sha256(
        f"{MATCHER_FILE_FORMAT}\x00{Matcher.__module__}\x00{match_worldwide.__name__}\x00{list_kind}\x00"
        f"{lowercase}\x00".encode())
    digest.update(list_bytes)
    return digest.hexdigest()[:32]


def write_matcher_file(handle, matcher, entries: Sequence[str] | pa.StringArray) -> None:
    """Pickle (plain numpy arrays, and the entries as one Arrow array) into an open binary file."""
    import pickle

    pickle.dump((MATCHER_FILE_FORMAT, matcher, pa.array(entries, pa.string())), handle,
                protocol=pickle.HIGHEST_PROTOCOL)


class StaleMatcherFile(ValueError):
    """A matcher file this version cannot read: another file format, or a pickle naming classes
    by a module path an older or newer clipdata had (a cached file outlives an upgrade)."""


def read_matcher_file(handle) -> tuple:
    """(matcher, entries) from a file written by write_matcher_file (our own files only: pickle)."""
    import pickle

    try:
        version, matcher, entries = pickle.load(handle)
    except (ImportError, AttributeError, EOFError, pickle.UnpicklingError, TypeError, ValueError) as err:
        raise StaleMatcherFile(f"unreadable matcher file ({type(err).__name__}: {err})") from err
    from clipdata.pipeline.curate.match_worldwide import WorldwideLists

    if version != MATCHER_FILE_FORMAT or not isinstance(matcher, (Matcher, WorldwideLists)):
        raise StaleMatcherFile(f"matcher file format {version}, expected {MATCHER_FILE_FORMAT}")
    return matcher, entries
