"""`clipdata dedup`: contamination report against evaluation test sets; `dedup apply-blocklist`."""
from __future__ import annotations

import argparse

EXAMPLE = """examples:
  clipdata dedup --shards shards/ --test-set cifar10=data/cifar10_test \\
      --test-set imagenet=data/imagenet/val --output report/
  # shards made elsewhere (no phash column: images are hashed from the tars), all local cores
  clipdata dedup --shards 'laion/{00000..00099}.tar' --test-set stl10=stl10_test.parquet \\
      --output report/ --direct_num_workers 0
  # with per-example eval results: All / Clean / Overlap accuracy and CLIP's binomial test
  clipdata dedup --shards shards/ --test-set cifar10=data/cifar10_test \\
      --predictions cifar10=cifar10_preds.csv --output report/
  # drop the matched training samples from the shards
  clipdata dedup apply-blocklist --shards shards/ --blocklist report/blocklist.txt --output clean/
writes report/report.html (self-contained: open it in a browser), report.json, pairs.csv and
blocklist.txt (training keys to drop)."""

APPLY_EXAMPLE = """writes every committed shard of --shards into --output without the blocklisted samples:
the tars keep every other member byte for byte, the parquets keep every row (blocked ones with
status "blocked" and the contaminated test set in error_message), stats and manifest.json follow;
blocklist_applied.json says what was blocked and which keys were not found."""


