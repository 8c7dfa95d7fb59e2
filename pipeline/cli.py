"""The `clipdata` command: one subcommand per stage.

Each stage's subcommands are defined in its own package (`clipdata.query_lists.cli`,
`clipdata.pipeline.*`, `clipdata.dedup.cli`, `clipdata.trainer.cli`); this file only wires them
together. Heavy imports (Beam, torch) happen inside the handlers so `clipdata --help` is instant.

Flags a subcommand does not know are passed to Apache Beam when the subcommand runs a Beam job
(`--runner`, `--direct_num_workers`, ...), and are an error otherwise.
"""
from __future__ import annotations

import argparse
import sys

from clipdata.pipeline.foundation.errors import UsageError


def build_parser() -> argparse.ArgumentParser:
    from clipdata.dedup import cli as dedup_cli
    from clipdata.pipeline import build as build_cli
    from clipdata.pipeline.curate import cli as curate_cli
    from clipdata.pipeline.demo import run as demo_cli
    from clipdata.pipeline.download import cli as download_cli
    from clipdata.pipeline.inspect import inspect_key, shard_check
    from clipdata.query_lists import cli as queries_cli
    from clipdata.trainer import cli as train_cli

    parser = argparse.ArgumentParser(
        prog="clipdata",
        description="CLIP-style training data: query lists, curation, WebDataset shards, "
        "contamination reports and contrastive training.",
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show the libraries' own log lines (Beam workers, FAISS, ...); accepted anywhere "
                        "on the command line")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    queries_cli.add_commands(subparsers)
    curate_cli.add_commands(subparsers)
    download_cli.add_commands(subparsers)
    build_cli.add_commands(subparsers)
    shard_check.add_commands(subparsers)
    dedup_cli.add_commands(subparsers)
    train_cli.add_commands(subparsers)
    demo_cli.add_commands(subparsers)
    inspect_key.add_commands(subparsers)
    return parser


def check_output_folder(output: str | None) -> None:
    """Every command's --output is a folder (made when missing): an existing file is a usage
    error, said before any work (not a FileExistsError traceback once the job is under way)."""
    import os

    if output and "://" not in output and os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output {output} is a file; give a folder (it is made when missing)")


def main(argv: list[str] | None = None) -> int:
    from clipdata.pipeline.foundation import console

    argv = list(sys.argv[1:] if argv is None else argv)
    # --verbose anywhere: after the subcommand it would otherwise be passed on to Beam
    # (a command that runs others through main, as demo and build do, passes its own on)
    verbose = "--verbose" in argv or console.VERBOSE
    argv = [arg for arg in argv if arg != "--verbose"]
    console.configure_logging(verbose)   # before Beam's import logs its first warning
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "beam", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from clipdata.pipeline.foundation.beam_runner import EndpointUnreachable, check_job_endpoint
    from clipdata.pipeline.foundation.folder_lock import FolderBusy

    outer, console.VERBOSE = console.VERBOSE, verbose
    try:
        check_output_folder(getattr(args, "output", None))
        with console.quiet_children(verbose):
            if getattr(args, "beam", False):
                check_job_endpoint(extra)   # before a stage writes anything
            return int(args.handler(args, extra) or 0)
    except (UsageError, FolderBusy, EndpointUnreachable) as err:
        print(f"clipdata {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        console.VERBOSE = outer


if __name__ == "__main__":
    sys.exit(main())
