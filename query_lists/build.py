"""`clipdata queries build`: CLIP's 500,000-entry query list from Wikipedia and WordNet, as a Beam job.

The recipe is CLIP's (section 2.2) as MetaCLIP rebuilt it: the strings "0".."99", WordNet synset
head lemmas, Wikipedia words seen at least 100 times, Wikipedia bigrams with PMI >= 30 (bits, as
NLTK computes it), and article titles with at least 70 summed pageviews, capped at 500,000.

The graph (everything heavy runs on workers; the driver only ranks the small filtered results):

    dump ranges ──Reshuffle──► CountNgrams ──► word counts ──CombinePerKey──► words >= min_count
                                   │                │ (total words N)
                                   └──► pair counts ┴─ join both words ──► PMI >= min_pmi
    pageview lines ──► ParseViews ──CombinePerKey──► titles >= min_views
    (WordNet's database files are a few MB and are read by the driver.)

A multistream dump with its index is cut into independent groups of bz2 streams, so the scan of a
full English Wikipedia (~22 GB of bz2) spreads over every worker; a plain dump is one work item.
Bad input never yields a silently wrong list: a truncated or corrupt dump fails the build with the
file and byte position; malformed pageview lines are counted per reason in the sidecar.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput

from clipdata.pipeline.foundation import beam_runner
from clipdata.pipeline.foundation.storage import delete_matching
from clipdata.query_lists import assemble, entries, ngrams, pageviews as pageview_lines, progress, wikidump, wordnet
from clipdata.query_lists import worldwide as worldwide_lists

# Compressed bytes of dump per work item: ~700 work items for a full English Wikipedia.
DUMP_BYTES_PER_WORK_ITEM = 32 * 1024 * 1024
# A worker emits its partial counts when this many distinct pairs are held, bounding its memory.
FLUSH_DISTINCT_KEYS = 2_000_000


class BuildError(Exception):
    """The inputs cannot give a correct list; the message says which input and why."""


@dataclass
class BuildConfig:
    output: str
    wikipedia: list[str] = field(default_factory=list)
    wikipedia_index: list[str] = field(default_factory=list)
    pageviews: list[str] = field(default_factory=list)
    wordnet: str | None = None
    wordnet_full_names: bool = False   # True: whole lemmas; False: MetaCLIP's cut at the first dot
    sources: tuple[str, ...] = assemble.DEFAULT_SOURCES
    max_entries: int = assemble.DEFAULT_MAX_ENTRIES
    dedup: bool = True
    min_count: int = 100
    min_pmi: float = 30.0
    min_bigram_count: int = 1
    min_views: int = 70
    min_line_views: int = pageview_lines.DEFAULT_MIN_LINE_VIEWS
    project: str = "en"
    # A Wikipedia language other than English: MetaCLIP 2's recipe (query_lists/worldwide.py):
    # its words split by the simple tokenizer, its own namespace names, per-source caps.
    language: str = "en"
    # The File/Media/Category link prefixes of the dump's wiki (from its <siteinfo>); set by run_counts.
    link_prefixes: tuple[str, ...] = wikidump.DROPPED_LINK_PREFIXES

    @property
    def worldwide(self) -> bool:
        return self.language != "en"


# ---------------------------------------------------------------------------------------------
# Beam steps: thin layers over wikidump / ngrams / pageviews.


def partition_of(key: str, n_partitions: int) -> int:
    """A stable partition for a word or pair (Python's own hash() differs between processes)."""
    return zlib.crc32(key.encode("utf-8")) % n_partitions


def split_counts(counts: Counter, n_partitions: int) -> list[dict]:
    parts: list[dict] = [{} for _ in range(n_partitions)]
    for key, n in counts.items():
        parts[partition_of(key, n_partitions)][key] = n
    return parts


class CountNgramsFn(beam.DoFn):
    """(dump path, start byte, end byte) -> word and pair ("a b") counts, and dump errors.

    Counts leave a worker as one dict per hash partition, not one element per word: a work item
    of Wikipedia holds millions of distinct pairs, and moving them one by one through the shuffle
    cost 5x the time of reading the dump.
    """

    def __init__(self, n_partitions: int, notes: str, worldwide: bool = False,
                 link_prefixes: tuple[str, ...] = wikidump.DROPPED_LINK_PREFIXES):
        self.n_partitions = n_partitions
        self.notes = notes  # the folder of the progress notes
        self.count = worldwide_lists.count_ngrams if worldwide else ngrams.count_ngrams
        self.link_prefixes = link_prefixes
        self.pages = Metrics.counter("queries", "pages_counted")
        self.words = Metrics.counter("queries", "words_counted")
        self.text_bytes = Metrics.counter("queries", "wikitext_bytes")
        self.skipped = {
            reason: Metrics.counter("queries", f"pages_skipped_{reason}")
            for reason in ("redirect", "namespace")
        }
        self.errors = Metrics.counter("queries", "dump_errors")

    def process(self, work_item):
        path, start, end = work_item
        words, pairs = Counter(), Counter()
        note = progress.work_note(self.notes, "dump", path, start)
        articles = 0
        try:
            for page in wikidump.read_pages(path, start, end,
                                            on_read=lambda n: note.update(bytes=n, articles=articles)):
                reason = wikidump.is_article(page)
                if reason:
                    self.skipped[reason].inc()
                    continue
                articles += 1
                self.pages.inc()
                self.text_bytes.inc(len(page.text))
                self.words.inc(self.count(wikidump.plain_text(page.text, self.link_prefixes), words, pairs))
                if len(pairs) >= FLUSH_DISTINCT_KEYS:
                    yield from self._emit(words, pairs)
        except wikidump.DumpError as err:
            # The build fails on any dump error (see run_build); partial counts are moot.
            self.errors.inc()
            yield TaggedOutput("errors", str(err))
            return
        finally:
            note.done(articles=articles)
        yield from self._emit(words, pairs)

    def _emit(self, words: Counter, pairs: Counter):
        joined = Counter({f"{first} {second}": n for (first, second), n in pairs.items()})
        for tag, counts in (("words", words), ("pairs", joined)):
            for partition, part in enumerate(split_counts(counts, self.n_partitions)):
                if part:
                    yield TaggedOutput(tag, (partition, part))
        words.clear()
        pairs.clear()


class SumCounts(beam.CombineFn):
    """Adds dicts of counts key by key (the per-partition merge of CountNgramsFn's output)."""

    def create_accumulator(self):
        return {}

    def add_input(self, total, counts):
        get = total.get
        for key, n in counts.items():
            total[key] = get(key, 0) + n
        return total

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            self.add_input(merged, other)
        return merged

    def extract_output(self, total):
        return total


@beam.typehints.with_output_types(tuple[str, int])
class ParseViewsFn(beam.DoFn):
    """(file, raw line) -> (title, views) for lines that count; other lines counted by reason."""

    def __init__(self, project: str, min_line_views: int, notes: str):
        self.project = project
        self.min_line_views = min_line_views
        self.notes = notes  # the folder of the progress notes
        self._counters = {}

    def _count(self, reason: str) -> None:
        if reason not in self._counters:
            self._counters[reason] = Metrics.counter("queries", f"pageview_lines_{reason}")
        self._counters[reason].inc()

    def process(self, path):
        # One file per call rather than Beam's ReadFromText: that reader silently stops at the cut
        # of a truncated .gz/.bz2 (half a day of views would vanish); iter_lines raises instead.
        note = progress.work_note(self.notes, "views", path)
        lines = 0
        try:
            for raw in pageview_lines.iter_lines(path):
                lines += 1
                if lines % 4096 == 0:
                    note.update(lines=lines)
                outcome = pageview_lines.line_views(raw, self.project, self.min_line_views)
                if isinstance(outcome, str):
                    self._count(outcome)
                else:
                    self._count("counted")
                    yield outcome
        except (OSError, EOFError) as err:
            self._count("file_errors")
            yield TaggedOutput("errors", f"{path}: {err}")
        finally:
            note.done(lines=lines)


def _attach_count(keyed, which: str):
    """Join step: (word, {'pairs': [...], 'word': [count]}) -> pairs carrying that word's count."""
    _, grouped = keyed
    counts = list(grouped["word"])
    if not counts:
        return  # the word cannot reach the PMI threshold (or does not exist): drop its pairs
    (count,) = counts
    for pair in grouped["pairs"]:
        if which == "first":
            text, n = pair
            yield text.split(" ")[1], (text, n, count)
        else:
            text, n, first_count = pair
            yield text, n, first_count, count


class CountWikipedia(beam.PTransform):
    """Dump work items -> (words >= min_count as "word\\tcount", bigrams >= min_pmi, errors, N)."""

    def __init__(self, config: BuildConfig, n_partitions: int):
        super().__init__()
        self.config = config
        self.n_partitions = n_partitions

    def expand(self, work_items):
        cfg = self.config
        counted = (
            work_items
            | "SpreadWork" >> beam.Reshuffle()
            | "CountNgrams" >> beam.ParDo(CountNgramsFn(self.n_partitions, counts_dir(cfg.output), cfg.worldwide,
                                                       cfg.link_prefixes)).with_outputs("words", "pairs", "errors")
        )
        # (partition, {word: count}) with every count of the dump summed.
        word_parts = counted.words | "SumWords" >> beam.CombinePerKey(SumCounts())
        pair_parts = counted.pairs | "SumPairs" >> beam.CombinePerKey(SumCounts())
        total = (
            word_parts
            | "PartTotals" >> beam.Map(lambda part: sum(part[1].values()))
            | "TotalWords" >> beam.CombineGlobally(sum)
        )
        # distinct words: MetaCLIP 2 caps a language's unigrams at 10% of them
        distinct = (
            word_parts
            | "PartDistinct" >> beam.Map(lambda part: len(part[1]))
            | "DistinctWords" >> beam.CombineGlobally(sum)
        )
        frequent = word_parts | "FrequentWords" >> beam.FlatMap(
            lambda part: (f"{w}\t{n}" for w, n in part[1].items() if n >= cfg.min_count)
        )
        # Only words and pairs seen at most N / 2**min_pmi times can reach the PMI threshold
        # (ngrams.max_word_count_for_pmi), so only those go through the join.
        rare_words = word_parts | "WordsThatCanScore" >> beam.FlatMap(
            lambda part, n: ((w, c) for w, c in part[1].items() if c <= ngrams.max_word_count_for_pmi(cfg.min_pmi, n)),
            AsSingleton(total),
        )
        candidate_pairs = pair_parts | "PairsThatCanScore" >> beam.FlatMap(
            lambda part, n: (
                (pair, c) for pair, c in part[1].items()
                if cfg.min_bigram_count <= c <= ngrams.max_word_count_for_pmi(cfg.min_pmi, n)
            ),
            AsSingleton(total),
        )
        with_first = (
            {"pairs": candidate_pairs | "KeyByFirst" >> beam.Map(lambda kv: (kv[0].split(" ")[0], kv)),
             "word": rare_words}
            | "JoinFirst" >> beam.CoGroupByKey()
            | "AttachFirst" >> beam.FlatMap(_attach_count, "first")
        )
        scored = (
            {"pairs": with_first, "word": rare_words}
            | "JoinSecond" >> beam.CoGroupByKey()
            | "AttachSecond" >> beam.FlatMap(_attach_count, "second")
            | "PMI" >> beam.Map(
                lambda p, n: (p[0], ngrams.pmi(p[1], p[2], p[3], n), p[1]), AsSingleton(total)
            )
            | "HighPMI" >> beam.Filter(lambda p: p[1] >= cfg.min_pmi)
            | "FormatBigrams" >> beam.Map(lambda p: f"{p[0]}\t{p[1]!r}\t{p[2]}")
        )
        return frequent, scored, counted.errors, total, distinct


class CountTitles(beam.PTransform):
    """Pageview files -> ("title\\tviews" for titles with at least min_views, unreadable files)."""

    def __init__(self, config: BuildConfig):
        super().__init__()
        self.config = config

    def expand(self, files):
        cfg = self.config
        parsed = (
            files
            | "SpreadFiles" >> beam.Reshuffle()
            | "ParseViews" >> beam.ParDo(ParseViewsFn(cfg.project, cfg.min_line_views, counts_dir(cfg.output))).with_outputs(
                "errors", main="views")
        )
        summed = parsed.views | "SumViews" >> beam.CombinePerKey(sum)
        popular = (
            summed
            | "PopularTitles" >> beam.Filter(lambda kv: kv[1] >= cfg.min_views)
            | "FormatTitles" >> beam.Map(lambda kv: f"{kv[0]}\t{kv[1]}")
        )
        # titles with views: MetaCLIP 2 caps a language's titles at 76% of them
        distinct = summed | "DistinctTitles" >> beam.combiners.Count.Globally()
        return popular, parsed.errors, distinct


# ---------------------------------------------------------------------------------------------
# The driver: plan work, run the graph, rank and assemble the small results.


def counts_dir(output: str) -> str:
    return FileSystems.join(output, "counts")


def plan_dump_work(config: BuildConfig) -> list[tuple[str, int, int | None]]:
    """Work items (path, start, end): groups of bz2 streams when an index exists, else whole files."""
    if config.wikipedia_index and len(config.wikipedia_index) != len(config.wikipedia):
        raise BuildError("give one --wikipedia-index per --wikipedia dump (or none)")
    work = []
    for i, dump in enumerate(config.wikipedia):
        if not FileSystems.exists(dump):
            raise BuildError(f"Wikipedia dump not found: {dump}")
        index = config.wikipedia_index[i] if config.wikipedia_index else None
        if index is None:
            work.append((dump, 0, None))
            continue
        ranges = wikidump.group_ranges(wikidump.stream_ranges(index), DUMP_BYTES_PER_WORK_ITEM)
        work.extend((dump, start, end) for start, end in ranges)
    return work


def count_partitions(work: list) -> int:
    """Hash partitions of the counts: about one per work item, so each partition's dict of
    pair counts stays a few hundred MB on a full Wikipedia (~700 work items, ~300M pairs)."""
    return max(8, len(work))


def expand_patterns(patterns: list[str], what: str) -> list[str]:
    files = []
    for pattern in patterns:
        matched = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
        if not matched:
            raise BuildError(f"no {what} files match {pattern}")
        files.extend(matched)
    return files


def check_sources(config: BuildConfig) -> None:
    unknown = set(config.sources) - set(assemble.DEFAULT_SOURCES)
    if unknown:
        raise BuildError(
            f"unknown source(s) {sorted(unknown)}; choose from {','.join(assemble.DEFAULT_SOURCES)}"
        )
    needs = {"wordnet": ("wordnet", "--wordnet DIR"), "unigrams": ("wikipedia", "--wikipedia DUMP"),
             "bigrams": ("wikipedia", "--wikipedia DUMP"), "titles": ("pageviews", "--pageviews FILES")}
    for source in config.sources:
        if source == "wordnet" and config.worldwide:
            continue   # Open Multilingual Wordnet: a missing folder or language is said in the sidecar
        if source in needs and not getattr(config, needs[source][0]):
            raise BuildError(
                f"source '{source}' needs {needs[source][1]}; give it, or leave '{source}' out of "
                f"--sources (now {','.join(config.sources)})"
            )


def _read_lines(prefix: str) -> list[str]:
    matches = FileSystems.match([prefix + "*"])[0].metadata_list
    lines = []
    for match in sorted(matches, key=lambda m: m.path):
        with FileSystems.open(match.path) as handle:
            lines.extend(line for line in handle.read().decode("utf-8").split("\n") if line)
    return lines


def run_counts(config: BuildConfig, beam_args: list[str]) -> dict:
    """Run the Beam graph; returns its counters. Writes counts/{words,bigrams,titles,errors}-*."""
    out = counts_dir(config.output)
    prefixes = {name: FileSystems.join(out, name)
                for name in ("words", "bigrams", "titles", "errors", "view_errors", "total", "distinct_words",
                             "distinct_titles")}
    for prefix in prefixes.values():
        delete_matching(prefix)
    need_wiki = bool({"unigrams", "bigrams"} & set(config.sources))
    need_titles = "titles" in config.sources
    if not (need_wiki or need_titles):
        return {}
    work = plan_dump_work(config) if need_wiki else []
    view_files = expand_patterns(config.pageviews, "pageview") if need_titles else []

    p = beam_runner.make_pipeline(beam_args)
    if need_wiki:
        frequent, scored, errors, total, distinct = (
            p | "DumpWork" >> beam.Create(work) | "CountWikipedia" >> CountWikipedia(config, count_partitions(work))
        )
        distinct | "FormatDistinct" >> beam.Map(str) | "WriteDistinct" >> beam.io.WriteToText(
            prefixes["distinct_words"], ".txt")
        frequent | "WriteWords" >> beam.io.WriteToText(prefixes["words"], ".tsv")
        scored | "WriteBigrams" >> beam.io.WriteToText(prefixes["bigrams"], ".tsv")
        errors | "WriteErrors" >> beam.io.WriteToText(prefixes["errors"], ".txt")
        total | "FormatTotal" >> beam.Map(str) | "WriteTotal" >> beam.io.WriteToText(prefixes["total"], ".txt")
    if need_titles:
        popular, view_errors, titles_seen = (
            p | "PageviewFiles" >> beam.Create(view_files) | "CountTitles" >> CountTitles(config))
        titles_seen | "FormatTitlesSeen" >> beam.Map(str) | "WriteTitlesSeen" >> beam.io.WriteToText(
            prefixes["distinct_titles"], ".txt")
        popular | "WriteTitles" >> beam.io.WriteToText(prefixes["titles"], ".tsv")
        view_errors | "WriteViewErrors" >> beam.io.WriteToText(prefixes["view_errors"], ".txt")
    notes = FileSystems.join(out, "progress-")
    delete_matching(notes)
    with progress.BuildWatcher(out, dump_bytes(work), len(view_files)):
        result = p.run()
        result.wait_until_finish()
    delete_matching(notes)
    return beam_runner.counters(result)


def dump_bytes(work: list[tuple[str, int, int | None]]) -> int:
    """File bytes the work items cover (a range to the end of its file counts to the file's size)."""
    total = 0
    for path, start, end in work:
        if end is None:
            end = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        total += end - start
    return total


def _by_count(out: str, name: str) -> list[str]:
    """The keys of counts/<name>-* ("key\tcount" lines), highest count first, ties by key."""
    rows = _ranked(_read_lines(FileSystems.join(out, name)), 1)
    return [key for key, _ in sorted(rows, key=lambda r: (-r[1], r[0]))]


def _bigrams_by_pmi(out: str) -> list[tuple[str, float]]:
    """(bigram "a b", PMI) of counts/bigrams-*, highest PMI first, then count, then text."""
    rows = _ranked(_read_lines(FileSystems.join(out, "bigrams")), 2)
    return [(b, pmi) for b, pmi, _ in sorted(rows, key=lambda r: (-r[1], -r[2], r[0]))]


def _ranked(lines: list[str], score_columns: int) -> list[tuple]:
    rows = []
    for line in lines:
        fields = line.split("\t")
        rows.append((fields[0], *(float(f) for f in fields[1 : 1 + score_columns])))
    return rows


def run_build(config: BuildConfig, beam_args: list[str] | None = None) -> dict:
    """Build the list into config.output/queries.txt with its sidecar queries.json; return the sidecar."""
    check_sources(config)
    if config.worldwide and config.wikipedia:
        # the wiki's own names of its File/Media/Category namespaces, from each dump's <siteinfo>
        names = [p for dump in config.wikipedia for p in wikidump.read_siteinfo(dump).dropped_link_prefixes()]
        config = dataclasses.replace(config, link_prefixes=tuple(dict.fromkeys(names)))
    if not FileSystems.exists(config.output):
        FileSystems.mkdirs(config.output)
    counters = run_counts(config, beam_args or [])
    out = counts_dir(config.output)

    errors = _read_lines(FileSystems.join(out, "errors")) + _read_lines(FileSystems.join(out, "view_errors"))
    if errors:
        shown = "\n  ".join(errors[:20])
        raise BuildError(f"{len(errors)} input(s) could not be read, so no list was written:\n  {shown}")

    if config.worldwide:
        return _finish_worldwide(config, out, counters)
    candidates: dict[str, list[str]] = {"digits": assemble.digit_entries()}
    if "wordnet" in config.sources:
        candidates["wordnet"] = wordnet.head_lemmas(config.wordnet, truncate_at_dot=not config.wordnet_full_names)
    if "unigrams" in config.sources:
        candidates["unigrams"] = _by_count(out, "words")
    if "bigrams" in config.sources:
        candidates["bigrams"] = [b for b, _ in _bigrams_by_pmi(out)]
    if "titles" in config.sources:
        candidates["titles"] = _by_count(out, "titles")

    built = assemble.assemble(
        [(name, candidates[name]) for name in config.sources], config.max_entries, config.dedup
    )
    entries.save_entries(
        FileSystems.join(config.output, "queries.txt"), built.entries, allow_duplicates=not config.dedup
    )
    sidecar = {
        "entries": len(built.entries),
        "list": FileSystems.join(config.output, "queries.txt"),
        "sources": list(config.sources),
        "per_source": {name: stats.as_dict() for name, stats in built.per_source.items()},
        "thresholds": {
            "min_count": config.min_count,
            "min_pmi": config.min_pmi,
            "min_bigram_count": config.min_bigram_count,
            "min_views": config.min_views,
            "min_line_views": config.min_line_views,
            "project": config.project,
            "max_entries": config.max_entries,
            "dedup": config.dedup,
        },
        "inputs": {
            "wikipedia": config.wikipedia,
            "wikipedia_index": config.wikipedia_index,
            "pageviews": config.pageviews,
            "wordnet": config.wordnet,
        },
        "wordnet_names": "full" if config.wordnet_full_names else "metaclip (cut at the first dot)",
        "wikipedia_words": _single_number(FileSystems.join(out, "total")),
        "counters": counters,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return _write_sidecar(config, sidecar)


def _write_sidecar(config: BuildConfig, sidecar: dict) -> dict:
    """queries.json beside the list (both recipes)."""
    with FileSystems.create(FileSystems.join(config.output, "queries.json")) as handle:
        handle.write(json.dumps(sidecar, indent=2, ensure_ascii=False).encode("utf-8"))
    return sidecar


def _single_number(prefix: str) -> int:
    lines = _read_lines(prefix)
    return int(lines[0]) if lines else 0


def _finish_worldwide(config: BuildConfig, out: str, counters: dict) -> dict:
    """A language's list by MetaCLIP 2's recipe (query_lists/worldwide.py) from the job's counts."""
    language = config.language
    candidates: dict[str, list[str]] = {"digits": assemble.digit_entries()}
    notes: dict = {}
    if "wordnet" in config.sources:
        lemmas, notes["wordnet"] = worldwide_lists.omw_lemmas(config.wordnet, language) if config.wordnet else ([], {})
        candidates["wordnet"] = lemmas
    if "unigrams" in config.sources:
        ranked = _by_count(out, "words")
        distinct = _single_number(FileSystems.join(out, "distinct_words"))
        cap = worldwide_lists.unigram_cap(distinct)
        candidates["unigrams"] = worldwide_lists.top(ranked, cap)
        notes["unigrams"] = {"distinct": distinct, "cap": cap, "at_least_min_count": len(ranked)}
    if "bigrams" in config.sources:
        ranked = [worldwide_lists.bigram_entry(*b.split(" ", 1), language)
                  for b, pmi in _bigrams_by_pmi(out) if pmi > config.min_pmi]
        candidates["bigrams"] = worldwide_lists.top(ranked, worldwide_lists.BIGRAM_CAP)
        notes["bigrams"] = {"pmi_over_threshold": len(ranked), "cap": worldwide_lists.BIGRAM_CAP}
    if "titles" in config.sources:
        seen = _single_number(FileSystems.join(out, "distinct_titles"))
        cap = worldwide_lists.title_cap(seen)
        candidates["titles"] = worldwide_lists.top(_by_count(out, "titles"), cap)
        notes["titles"] = {"with_views": seen, "cap": cap}
    # every source is capped on its own (MetaCLIP 2); no cap on the whole list
    built = assemble.assemble([(name, candidates[name]) for name in config.sources], 10**9, config.dedup)
    entries.save_entries(FileSystems.join(config.output, "queries.txt"), built.entries,
                         allow_duplicates=not config.dedup)
    sidecar = {
        "language": language,
        "recipe": "MetaCLIP 2 (worldwide)",
        "entries": len(built.entries),
        "list": FileSystems.join(config.output, "queries.txt"),
        "sources": list(config.sources),
        "per_source": {name: stats.as_dict() for name, stats in built.per_source.items()},
        "caps": notes,
        "link_prefixes": list(config.link_prefixes),
        "inputs": {"wikipedia": config.wikipedia, "wikipedia_index": config.wikipedia_index,
                   "pageviews": config.pageviews, "wordnet": config.wordnet, "project": config.project},
        "wikipedia_words": _single_number(FileSystems.join(out, "total")),
        "counters": counters,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return _write_sidecar(config, sidecar)


def update_manifest(folder: str, language: str, list_path: str) -> str:
    """Add (or replace) `language` in `folder`/manifest.json, the worldwide list curate reads;
    `list_path` relative to the folder. Returns the manifest's path."""
    from clipdata.pipeline.foundation.storage import atomic_write

    path = FileSystems.join(folder, entries.MANIFEST)
    manifest = {"languages": {}}
    if FileSystems.exists(path):
        with FileSystems.open(path) as handle:
            manifest = json.loads(handle.read().decode("utf-8"))
    languages = dict(manifest.get("languages", {}))
    languages[language] = list_path
    # English first (its t is the reference), then by code: the entry ids' order
    manifest["languages"] = {k: languages[k] for k in sorted(languages, key=lambda k: (k != "en", k))}
    atomic_write(path, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path
