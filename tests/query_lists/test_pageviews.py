"""Pageview titles: MetaCLIP's rule on hand-written dump lines, each bad line counted by reason."""
import bz2
import gzip

import pytest

from clipdata.query_lists import entries, pageviews
from clipdata.query_lists.pageviews import PageviewFilter, PageviewLineError

# Two hourly files of one day. Expected per title, by hand:
#   Cat:          60 + 55        = 115 (both lines >= 50)
#   Dog:          49 is below the line minimum, 80 counts = 80
#   New_York:     70             = 70  (reaches min_views exactly)
#   Rare_Thing:   50 + 19        = 50  (19 is below the line minimum) -> below 70
HOUR_0 = b"""en Cat 60 0
en Dog 49 0
en New_York 70 0
en Rare_Thing 50 0
en.m Cat 900 0
de Katze 500 0
en Talk:Cat 300 0
en File:Cat.jpg 120 0
en  400 0
en Cat 70
en Cat 70 0 extra
en Cat seventy 0
en Cat -5 0
en Caf\xe9 100 0
"""
HOUR_1 = b"""en Cat 55 0
en Dog 80 0
en Rare_Thing 19 0
fr Chat 99 0
"""


def test_parse_line():
    assert pageviews.parse_line(b"en Main_Page 42 0\n") == ("en", "Main Page", 42)
    assert pageviews.parse_line("en Main_Page 42 0\r\n") == ("en", "Main Page", 42)
    assert pageviews.parse_line(b"de.m Stra\xc3\x9fe 7 0") == ("de.m", "Stra\u00dfe", 7)


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"en Cat 70", "fields"),
        (b"en Cat 70 0 extra", "fields"),
        (b"", "fields"),
        (b"en Cat seventy 0", "views"),
        (b"en Cat -5 0", "views"),
        (b"en Cat +5 0", "views"),
        (b"en Caf\xe9 100 0", "utf8"),
        (b"en  400 0", "empty-title"),
    ],
)
def test_parse_line_errors_carry_a_reason(line, reason):
    with pytest.raises(PageviewLineError) as err:
        pageviews.parse_line(line)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "line, outcome",
    [
        (b"en Cat 50 0", ("Cat", 50)),
        (b"en Cat 49 0", "below-line-minimum"),
        (b"en New_York 70 0", ("New York", 70)),
        (b"en Talk:Cat 300 0", "namespace"),
        (b"en.m Cat 900 0", "project"),
        (b"de Katze 500 0", "project"),
        (b"en", "project"),  # not even "en " and a title: other-project lines are not parsed
        (b"en Cat 70", "fields"),
        (b"en Caf\xe9 100 0", "utf8"),
    ],
)
def test_line_views(line, outcome):
    assert pageviews.line_views(line) == outcome


def test_line_views_other_project_and_minimum():
    assert pageviews.line_views(b"de Katze 500 0", project="de") == ("Katze", 500)
    assert pageviews.line_views(b"en Cat 10 0", min_line_views=1) == ("Cat", 10)


def test_exact_sums_and_reasons():
    keep = PageviewFilter()
    totals = pageviews.title_totals(keep(HOUR_0.splitlines() + HOUR_1.splitlines()))
    assert totals == {"Cat": 115, "Dog": 80, "New York": 70, "Rare Thing": 50}
    assert pageviews.popular_titles(totals) == ["Cat", "Dog", "New York"]
    assert keep.counts == {
        "counted": 5,
        "project": 3,  # en.m (mobile is another project), de, fr
        "below-line-minimum": 2,
        "namespace": 2,
        "empty-title": 1,
        "fields": 2,
        "views": 2,
        "utf8": 1,
    }
    assert sum(keep.counts.values()) == len(HOUR_0.splitlines()) + len(HOUR_1.splitlines())


def test_title_views_yields_counted_lines_only():
    assert list(pageviews.title_views([b"en Cat 60 0", b"en Dog 1 0", b"xx Y 99 0"])) == [("Cat", 60)]


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress), ("", bytes)])
def test_iter_lines_reads_compressed_files(tmp_path, suffix, compress):
    path = tmp_path / f"pageviews-20220829-000000{suffix}"
    path.write_bytes(compress(HOUR_0))
    lines = list(pageviews.iter_lines(str(path), chunk_size=7))  # small chunks: lines span reads
    assert lines == HOUR_0.splitlines()
    keep = PageviewFilter()
    assert pageviews.title_totals(keep(lines)) == {"Cat": 60, "New York": 70, "Rare Thing": 50}


def test_iter_lines_last_line_without_newline(tmp_path):
    path = tmp_path / "pageviews.gz"
    path.write_bytes(gzip.compress(b"en A 50 0\nen B 60 0"))
    assert list(pageviews.iter_lines(str(path))) == [b"en A 50 0", b"en B 60 0"]


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_iter_lines_cut_file_is_an_error(tmp_path, suffix, compress):
    # Beam's own reader returns half of a cut .gz (and nothing of a cut .bz2) without an error.
    whole = compress(b"".join(b"en T%d 60 0\n" % i for i in range(20000)))
    path = tmp_path / f"pageviews-20220829-000000{suffix}"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(entries.CompressedFileError, match=r"ends inside a compressed stream"):
        for _ in pageviews.iter_lines(str(path)):
            pass
