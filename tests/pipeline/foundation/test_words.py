"""Counts and shares in words: the one format every summary and page uses."""
from clipdata.pipeline.foundation.words import count, percent, size


def test_count_is_singular_for_exactly_one():
    assert count(1, "shard") == "1 shard"
    assert count(0, "problem") == "0 problems"
    assert count(2000, "entry", "entries") == "2,000 entries"


def test_percent_has_one_decimal_and_keeps_small_shares_visible():
    assert percent(0.15333) == "15.3%"
    assert percent(0.1) == "10.0%"
    assert percent(0) == "0.0%"
    assert percent(1) == "100.0%"
    assert percent(0.00033) == "0.033%"     # not "0.0%": a small non-zero share stays non-zero
    assert percent(2 / 2273) == "0.088%"


def test_size_in_decimal_units():
    assert size(512) == "512 B"
    assert size(1111) == "1.1 KB"
    assert size(22e9) == "22.0 GB"
    assert size(3.5e12) == "3.5 TB"
