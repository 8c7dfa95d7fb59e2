"""`clipdata curate`: match a web pool against a query list, dedup and balance it (a Beam job)."""
from __future__ import annotations

import argparse
import sys

from clipdata.pipeline.foundation.words import count

EXAMPLE = """examples:
  # a LAION/DataComp-style parquet pool (img2dataset's column names are the defaults)
  clipdata curate --pool 'pool/*.parquet' --queries queries/queries.txt --output curated/
  # Common Crawl WAT files, MetaCLIP's metadata.json as the list, all local cores
  clipdata curate --pool 'wat/*.warc.wat.gz' --queries metadata.json --output curated/ \\
      --direct_num_workers 0
writes curated/curated/part-*.parquet (uid, url, caption, entry_ids, source_file, source_row,
page_url), curated/dropped/*.parquet (source_file, source_row, reason for every other row),
curated/entry_counts.parquet (pairs per entry before and after balancing), curate_stats.json."""


def add_commands(subparsers) -> None:
    from clipdata.pipeline.foundation.cli_help import BEAM_OPTIONS_HELP

    parser = subparsers.add_parser(
        "curate",
        help="match, dedup and balance a web pool into curated (url, caption) pairs",
        epilog=EXAMPLE + "\n\n" + BEAM_OPTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True, help="output folder")
    add_curate_arguments(parser)
    parser.set_defaults(handler=run_curate_command, beam=True)


def add_curate_arguments(parser, queries_required: bool = True) -> None:
    parser.add_argument("--pool", action="append", required=True, metavar="PATH",
                        help="pool files: a file, a glob or a folder of parquet/csv/tsv/jsonl (.gz ok) "
                        "or Common Crawl .wat(.gz) files, on any Beam file system; repeatable")
    parser.add_argument("--queries", required=queries_required,
                        help="the query list: one entry per line, or a MetaCLIP-style JSON list; or a "
                        "worldwide list's manifest.json (one list per language, MetaCLIP 2: each caption's "
                        "language is identified and matched against its own list)")
    parser.add_argument("--language-map", action="append", default=[], metavar="LABEL=LANG",
                        help="with a worldwide list: send the language identifier's label LABEL to the list "
                        "LANG (e.g. wuu=zh); yue=zh is the default, as MetaCLIP 2; repeatable or comma-separated")
    parser.add_argument("--url-col", default="url", help="url column of table pools (default: %(default)s)")
    parser.add_argument("--caption-col", default="caption", help="caption column (default: %(default)s)")
    parser.add_argument("--lowercase", action="store_true",
                        help="match case-insensitively (default: case-sensitive, as MetaCLIP)")
    parser.add_argument("--max-per-entry", type=int, default=20_000,
                        help="balancing threshold t: about this many pairs kept per entry (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the balancing draw (default: %(default)s)")
    parser.add_argument("--max-caption-chars", type=int, default=1000,
                        help="drop captions longer than this after cleaning (default: %(default)s)")
    parser.add_argument("--matcher-cache", default=None, metavar="DIR",
                        help="keep the built matcher of each query list here, by the list's hash, so a "
                        "rerun loads it instead of building it (default: $CLIPDATA_CACHE or "
                        "~/.cache/clipdata; a local folder; '' builds it every run)")
    parser.add_argument("--partitions", type=int, default=None,
                        help="hash partitions of the curated output (default: max(16, pool files)); "
                        "raise it so one partition's pairs fit a worker's memory")


def curate_config(args, output: str):
    from clipdata.pipeline.curate import job as curate, language

    return curate.CurateConfig(
        pool=args.pool, queries=args.queries, output=output, url_col=args.url_col,
        caption_col=args.caption_col, lowercase=args.lowercase, max_per_entry=args.max_per_entry,
        seed=args.seed, max_caption_chars=args.max_caption_chars, partitions=args.partitions,
        matcher_cache=curate.default_cache_dir() if args.matcher_cache is None else args.matcher_cache,
        language_map=language.parse_map(args.language_map),
    )


def run_curate_command(args, beam_args: list[str]) -> int:
    from clipdata.pipeline.curate import job as curate
    from clipdata.pipeline.foundation import beam_runner
    from clipdata.pipeline.foundation.errors import UsageError
    from clipdata.query_lists.entries import QueryListError

    beam_runner.quiet_beam_logs()
    try:
        stats = curate.run_curate(curate_config(args, args.output), beam_args)
    except (curate.CurateError, QueryListError, FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err
    print(summary(stats, args.output))
    if stats["files_unreadable"] and not stats["rows_read"]:
        print(f"clipdata curate: error: no pool file could be read ({len(stats['files_unreadable']):,} unreadable, "
              "named above): nothing was curated", file=sys.stderr)
        return 1
    return 0


def summary(stats: dict, output: str) -> str:
    read = max(stats["rows_read"], 1)
    lines = [f"curated {stats['rows_kept']:,} of {stats['rows_read']:,} pool rows into {output}/curated",
             f"  {'kept':<18}{stats['rows_kept']:>12,}  {100 * stats['rows_kept'] / read:5.1f}%"]
    for reason, n in sorted(stats["dropped"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {reason:<18}{n:>12,}  {100 * n / read:5.1f}%")
    lines.append(f"  entries matched {stats['entries_matched']:,} of {stats['entries']:,}; "
                 f"{stats['entries_over_max']:,} over --max-per-entry {stats['max_per_entry']:,}")
    if stats.get("languages"):
        lines.append(f"  {'language':<10}{'captions':>12}{'matched':>12}{'kept':>12}{'t':>10}")
        for language, row in stats["languages"].items():
            t = f"{row['t']:,}" if "t" in row else "-"
            lines.append(f"  {language:<10}{row['captions']:>12,}{row['captions_matched']:>12,}"
                         f"{row['pairs_kept']:>12,}{t:>10}")
    for error in stats["files_unreadable"]:
        lines.append(f"  unreadable: {error['file']} after {error['rows_read']} rows: {error['error']}")
    if stats["files_unreadable"] and stats["rows_read"]:
        # the counted report above stands; its last line says it is not the whole pool
        lines.append(f"  {count(len(stats['files_unreadable']), 'pool file')} of the input could not be read "
                     "(above): the counts are of the rows that could")
    return "\n".join(lines)
