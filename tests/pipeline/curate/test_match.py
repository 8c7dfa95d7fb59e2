"""Caption matching: MetaCLIP's substring rule, our fast Matcher against the definition.

Hand-written cases say what the rule means (punctuation, whole words, multi-word and overlapping
entries, odd spacing, unicode, repeated entries); random captions over a small vocabulary full of
punctuation and stray whitespace check Matcher, ReferenceMatcher (pyahocorasick) and a plain loop
over the entries give the same ids on every caption.
"""
import pickle
import random

import numpy as np
import pyarrow as pa
import pytest

from clipdata.pipeline.curate.match import Matcher, ReferenceMatcher, spacing

MATCHERS = [Matcher, ReferenceMatcher]


def loop_match(entries, caption, lowercase=False):
    """The rule written out: every entry whose spaced form is a substring of the spaced caption."""
    if lowercase:
        entries, caption = [e.lower() for e in entries], caption.lower()
    spaced = spacing(caption)
    return [i for i, entry in enumerate(entries) if f" {entry} " in spaced]


def matched(matcher_class, entries, caption, lowercase=False):
    """Matched entries as strings, so a failure shows which entry was wrongly (not) matched."""
    ids = matcher_class(entries, lowercase=lowercase).match(caption)
    assert ids == loop_match(entries, caption, lowercase), "the plain loop disagrees"
    return [entries[i] for i in ids]


def test_spacing_is_metaclip():
    assert spacing("Dog, cat.\tbird\n") == " Dog ,  cat .  bird  "


