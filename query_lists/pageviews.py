"""Wikipedia article titles by pageviews: one query-list source (CLIP §2.2, "names of Wikipedia
articles above a certain search volume").

Input: Wikimedia pageview dumps (dumps.wikimedia.org/other/pageviews, hourly `pageviews-*.gz`),
one line per (project, title): `project title views bytes`, e.g. `en Main_Page 42 0`. The older
hourly `pagecounts-*` files have the same four fields. Real dumps hold lines with an empty title,
with more or fewer fields, and bytes that are not UTF-8; those lines are counted by reason, never
fatal.

MetaCLIP's rule (build_metadata.py, wiki_title), which we follow:
  - keep lines whose project is exactly `en` (`en.m`, mobile, is another project);
  - title: underscores to spaces;
  - skip titles containing `:` (Talk:, File:, Special: ... and also article titles such as
    "Star Wars: Episode IV"; MetaCLIP drops those too);
  - add a line's views to its title only when int(views / 50) > 0, i.e. views >= 50 on that line;
  - keep titles whose summed views reach 70.
Titles are kept as the dump writes them (some are percent-encoded); MetaCLIP does not decode them.

line_views() is the per-line step (the Beam job calls it in a DoFn and turns reasons into
counters); PageviewFilter and title_totals() run the same rule over plain iterators.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from clipdata.query_lists import entries

DEFAULT_PROJECT = "en"
DEFAULT_MIN_LINE_VIEWS = 50  # MetaCLIP: int(views / 50) > 0
DEFAULT_MIN_VIEWS = 70  # MetaCLIP: summed views >= 70

# Why a line does not count. Parse errors first, then the filters, in the order they are checked.
PARSE_REASONS = ("utf8", "fields", "views", "empty-title")
FILTER_REASONS = ("project", "namespace", "below-line-minimum")


class PageviewLineError(ValueError):
    """A line that is not `project title views bytes`; `reason` is one of PARSE_REASONS."""

    def __init__(self, reason: str, line: bytes | str = b""):
        super().__init__(f"{reason}: {line[:120]!r}")
        self.reason = reason


def parse_line(raw: bytes | str) -> tuple[str, str, int]:
    """(project, title with spaces, views) of one dump line, with or without its newline."""
    if isinstance(raw, bytes):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PageviewLineError("utf8", raw) from None
    else:
        line = raw
    # MetaCLIP: line.strip().split(" ") must give exactly four fields.
    fields = line.strip().split(" ")
    if len(fields) != 4:
        raise PageviewLineError("fields", line)
    project, title, views, _bytes = fields
    # int() would also take "+5", "1_000" and "٣"; a view count is plain ASCII digits.
    if not (views.isascii() and views.isdigit()):
        raise PageviewLineError("views", line)
    title = title.strip().replace("_", " ")
    if not title:
        raise PageviewLineError("empty-title", line)
    return project, title, int(views)


def line_views(
    raw: bytes | str, project: str = DEFAULT_PROJECT, min_line_views: int = DEFAULT_MIN_LINE_VIEWS
) -> tuple[str, int] | str:
    """(title, views) when the line counts towards its title, else the reason it does not.

    Lines of other projects are most of a dump, so they are recognised by their first field
    before anything is decoded; such a line is counted as "project" even if it is malformed too.
    """
    prefix = project + " "
    if isinstance(raw, bytes):
        prefix = prefix.encode("utf-8")
    # MetaCLIP strips the line before testing its prefix; real dump lines have nothing to strip.
    if not raw.startswith(prefix) and not (raw[:1].isspace() and raw.lstrip().startswith(prefix)):
        return "project"
    try:
        line_project, title, views = parse_line(raw)
    except PageviewLineError as err:
        return err.reason
    if line_project != project:  # only if str.strip() removed more than the prefix test did
        return "project"
    if ":" in title:
        return "namespace"
    if views < min_line_views:
        return "below-line-minimum"
    return title, views


class PageviewFilter:
    """Runs line_views over a stream of raw lines, counting every line by outcome.

    counts holds "counted" plus one key per reason in PARSE_REASONS and FILTER_REASONS.
    """

    def __init__(self, project: str = DEFAULT_PROJECT, min_line_views: int = DEFAULT_MIN_LINE_VIEWS):
        self.project = project
        self.min_line_views = min_line_views
        self.counts: Counter = Counter()

    def __call__(self, lines: Iterable[bytes | str]) -> Iterator[tuple[str, int]]:
        # a stream of raw dump lines -> a stream of (title, views) that count
        for raw in lines:
            outcome = line_views(raw, self.project, self.min_line_views)
            if isinstance(outcome, str):
                self.counts[outcome] += 1
            else:
                self.counts["counted"] += 1
                yield outcome


def title_views(
    lines: Iterable[bytes | str], project: str = DEFAULT_PROJECT, min_line_views: int = DEFAULT_MIN_LINE_VIEWS
) -> Iterator[tuple[str, int]]:
    """(title, views) for the lines that count; use PageviewFilter to also get the skip counts."""
    return PageviewFilter(project, min_line_views)(lines)


def title_totals(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Summed views per title (the Beam job does this with CombinePerKey(sum))."""
    totals: dict[str, int] = {}
    for title, views in pairs:
        totals[title] = totals.get(title, 0) + views
    return totals


def popular_titles(totals: dict[str, int], min_views: int = DEFAULT_MIN_VIEWS) -> list[str]:
    """Titles with at least min_views, most viewed first (ties by title, so the order is stable)."""
    kept = [(views, title) for title, views in totals.items() if views >= min_views]
    return [title for views, title in sorted(kept, key=lambda vt: (-vt[0], vt[1]))]


def iter_lines(path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Raw lines of a dump file, without their `\\n`; .gz/.bz2 decompressed by file extension.

    Opened through Beam's FileSystems so gs://, s3:// and hdfs:// paths work; a cut .gz/.bz2
    raises entries.CompressedFileError rather than ending early (see entries.iter_chunks).
    """
    rest = b""
    for chunk in entries.iter_chunks(path, chunk_size):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest
