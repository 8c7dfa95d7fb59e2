"""MetaCLIP 2's matching rule for query lists of any language, and one matcher per language.

The rule (facebookresearch/MetaCLIP, `metaclip/curation/substr_matching.py`: `get_spaced_metadata`,
`is_cjk_or_similar`, `spacing`), reproduced exactly:

    spaced caption = match.spacing(caption)          (MetaCLIP's, as for English)
    entry e is padded with " " at its start unless e[0] is CJK-like, at its end unless e[-1] is
    entry i matches  <=>  padded(entries[i]) in spaced caption

CJK-like (foundation/scripts.is_cjk_like): a character in one of MetaCLIP 2's ranges (CJK
ideographs, Thai, Lao, Burmese, Khmer, Tibetan) or punctuation. So an entry of a
no-space script matches as a raw substring ("猫" in "一只猫在桌子上"), a Latin entry only between
spaces or punctuation as today, and a mixed one ("iPhone手机") on its Latin end only.

What the rule leaves out, as MetaCLIP 2 does (kept, not fixed, so counts compare with its own):
Japanese kana (U+3040-30FF) and Hangul are not CJK-like, so an entry ending in kana ("カメラ") is
padded and matches only where a space or punctuation follows it in the caption.

An entry padded on both ends is exactly the English rule, so it is matched by the fast token
Matcher; the others, rare outside no-space scripts, by an Aho-Corasick automaton over their padded
forms (pyahocorasick, MetaCLIP 2's own approach). Ids are list positions, as in match.py.
Cost per caption: the token Matcher's (~3 us) plus one automaton pass over the spaced caption,
linear in its length, for lists that have raw entries.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from clipdata.pipeline.curate.match import Matcher, _clean_captions, check_entries, spacing
from clipdata.pipeline.foundation.scripts import is_cjk_like

def padded(entry: str) -> str:
    """The entry as MetaCLIP 2 looks for it in the spaced caption."""
    if not is_cjk_like(entry[0]):
        entry = " " + entry
    if not is_cjk_like(entry[-1]):
        entry = entry + " "
    return entry


def reference_matches(entries: Sequence[str], caption: str) -> list[int]:
    """The rule written out, one entry at a time: what the matchers are tested against."""
    spaced = spacing(caption)
    return [i for i, entry in enumerate(entries) if padded(entry) in spaced]


# Stands in, in the token Matcher's list, for an entry matched by the automaton instead: no spaced
# caption holds a newline, so the Matcher never matches it, and every other id keeps its position.
_ELSEWHERE = "\n"


class WorldwideMatcher:
    """One language's list under MetaCLIP 2's rule: `match_batch(captions)` gives CSR matches like
    match.Matcher's (caption i's ids are `entry_ids[offsets[i]:offsets[i + 1]]`, ascending)."""

    def __init__(self, entries: Iterable[str], lowercase: bool = False):
        checked = check_entries(entries, lowercase)
        self.lowercase = lowercase
        self.n_entries = len(checked)
        raw = {i: padded(e) for i, e in enumerate(checked) if padded(e) != f" {e} "}
        self.words = None
        if len(raw) < len(checked):
            self.words = Matcher([_ELSEWHERE if i in raw else e for i, e in enumerate(checked)])
        self.automaton = None
        if raw:
            import ahocorasick

            ids: dict[str, list[int]] = {}
            for i, form in raw.items():
                ids.setdefault(form, []).append(i)
            # An id per form (the common case: the automaton's values are the ids themselves), a
            # tuple where a string is in the list twice.
            self.shared_forms = any(len(owners) > 1 for owners in ids.values())
            self.automaton = ahocorasick.Automaton()
            for form, owners in ids.items():
                self.automaton.add_word(form, tuple(owners) if self.shared_forms else owners[0])
            self.automaton.make_automaton()
        self.raw_entries = len(raw)

    def match(self, caption: str | None) -> list[int]:
        return self.match_batch([caption])[1].tolist()

    def match_batch(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        captions = _clean_captions(captions)
        if self.lowercase:
            captions = [c.lower() for c in captions]
        if self.words is not None:
            offsets, ids = self.words.match_batch(captions)
        else:
            offsets, ids = np.zeros(len(captions) + 1, dtype=np.int64), np.zeros(0, np.int32)
        if self.automaton is None:
            return offsets, ids
        # Add the automaton's matches caption by caption, in plain Python (numpy per caption costs
        # more than the match), merged in id order.
        word_ids, starts = ids.tolist(), offsets.tolist()
        merged: list[int] = []
        out_offsets = [0]
        iterate = self.automaton.iter
        for i, caption in enumerate(captions):
            if self.shared_forms:
                found = {owner for _, owners in iterate(spacing(caption)) for owner in owners}
            else:
                found = {owner for _, owner in iterate(spacing(caption))}
            if found:
                found.update(word_ids[starts[i]:starts[i + 1]])
                merged.extend(sorted(found))
            else:
                merged.extend(word_ids[starts[i]:starts[i + 1]])
            out_offsets.append(len(merged))
        return np.asarray(out_offsets, dtype=np.int64), np.asarray(merged, dtype=np.int32)


class WorldwideLists:
    """One list per language, as one matcher for curate: each caption's language is identified
    (language.LanguageOf) and the caption matched against that language's list only, under
    MetaCLIP 2's rule. Entry ids are global: the languages' lists one after another, in the
    manifest's order (`starts[k]` is language k's first id), so counts, balancing and the shards'
    entry ids work as for one list; a caption whose language has no list (`other`, unless the
    manifest has an `other` list) matches nothing.

        lists = WorldwideLists({"en": [...], "de": [...], "zh": [...]})
        offsets, ids, languages = lists.match_languages(captions)
    """

    def __init__(self, lists: dict[str, Sequence[str]], label_map: dict[str, str] | None = None,
                 lowercase: bool = False):
        from clipdata.pipeline.curate.language import LanguageOf

        if not lists:
            raise ValueError("a worldwide list needs at least one language")
        self.languages = list(lists)
        self.lowercase = lowercase
        self.label_map = dict(label_map or {})
        unknown = sorted({v for v in self.label_map.values() if v not in lists and v != "other"})
        if unknown:
            raise ValueError(f"--language-map sends labels to {', '.join(unknown)}, which the manifest has no "
                             f"list for; its languages: {', '.join(self.languages)} (or other)")
        self.language_of = LanguageOf(self.languages, self.label_map)
        sizes = [len(lists[language]) for language in self.languages]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.n_entries = int(self.starts[-1])
        self.matchers = {language: WorldwideMatcher(lists[language], lowercase) for language in self.languages}

    def language_range(self, language: str) -> tuple[int, int]:
        k = self.languages.index(language)
        return int(self.starts[k]), int(self.starts[k + 1])

    def match_languages(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(offsets, global entry ids) as match.Matcher.match_batch gives them, and each caption's
        language (a list language or language.OTHER)."""
        captions = _clean_captions(captions)
        languages = self.language_of(captions)
        by_language: dict[str, list[int]] = {}
        for i, language in enumerate(languages):
            by_language.setdefault(language, []).append(i)
        # Each language's captions matched together, then their matches put back in caption order
        # with one stable sort (a caption is of one language, so its ids stay ascending).
        owners, found = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for language, rows in by_language.items():
            matcher = self.matchers.get(language)
            if matcher is None:
                continue
            offsets, ids = matcher.match_batch([captions[i] for i in rows])
            owners.append(np.repeat(np.asarray(rows, dtype=np.int64), np.diff(offsets)))
            found.append(ids.astype(np.int64) + self.starts[self.languages.index(language)])
        owner, ids = np.concatenate(owners), np.concatenate(found)
        order = np.argsort(owner, kind="stable")
        offsets = np.zeros(len(captions) + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=len(captions)), out=offsets[1:])
        return offsets, ids[order].astype(np.int32), languages

    def match_batch(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        offsets, ids, _ = self.match_languages(captions)
        return offsets, ids

    def match(self, caption: str | None) -> list[int]:
        return self.match_batch([caption])[1].tolist()