@pytest.mark.parametrize("matcher_class", MATCHERS)
class TestRule:
    @pytest.mark.parametrize("caption", ["dog.", "dog,", "a dog!", "dog?", "dog;", "dog: a", "`dog`",
                                         "a dog.", "big, dog, here", "dog\tpark", "dog\npark", "dog\r\n"])
    def test_punctuation_and_blanks_separate_words(self, matcher_class, caption):
        assert "dog" in matched(matcher_class, ["dog", "cat"], caption)

    @pytest.mark.parametrize("caption", ["dog's bone", "(dog)", "dog-friendly", "hotdog", "dogs",
                                         '"dog"', "Dog", "DOG", "dog\u00a0park", "dog/cat", "#dog"])
    def test_only_whole_words_match(self, matcher_class, caption):
        assert matched(matcher_class, ["dog"], caption) == []

    def test_digits(self, matcher_class):
        entries = ["3", "42", "5", "2019"]
        assert matched(matcher_class, entries, "3 dogs and 42 cats in 2019") == ["3", "42", "2019"]
        assert matched(matcher_class, entries, "3.5 stars") == ["3", "5"], "'.' splits numbers too"
        assert matched(matcher_class, entries, "42nd street, 30") == []

    def test_multi_word_entries(self, matcher_class):
        entries = ["hot dog", "hot", "dog"]
        assert matched(matcher_class, entries, "a hot dog stand") == ["hot dog", "hot", "dog"]
        assert matched(matcher_class, entries, "hot\tdog") == ["hot dog", "hot", "dog"], "a tab is a space"
        assert matched(matcher_class, entries, "hot, dog") == ["hot", "dog"]
        assert matched(matcher_class, entries, "hot  dog") == ["hot", "dog"], "two spaces are not one"
        assert matched(matcher_class, entries, "hotdog") == []

    def test_overlapping_entries_all_count(self, matcher_class):
        entries = ["new york", "york city", "new york city", "york", "new", "city", "new york city hall"]
        assert matched(matcher_class, entries, "new york city") == entries[:6]

    def test_prefixes_and_suffixes(self, matcher_class):
        entries = ["big dog house", "big dog", "dog house", "dog", "house", "big"]
        assert matched(matcher_class, entries, "the big dog") == ["big dog", "dog", "big"]
        assert matched(matcher_class, entries, "dog house.") == ["dog house", "dog", "house"]
        assert matched(matcher_class, entries, "big dog house") == entries

    def test_entries_at_start_and_end(self, matcher_class):
        entries = ["red", "red car", "car"]
        assert matched(matcher_class, entries, "red car") == entries
        assert matched(matcher_class, entries, "red") == ["red"]
        assert matched(matcher_class, entries, "car red") == ["red", "car"]

    def test_same_entry_twice_matches_under_both_ids(self, matcher_class):
        entries = ["dog", "cat", "dog", "big dog", "big dog"]
        assert matcher_class(entries).match("a big dog") == [0, 2, 3, 4]

    def test_entries_with_punctuation_match_only_as_spaced(self, matcher_class):
        entries = [".", "St. Louis", "St . Louis", "St .  Louis", "dog,", ",", "a , b", ",  ,", ", ,"]
        assert matched(matcher_class, entries, "St. Louis") == [".", "St .  Louis"], "' St .  Louis '"
        assert matched(matcher_class, entries, "a,b") == [",", "a , b"]
        assert matched(matcher_class, entries, "x,,y") == [",", ",  ,"], "marks side by side have an empty token between"

    def test_entries_with_odd_spaces(self, matcher_class):
        entries = [" dog", "dog ", "hot  dog", " ", "dog"]
        assert matched(matcher_class, entries, "a dog") == ["dog"]
        assert matched(matcher_class, entries, "a  dog") == [" dog", "dog"]
        assert matched(matcher_class, entries, "a. dog") == [" dog", "dog"], "'.' leaves two spaces before dog"
        assert matched(matcher_class, entries, "dog  x") == ["dog ", "dog"]
        assert matched(matcher_class, entries, "hot  dog") == [" dog", "hot  dog", "dog"]
        assert matched(matcher_class, entries, "a   b") == [" "], "three spaces hold ' ' + ' ' + ' '"

    def test_entries_with_blanks_never_match(self, matcher_class):
        entries = ["hot\tdog", "line\nbreak", "cr\r"]
        for caption in ["hot\tdog", "line\nbreak", "cr\r", "hot dog line break cr"]:
            assert matched(matcher_class, entries, caption) == []

    def test_unicode(self, matcher_class):
        entries = ["café", "東京", "東京タワー", "naïve", "ß", "😀"]
        assert matched(matcher_class, entries, "Café in 東京, naïve ß 😀") == ["東京", "naïve", "ß", "😀"]
        assert matched(matcher_class, entries, "東京タワー") == ["東京タワー"]
        assert matched(matcher_class, entries, "東京タワー", lowercase=True) == ["東京タワー"]

    def test_lowercase(self, matcher_class):
        entries = ["Dog", "new york", "İstanbul", "istanbul", "CAFÉ"]
        assert matched(matcher_class, entries, "NEW YORK dog") == []
        assert matched(matcher_class, entries, "NEW YORK dog", lowercase=True) == ["Dog", "new york"]
        assert matched(matcher_class, entries, "café", lowercase=True) == ["CAFÉ"]
        # 'İ'.lower() is 'i' + U+0307: two characters, and not "i" -- both sides lowercase alike.
        assert matched(matcher_class, entries, "İSTANBUL", lowercase=True) == ["İstanbul"]
        assert matched(matcher_class, entries, "Istanbul", lowercase=True) == ["istanbul"]

    def test_tokens_around_word_sizes(self, matcher_class):
        # Matcher keys tokens by their bytes in tiers of 7, 16 and 32 bytes; check each edge.
        words = ["a" * n for n in (1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 100)] + ["ü" * 9, "x\x00"]
        entries = words + [f"{words[3]} {words[7]}", f"{words[10]} {words[0]}"]
        caption = " ".join(words[::2]) + ". " + f"{words[3]} {words[7]} {words[10]} a"
        assert matched(matcher_class, entries, caption) == loop_match_strings(entries, caption)
        assert matched(matcher_class, entries, "a" * 18) == []

    def test_empty_and_missing_captions(self, matcher_class):
        assert matcher_class(["dog"]).match("") == []
        assert matcher_class(["dog"]).match(None) == []

    def test_bad_entries_are_refused_by_id(self, matcher_class):
        with pytest.raises(ValueError, match="entry 1 is the empty string"):
            matcher_class(["dog", "", "cat"])
        with pytest.raises(TypeError, match="entry 0 is int"):
            matcher_class([7])


def loop_match_strings(entries, caption):
    return [entries[i] for i in loop_match(entries, caption)]


