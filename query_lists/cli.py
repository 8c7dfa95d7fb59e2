"""`clipdata queries build`: the query list from Wikipedia, pageviews and WordNet (a Beam job)."""
from __future__ import annotations

import argparse
import re

from clipdata.query_lists.assemble import DEFAULT_MAX_ENTRIES, DEFAULT_SOURCES

EXAMPLE = """example (English Wikipedia, as CLIP/MetaCLIP):
  clipdata queries build --output queries/ \\
    --wikipedia enwiki-latest-pages-articles-multistream.xml.bz2 \\
    --wikipedia-index enwiki-latest-pages-articles-multistream-index.txt.bz2 \\
    --pageviews 'pageviews/pageviews-*.gz' --wordnet /usr/share/wordnet \\
    --direct_num_workers 0
writes queries/queries.txt (one entry per line; entry id = line number, from 0) and
queries/queries.json (counts per source, thresholds, inputs)."""


def add_commands(subparsers) -> None:
    queries = subparsers.add_parser("queries", help="build or inspect a CLIP-style query list")
    verbs = queries.add_subparsers(dest="verb", required=True, metavar="VERB")
    build = verbs.add_parser(
        "build",
        help="build the list from a Wikipedia dump, pageview files and WordNet",
        epilog=EXAMPLE + "\n\n" + _beam_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--output", required=True, help="output folder (local or any Beam file system)")
    build.add_argument("--wikipedia", action="append", default=[], metavar="DUMP",
                       help="a pages-articles XML dump (.xml.bz2, multistream or not, or .xml); repeatable")
    build.add_argument("--wikipedia-index", action="append", default=[], metavar="INDEX",
                       help="the multistream index of each --wikipedia dump, in the same order: "
                       "lets the scan run in parallel (without it a dump is read by one worker)")
    build.add_argument("--pageviews", action="append", default=[], metavar="GLOB",
                       help="pageview dump files ('project title views bytes' lines, .gz ok); repeatable")
    build.add_argument("--wordnet", metavar="DIR",
                       help="a WordNet 3.0 database folder with data.noun/verb/adj/adv "
                       "(Debian's wordnet-base installs /usr/share/wordnet)")
    build.add_argument("--wordnet-full-names", action="store_true",
                       help="keep WordNet names whole ('st. petersburg', 'ph.d.'); default: MetaCLIP's list, "
                       "each name cut at its first dot ('st', 'ph')")
    build.add_argument("--sources", default=",".join(DEFAULT_SOURCES),
                       help="sources in the order they fill the list (default: %(default)s, MetaCLIP's)")
    build.add_argument("--max-entries", type=int, default=DEFAULT_MAX_ENTRIES,
                       help="cap on the list length (default: %(default)s)")
    build.add_argument("--no-dedup", dest="dedup", action="store_false",
                       help="keep an entry again when a later source repeats it (default: dedup)")
    build.add_argument("--min-count", type=int, default=None,
                       help="keep Wikipedia words seen at least this often (default: 100; with --lang other "
                       "than en 1, as MetaCLIP 2 ranks every word)")
    build.add_argument("--min-pmi", type=float, default=30.0,
                       help="keep bigrams with PMI (bits, NLTK's definition) at least this (default: %(default)s)")
    build.add_argument("--min-bigram-count", type=int, default=1,
                       help="and seen at least this often (default: %(default)s, as MetaCLIP)")
    build.add_argument("--min-views", type=int, default=None,
                       help="keep titles whose summed pageviews reach this (default: 70; with --lang other "
                       "than en 1, as MetaCLIP 2 ranks every title)")
    build.add_argument("--min-line-views", type=int, default=50,
                       help="a pageview line adds to its title's sum only with at least this many views "
                       "(default: %(default)s, MetaCLIP's int(views/50) > 0 rule; 1 counts every line)")
    build.add_argument("--project", default=None,
                       help="pageview project code to count (default: the --lang, else en)")
    build.add_argument("--lang", default=None, metavar="CODE",
                       help="build the list of this Wikipedia language (de, zh, th, ...) by MetaCLIP 2's "
                       "recipe into OUTPUT/CODE/ and add it to OUTPUT/manifest.json, the worldwide list "
                       "`clipdata curate --queries` takes; --wordnet is then an Open Multilingual Wordnet "
                       "folder (wn-data-<code>.tab files). --lang en builds CLIP's English list there. "
                       "Default: CLIP's English list into OUTPUT/")
    build.set_defaults(handler=run_build_command, beam=True)


def _beam_help() -> str:
    from clipdata.pipeline.foundation.cli_help import BEAM_OPTIONS_HELP

    return BEAM_OPTIONS_HELP


def run_build_command(args, beam_args: list[str]) -> int:
    from clipdata.pipeline.foundation import beam_runner
    from clipdata.pipeline.foundation.errors import UsageError
    from clipdata.query_lists import build, entries, wikidump, wordnet

    beam_runner.quiet_beam_logs()
    language = args.lang
    if language is not None and not re.fullmatch(r"[a-z]{2,3}(_[a-z]+)*", language):
        raise UsageError(f"--lang {language!r}: give a Wikipedia language code, lower-case (en, de, zh, th, "
                         "zh_yue)")
    worldwide = language not in (None, "en")
    output = args.output if language is None else f"{args.output.rstrip('/')}/{language}"
    config = build.BuildConfig(
        output=output,
        wikipedia=args.wikipedia,
        wikipedia_index=args.wikipedia_index,
        pageviews=args.pageviews,
        wordnet=args.wordnet,
        wordnet_full_names=args.wordnet_full_names,
        sources=tuple(s.strip() for s in args.sources.split(",") if s.strip()),
        max_entries=args.max_entries,
        dedup=args.dedup,
        min_count=args.min_count if args.min_count is not None else (1 if worldwide else 100),
        min_pmi=args.min_pmi,
        min_bigram_count=args.min_bigram_count,
        min_views=args.min_views if args.min_views is not None else (1 if worldwide else 70),
        min_line_views=args.min_line_views,
        project=args.project or language or "en",
        language=language or "en",
    )
    try:
        if worldwide:
            check_dump_language(config)
        sidecar = build.run_build(config, beam_args)
    except (build.BuildError, wikidump.DumpError, wordnet.WordNetError, entries.QueryListError) as err:
        raise UsageError(str(err)) from err
    print(summary(sidecar))
    if language is not None:
        manifest = build.update_manifest(args.output, language, f"{language}/queries.txt")
        print(f"  {manifest}: the worldwide list now holds "
              f"{', '.join(entries.load_manifest(manifest))} (clipdata curate --queries {manifest})")
    return 0


def check_dump_language(config) -> None:
    """A dump of another wiki than --lang is a mistake worth stopping for: its <siteinfo> names it."""
    from clipdata.query_lists import build, wikidump

    for dump in config.wikipedia:
        dbname = wikidump.read_siteinfo(dump).dbname
        wiki = dbname[:-len("wiki")] if dbname.endswith("wiki") else None
        # a variant's dump may go into its language's list (zh_yuewiki into zh, as MetaCLIP 2 merges)
        if wiki is not None and config.language not in (wiki, wiki.split("_")[0]):
            raise build.BuildError(f"--lang {config.language}, but {dump} is a dump of {dbname} "
                                   f"(language {dbname[:-len('wiki')]}): give that wiki's --lang, or its dump")


def summary(sidecar: dict) -> str:
    recipe = f" ({sidecar['language']}, {sidecar['recipe']})" if "recipe" in sidecar else ""
    lines = [f"wrote {sidecar['entries']:,} entries to {sidecar['list']}{recipe}"]
    for name, stats in sidecar["per_source"].items():
        lines.append(
            f"  {name:<9} offered {stats['offered']:>9,}  added {stats['added']:>9,}  "
            f"duplicate {stats['duplicate']:>8,}  over cap {stats['over_cap']:>8,}"
        )
    for name, cap in sidecar.get("caps", {}).items():
        if name == "wordnet" and not cap.get("files"):
            lines.append("  wordnet: no Open Multilingual Wordnet file for this language (--wordnet DIR with "
                         "wn-data-<code>.tab files): no WordNet entries")
        elif name != "wordnet":
            lines.append(f"  {name} cap: " + ", ".join(f"{k} {v:,}" for k, v in cap.items()))
    counters = sidecar.get("counters", {})
    if counters:
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted(counters.items()))
        lines.append(f"  counters: {shown}")
    return "\n".join(lines)