def add_commands(subparsers) -> None:
    from clipdata.pipeline.foundation.cli_help import BEAM_OPTIONS_HELP

    parser = subparsers.add_parser(
        "dedup",
        help="find test-set images in the shards (contamination report)",
        description="Which images of each evaluation test set have a near duplicate in the training "
        "shards (CLIP's Data Overlap Analysis): a learned copy descriptor proposes candidates (a "
        "crop window's checked by its pHash within --radius), each screened on the stored thumbnail "
        "and verified on the pixels.",
        epilog=EXAMPLE + "\n\n" + BEAM_OPTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_report_arguments(parser)
    parser.set_defaults(handler=run_dedup_command, beam=True)

    verbs = parser.add_subparsers(dest="verb", metavar="[apply-blocklist]", action=_VerbOrBeamValue,
                                  title="optional verb")
    apply = verbs.add_parser(
        "apply-blocklist",
        help="rewrite shards without the blocklisted training samples",
        epilog=APPLY_EXAMPLE + "\n\n" + BEAM_OPTIONS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    apply.add_argument("--shards", required=True, help="folder of committed shards (clipdata download's output)")
    apply.add_argument("--blocklist", required=True, help="training keys to drop, one per line (blocklist.txt)")
    apply.add_argument("--output", required=True, help="new folder for the filtered shards")
    apply.add_argument("--report", default=None,
                       help="report.json naming the test set of each key (default: the one beside --blocklist)")
    apply.set_defaults(handler=run_apply_command, beam=True)
    verbs.choices = _AnyValue(verbs.choices)


class _VerbOrBeamValue(argparse._SubParsersAction):
    """The optional verb (`dedup apply-blocklist`), told apart from the value of a Beam flag.

    Beam flags reach us unparsed, so in `clipdata dedup --direct_num_workers 2 --output r/` the
    '2' is the first positional argument and argparse would take it for a verb, and everything
    after it for the verb's arguments. A first positional that is not a verb is handed back to
    Beam (it follows its flag) and the rest is parsed as `dedup`'s own arguments again.
    """

    # argparse checks a positional against `choices` before calling the action: _AnyValue lets
    # every value through to here.

    def __call__(self, parser, namespace, values, option_string=None):
        if values and values[0] in self._name_parser_map:
            return super().__call__(parser, namespace, values, option_string)
        setattr(namespace, self.dest, None)
        _, extras = parser.parse_known_args(values[1:], namespace)
        unrecognized = getattr(namespace, argparse._UNRECOGNIZED_ARGS_ATTR, [])
        setattr(namespace, argparse._UNRECOGNIZED_ARGS_ATTR, unrecognized + values[:1] + extras)


class _AnyValue(dict):
    def __contains__(self, value) -> bool:
        return True


def add_report_arguments(parser) -> None:
    # Not required=True: `dedup apply-blocklist` shares this parser; the handler checks them, and
    # --help lists them apart as required.
    required = parser.add_argument_group("required (except for `clipdata dedup apply-blocklist`)")
    required.add_argument("--shards", action="append", metavar="DIR_OR_PATTERN",
                        help="training shards: a folder (committed shards of clipdata download, or any "
                        "folder of .tar/.parquet pairs), a .tar or .parquet, a glob or a brace pattern "
                        "('shards/{00000..00099}.tar'); repeatable")
    required.add_argument("--test-set", action="append", default=[], metavar="NAME=PATH",
                        help="an evaluation test set: an image folder (class per subfolder or flat), "
                        "WebDataset tars (a .tar, folder or brace pattern) or a parquet with image bytes "
                        "or paths; repeatable")
    required.add_argument("--output", help="report folder (report.html, report.json, pairs.csv, blocklist.txt)")
    parser.add_argument("--predictions", action="append", default=[], metavar="NAME=CSV",
                        help="per-example results of a model on test set NAME (id,correct): adds All / "
                        "Clean / Overlap accuracy and the binomial test; repeatable")
    parser.add_argument("--radius", type=int, default=None,
                        help="Hamming radius in bits, inclusive, within which a crop window's pHash must be "
                        "to keep the descriptor's match on it (the whole search with --no-descriptor) "
                        "(default: the detection core's, loose on purpose: candidates are verified on pixels)")
    parser.add_argument("--views", default=None,
                        help="test-image views to hash: `default` (23: the picture, its mirror, padded, and "
                        "85%%/80%% windows at nine places), `fast` (5: image,mirror,border,border_mirror,crop90; "
                        "fewer rows to search, finds far fewer 10-20%% crops) or a comma-separated list")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="hash only: every candidate within --radius counts as a duplicate (fast, "
                        "many false positives on drawings and clip art)")
    parser.add_argument("--no-descriptor", dest="descriptor", action="store_false",
                        help="propose candidates by pHash alone, without the learned copy descriptor "
                        "(many more candidates to screen: for comparison)")
    parser.add_argument("--similar", type=float, default=None,
                        help="cosine of the copy descriptors from which a pair is a candidate (default: "
                        "the one shipped with the descriptor's weights)")
    parser.add_argument("--per-image", type=int, default=3,
                        help="with the descriptor: candidates kept per training image, its most alike test "
                        "images, those found on the descriptor alone last (bounds the cost per training image; "
                        "default: %(default)s)")
    parser.add_argument("--index", choices=("auto", "flat", "ivf"), default="auto",
                        help="FAISS indexes over the test side (default: %(default)s: the pHash index exact, "
                        "the descriptor index IVF from ~1,000 test images (20,000 descriptor rows); flat: "
                        "both exact; ivf: both approximate)")
    parser.add_argument("--image-col", default=None, help="parquet test sets: column of image bytes")
    parser.add_argument("--path-col", default=None, help="parquet test sets: column of image paths")
    parser.add_argument("--id-col", default=None, help="parquet test sets: column of image ids")
    parser.add_argument("--label-col", default=None, help="parquet test sets: column of labels")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes hashing the test sets (default: one per core)")
    parser.add_argument("--embeddings", default=None, metavar="CHECKPOINT",
                        help="also take as candidates the pairs whose image embeddings, from this "
                        "`clipdata train` checkpoint or run folder, are close (cosine >= --semantic-threshold)")
    parser.add_argument("--semantic-threshold", type=float, default=0.92,
                        help="cosine similarity for --embeddings candidates (default: %(default)s)")


def _named_paths(values: list[str], flag: str) -> list[tuple[str, str]]:
    from clipdata.pipeline.foundation import eval_sets
    from clipdata.pipeline.foundation.errors import UsageError

    named = []
    for value in values:
        try:
            named.append(eval_sets.parse_test_set_arg(value))
        except ValueError as err:
            raise UsageError(f"{flag}: {err}") from err
    names = [n for n, _ in named]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UsageError(f"{flag}: {', '.join(repeated)} given more than once")
    return named


def run_dedup_command(args, beam_args: list[str]) -> int:
    from clipdata.dedup import overlap, report, significance
    from clipdata.pipeline.foundation import beam_runner, eval_sets, folder_lock
    from clipdata.pipeline.foundation.errors import UsageError

    missing = [flag for flag, value in (("--shards", args.shards), ("--test-set", args.test_set),
                                        ("--output", args.output)) if not value]
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)} "
                         "(or use `clipdata dedup apply-blocklist`)")
    test_sets = _named_paths(args.test_set, "--test-set")
    prediction_files = dict(_named_paths(args.predictions, "--predictions"))
    unknown = sorted(set(prediction_files) - {name for name, _ in test_sets})
    if unknown:
        raise UsageError(f"--predictions for {', '.join(unknown)}, which no --test-set names")
    try:
        predictions = {name: significance.read_predictions(path) for name, path in prediction_files.items()}
    except significance.PredictionsError as err:
        raise UsageError(str(err)) from err

    config = overlap.OverlapConfig(
        shards=args.shards, test_sets=test_sets, output=args.output, radius=args.radius,
        views=tuple(v.strip() for v in args.views.split(",") if v.strip()) if args.views else None,
        verify=args.verify, index=args.index,
        columns=eval_sets.Columns(args.image_col, args.path_col, args.id_col, args.label_col),
        workers=args.workers, embeddings=args.embeddings,
        semantic_threshold=args.semantic_threshold, descriptor=args.descriptor, similar=args.similar,
        per_image=args.per_image,
    )
    beam_runner.quiet_beam_logs()
    with folder_lock.writer_lock(args.output, "dedup"):   # one writer per folder
        try:
            result = overlap.run_overlap(config, beam_args)
        except (overlap.OverlapError, eval_sets.TestSetError) as err:
            raise UsageError(str(err)) from err
        written = report.write_report(result, args.output, predictions)
    print(report.summary_table(written, args.output))
    return 0


def run_apply_command(args, beam_args: list[str]) -> int:
    import json

    from clipdata.dedup import blocklist
    from clipdata.pipeline.foundation import beam_runner
    from clipdata.pipeline.foundation.errors import UsageError

    beam_runner.quiet_beam_logs()
    reasons = None
    if args.report:
        try:
            with open(args.report, encoding="utf-8") as f:
                reasons = blocklist.reasons_from_report(json.load(f))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f"--report {args.report}: {err}") from err
    try:
        summary = blocklist.apply_blocklist(args.shards, args.blocklist, args.output, reasons, beam_args)
    except blocklist.BlocklistError as err:
        raise UsageError(str(err)) from err
    totals = summary["totals"]
    print(f"blocked {summary['samples_blocked']:,} samples of {summary['keys_listed']:,} listed keys "
          f"({summary['keys_not_found']:,} not found) in {summary['shards_rewritten']:,} of "
          f"{summary['shards']:,} shards -> {args.output}")
    print(f"  {totals['samples']:,} samples remain in {totals['shards']:,} shards")
    for error in summary["shards_unreadable"]:
        print(f"  unreadable: {error['shard']}: {error['error']}")
    return 1 if summary["shards_unreadable"] else 0