class TestBatch:
    ENTRIES = ["dog", "hot dog", "cat", "new york", "york", "dog", ".", " dog"]

    def test_csr_layout(self):
        captions = ["a hot dog.", "", "no match here", "New york, york", None, "cat dog cat"]
        offsets, entry_ids = Matcher(self.ENTRIES).match_batch(captions)
        assert offsets.dtype == np.int64 and entry_ids.dtype == np.int32
        assert offsets.tolist() == [0, 4, 4, 4, 5, 5, 8]
        assert [entry_ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(captions))] == [
            [0, 1, 5, 6], [], [], [4], [], [0, 2, 5]]
        assert ReferenceMatcher(self.ENTRIES).match_batch(captions)[0].tolist() == offsets.tolist()

    def test_no_entry_spans_two_captions(self):
        matcher = Matcher(["hot dog", "dog hot", "a b"])
        offsets, entry_ids = matcher.match_batch(["hot", "dog", "x hot", "dog y", "a\n", "b"])
        assert entry_ids.tolist() == [] and offsets[-1] == 0
        assert matcher.match_batch(["hot\ndog", "dog"])[1].tolist() == [0], "a caption's own newline is a space"

    def test_chunks_pickles_and_arrow_input_agree(self):
        captions = [f"{w} dog. new york" for w in ("hot", "a", "cat", "big")] * 5 + [None, ""]
        matcher = Matcher(self.ENTRIES)
        offsets, entry_ids = matcher.match_batch(captions)
        small = Matcher(self.ENTRIES)
        small.chunk_size = 3
        for other in (small, pickle.loads(pickle.dumps(matcher))):
            got = other.match_batch(captions)
            assert got[0].tolist() == offsets.tolist() and got[1].tolist() == entry_ids.tolist()
        got = matcher.match_batch(pa.chunked_array([pa.array(captions[:7]), pa.array(captions[7:])]))
        assert got[1].tolist() == entry_ids.tolist()
        assert matcher.match_batch([])[0].tolist() == [0]

    def test_entry_list_with_nothing_matchable(self):
        for entries in ([], ["dog.", "tab\there"]):
            offsets, entry_ids = Matcher(entries).match_batch(["dog. tab\there", "x"])
            assert offsets.tolist() == [0, 0, 0] and len(entry_ids) == 0

    def test_non_string_caption_is_refused(self):
        with pytest.raises(TypeError, match="caption 1 is bytes"):
            Matcher(["dog"]).match_batch(["dog", b"dog"])


# Random captions: words from a small vocabulary (so entries often match), joined by one of
# several separators, including punctuation with and without spaces and stray whitespace.
VOCABULARY = ["dog", "Dog", "hot", "hotdog", "big", "the", "a", "new", "york", "İ", "i̇", "ß", "東京",
              "3", "42", "dog's", "(dog)", "x.y", "", " ", ".", ",", "!", "?", ";", ":", "`", "\t", "\n",
              "\r", "\x0b", "\xa0", "\u2028", "\x00", "\ud800", "ΟΔΟΣ", "Σ", "'", "a" * 8, "b" * 16,
              "c" * 17, "d" * 33, "ü" * 9]
SEPARATORS = [" "] * 6 + ["  ", "", "\t", "\n", "\r\n", ".", ". ", ",", ", ", "!", "?", ";", ":", "`", "-"]


def random_text(rng, n_words):
    parts = []
    for _ in range(n_words):
        parts += [rng.choice(VOCABULARY), rng.choice(SEPARATORS)]
    return "".join(parts[:-1])


@pytest.mark.parametrize("lowercase", [False, True])
def test_random_captions_match_reference_and_loop(lowercase):
    rng = random.Random(1234)
    entries = sorted({random_text(rng, rng.randint(1, 3)) for _ in range(2000)} - {""})
    entries += entries[:40]  # repeated strings match under every id
    rng.shuffle(entries)
    captions = [random_text(rng, rng.randint(0, 12)) for _ in range(4000)]

    matcher = Matcher(entries, lowercase=lowercase)
    matcher.chunk_size = 997  # borders between chunks as well as between captions
    offsets, entry_ids = matcher.match_batch(captions)
    ref_offsets, ref_ids = ReferenceMatcher(entries, lowercase=lowercase).match_batch(captions)
    assert ref_offsets[-1] > len(captions), "the vocabulary should make matches common"
    for i, caption in enumerate(captions):
        expected = loop_match(entries, caption, lowercase)
        assert ref_ids[ref_offsets[i]:ref_offsets[i + 1]].tolist() == expected, repr(caption)
        assert entry_ids[offsets[i]:offsets[i + 1]].tolist() == expected, repr(caption)


def test_matcher_file_round_trip_and_key():
    import io

    from clipdata.pipeline.curate.match import matcher_file_key, read_matcher_file, write_matcher_file

    entries = ["dog", "red", "big dog", "New York", "dog"]
    matcher = Matcher(entries)
    buffer = io.BytesIO()
    write_matcher_file(buffer, matcher, entries)
    buffer.seek(0)
    loaded, loaded_entries = read_matcher_file(buffer)
    assert loaded_entries.to_pylist() == entries
    captions = ["a big dog in New York", "red", "nothing"]
    got, want = loaded.match_batch(captions), matcher.match_batch(captions)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    key = matcher_file_key(b"dog\nred\n", "text", False)
    assert key != matcher_file_key(b"dog\nred\n", "text", True)
    assert key != matcher_file_key(b"dog\nred \n", "text", False)
    assert key != matcher_file_key(b"dog\nred\n", "json", False)


def test_arrow_column_with_nulls_is_matched_like_a_list():
    matcher = Matcher(["dog", "red", "big dog"])
    column = pa.chunked_array([["a big dog", None], ["red", "none"]])
    got, want = matcher.match_batch(column), matcher.match_batch(["a big dog", "", "red", "none"])
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
