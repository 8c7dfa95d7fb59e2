from clipdata.query_lists import assemble


def test_sources_fill_in_order_with_dedup_forbidden_and_cap():
    built = assemble.assemble(
        [("digits", ["0", "1"]), ("wordnet", ["dog", "1", "", "?", "cat"]), ("unigrams", ["dog", "red", "blue"])],
        max_entries=5,
    )
    assert built.entries == ["0", "1", "dog", "cat", "red"]
    assert built.per_source["wordnet"].as_dict() == dict(offered=5, added=2, duplicate=1, forbidden=2, over_cap=0)
    assert built.per_source["unigrams"].as_dict() == dict(offered=3, added=1, duplicate=1, forbidden=0, over_cap=1)


def test_no_dedup_keeps_repeats_as_separate_ids():
    built = assemble.assemble([("a", ["x", "y"]), ("b", ["x"])], dedup=False)
    assert built.entries == ["x", "y", "x"]


def test_digits_are_metaclips():
    assert assemble.digit_entries() == [str(i) for i in range(100)]
    assert assemble.DEFAULT_SOURCES == ("digits", "wordnet", "unigrams", "bigrams", "titles")
