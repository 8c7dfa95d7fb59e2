"""`clipdata build`: every stage in one command, each its own Beam job run in order (queries from
sources, curate, download, and with --test-set dedup and the blocklist); a stage whose outputs
exist is skipped, so a rerun resumes.

The query list and the contamination steps run through the `clipdata` command itself (cli.main
with their arguments): build then runs exactly what a user running the stages one by one would,
with each stage's own defaults and checks. Curate and download share their option groups with
build's parser and are called directly."""
from __future__ import annotations

import argparse


def add_commands(subparsers) -> None:
    from clipdata.pipeline.curate import cli as curate_cli
    from clipdata.pipeline.download import cli as download_cli
    from clipdata.pipeline.foundation.cli_help import BEAM_OPTIONS_HELP

    build = subparsers.add_parser(
        "build", help="queries -> curate -> download -> dedup -> blocklist, in one command",
        epilog="examples:\n"
        "  clipdata build --pool 'pool/*.parquet' --queries queries.txt --output run/\n"
        "  clipdata build --pool 'wat/*.wat.gz' --wikipedia enwiki.xml.bz2 --wikipedia-index index.txt.bz2 \\\n"
        "      --pageviews 'pageviews/*.gz' --wordnet /usr/share/wordnet \\\n"
        "      --test-set cifar=cifar10/test --output run/\n"
        "writes run/queries (when built from sources), run/curated, run/shards, and with --test-set\n"
        "run/dedup (the contamination report) and run/shards_clean (the shards without it). Every\n"
        "stage's outputs are kept; a stage whose outputs exist is skipped, so a rerun resumes.\n\n"
        + BEAM_OPTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("--output", required=True, help="run folder: every stage's outputs go in it")
    curate_cli.add_curate_arguments(build, queries_required=False)
    sources = build.add_argument_group("query list from sources (instead of --queries; `clipdata queries build`)")
    sources.add_argument("--wikipedia", action="append", default=[], metavar="DUMP")
    sources.add_argument("--wikipedia-index", action="append", default=[], metavar="INDEX")
    sources.add_argument("--pageviews", action="append", default=[], metavar="GLOB")
    sources.add_argument("--wordnet", metavar="DIR")
    download_cli.add_download_arguments(build, with_input=False)
    contamination = build.add_argument_group("contamination (`clipdata dedup`)")
    contamination.add_argument("--test-set", action="append", default=[], metavar="NAME=PATH",
                               help="an evaluation test set to check the shards against; repeatable")
    build.set_defaults(handler=run_build_command, beam=True)


def run_build_command(args, beam_args: list[str]) -> int:
    """Each stage is its own Beam job, run in order; a stage whose outputs exist is skipped."""
    import os

    from clipdata.pipeline import cli
    from clipdata.pipeline.curate import cli as curate_cli, job as curate
    from clipdata.pipeline.download import cli as download_cli, job as download
    from clipdata.pipeline.foundation import beam_runner
    from clipdata.pipeline.foundation.errors import UsageError
    from clipdata.query_lists.entries import QueryListError

    beam_runner.quiet_beam_logs()
    run = args.output
    built_queries = bool(args.wikipedia or args.pageviews or args.wordnet)
    if bool(args.queries) == built_queries:
        raise UsageError("give either --queries (an existing list) or its sources "
                         "(--wikipedia, --pageviews, --wordnet), not both and not neither")
    steps = 2 + built_queries + 2 * bool(args.test_set)
    step = 0

    def stage(name: str, folder: str, done: bool) -> bool:
        nonlocal step
        step += 1
        if done:
            print(f"[{step}/{steps}] {name}: {folder} exists, skipped (delete it to redo this stage)")
            return False
        print(f"[{step}/{steps}] {name} -> {folder}", flush=True)
        return True

    if built_queries:
        queries_dir = os.path.join(run, "queries")
        args.queries = os.path.join(queries_dir, "queries.txt")
        if stage("queries", queries_dir, os.path.exists(os.path.join(queries_dir, "queries.json"))):
            sources = [*sum((["--wikipedia", d] for d in args.wikipedia), []),
                       *sum((["--wikipedia-index", i] for i in args.wikipedia_index), []),
                       *sum((["--pageviews", g] for g in args.pageviews), []),
                       *(["--wordnet", args.wordnet] if args.wordnet else [])]
            present = [s for s, given in (("digits", True), ("wordnet", args.wordnet), ("unigrams", args.wikipedia),
                                          ("bigrams", args.wikipedia), ("titles", args.pageviews)) if given]
            code = cli.main(["queries", "build", "--output", queries_dir, "--sources", ",".join(present),
                             *sources, *beam_args])
            if code:
                return code

    curated = os.path.join(run, "curated")
    if stage("curate", curated, os.path.exists(os.path.join(curated, "curate_stats.json"))):
        try:
            stats = curate.run_curate(curate_cli.curate_config(args, curated), beam_args)
        except (curate.CurateError, QueryListError, FileNotFoundError) as err:
            raise UsageError(str(err)) from err
        print(curate_cli.summary(stats, curated))

    shards_dir = os.path.join(run, "shards")
    stage("download", shards_dir, False)  # always run: it resumes, skipping committed shards
    args.output = shards_dir
    try:
        summary = download.run_download(download_cli.download_config(args, [curated]), beam_args)
    except download.DownloadError as err:
        raise UsageError(str(err)) from err
    print(download_cli.format_summary(summary))

    if args.test_set:
        dedup_dir = os.path.join(run, "dedup")
        if stage("dedup", dedup_dir, os.path.exists(os.path.join(dedup_dir, "report.json"))):
            code = cli.main(["dedup", "--shards", shards_dir, *sum((["--test-set", t] for t in args.test_set), []),
                             "--output", dedup_dir, *beam_args])
            if code:
                return code
        clean = os.path.join(run, "shards_clean")
        if stage("blocklist", clean, os.path.exists(os.path.join(clean, "manifest.json"))):
            code = cli.main(["dedup", "apply-blocklist", "--shards", shards_dir, "--blocklist",
                             os.path.join(dedup_dir, "blocklist.txt"), "--output", clean, *beam_args])
            if code:
                return code
    return 0
