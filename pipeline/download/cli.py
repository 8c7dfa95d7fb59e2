"""`clipdata download`: a url/caption table -> WebDataset shards (`clipdata build` runs it in pipeline/build.py)."""
from __future__ import annotations

import argparse
import sys

DOWNLOAD_EXAMPLE = """examples:
  clipdata download --input curated/ --output shards/            # a `clipdata curate` output
  clipdata download --input laion.parquet --url-col URL --caption-col TEXT --output shards/ \\
      --image-size 256 --resize-mode keep_ratio --direct_num_workers 0
  clipdata download --output shards/ --retry-failed                # only the rows that failed
writes shards/{00000..N}.tar (key.jpg, key.txt, key.json), {shard}.parquet (every row with its
status and error_message), {shard}_stats.json and manifest.json (OpenCLIP's --train-data and
--train-num-samples). A rerun skips finished shards."""


def add_download_arguments(parser, with_input: bool = True) -> None:
    if with_input:
        parser.add_argument("--input", action="append", default=[], metavar="PATH",
                            help="curated pairs (a `clipdata curate` output folder) or any table with url and "
                            "caption columns (parquet/csv/tsv/jsonl, a file, glob or folder); repeatable")
        parser.add_argument("--url-col", default="url", help="url column (default: %(default)s)")
        parser.add_argument("--caption-col", default="caption", help="caption column (default: %(default)s)")
    group = parser.add_argument_group("shards")
    group.add_argument("--rows-per-shard", type=int, default=10_000, help="input rows per shard (default: %(default)s)")
    group.add_argument("--retry-failed", action="store_true",
                       help="in a finished output folder, download again only the rows that failed")
    group.add_argument("--resize-threads", type=int, default=4,
                       help="resize threads per worker, overlapping the downloads (default: %(default)s)")
    group = parser.add_argument_group("images (img2dataset's resizer and its option names)")
    group.add_argument("--image-size", type=int, default=256, help="(default: %(default)s)")
    group.add_argument("--resize-mode", default="border",
                       choices=["no", "border", "keep_ratio", "keep_ratio_largest", "center_crop"],
                       help="(default: %(default)s)")
    group.add_argument("--resize-only-if-bigger", action="store_true")
    group.add_argument("--encode-format", default="jpg", choices=["jpg", "png", "webp"], help="(default: %(default)s)")
    group.add_argument("--encode-quality", type=int, default=None,
                       help="jpg/webp: quality 0-100 (default 95); png: compression level 0-9 (default 6)")
    group.add_argument("--min-image-size", type=int, default=0, help="drop images smaller than this (default: 0)")
    group.add_argument("--max-aspect-ratio", type=float, default=float("inf"), help="(default: no limit)")
    group.add_argument("--max-pixels", type=int, default=50_000_000,
                       help="refuse images with more pixels than this, read from the header before decoding "
                       "(decompression bombs; default: %(default)s)")
    group = parser.add_argument_group("HTTP")
    group.add_argument("--timeout", type=float, default=20.0,
                       help="total deadline of one request attempt in seconds, body included (default: %(default)s)")
    group.add_argument("--retries", type=int, default=2, help="extra attempts on 429/5xx/connection errors (default: %(default)s)")
    group.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024, help="(default: %(default)s)")
    group.add_argument("--concurrency", type=int, default=64, help="requests in flight per worker (default: %(default)s)")
    group.add_argument("--per-host-concurrency", type=int, default=16, help="(default: %(default)s)")
    group.add_argument("--max-redirects", type=int, default=5, help="(default: %(default)s)")
    group.add_argument("--user-agent", default=None, help="(default: clipdata's, naming the project)")
    group.add_argument("--ignore-opt-outs", action="store_true",
                       help="download images whose X-Robots-Tag says noai/noimageai/noindex/noimageindex "
                       "(default: respect them)")
    group.add_argument("--allow-private-addresses", action="store_true",
                       help="allow hosts on loopback/private/link-local addresses (default: refused; tests and "
                       "the demo serve on 127.0.0.1)")


def download_config(args, inputs: list[str]):
    from clipdata.pipeline.download import fetch, images, job as download

    fetch_config = fetch.FetchConfig(
        timeout=args.timeout, retries=args.retries, max_body_bytes=args.max_body_bytes,
        concurrency=args.concurrency, per_host_concurrency=args.per_host_concurrency,
        max_redirects=args.max_redirects, respect_opt_outs=not args.ignore_opt_outs,
        allow_private_addresses=args.allow_private_addresses,
    )
    if args.user_agent:
        fetch_config.user_agent = args.user_agent
    image_config = images.ImageConfig(
        image_size=args.image_size, resize_mode=args.resize_mode, resize_only_if_bigger=args.resize_only_if_bigger,
        encode_format=args.encode_format, encode_quality=args.encode_quality, min_image_size=args.min_image_size,
        max_aspect_ratio=args.max_aspect_ratio, max_pixels=args.max_pixels,
    )
    return download.DownloadConfig(
        input=inputs, output=args.output, url_col=getattr(args, "url_col", "url"),
        caption_col=getattr(args, "caption_col", "caption"), rows_per_shard=args.rows_per_shard,
        resize_threads=args.resize_threads, retry_failed=args.retry_failed, image=image_config, fetch=fetch_config,
    )


def add_commands(subparsers) -> None:
    from clipdata.pipeline.foundation.cli_help import BEAM_OPTIONS_HELP

    parser = subparsers.add_parser(
        "download", help="download url/caption pairs into WebDataset shards (img2dataset's layout)",
        epilog=DOWNLOAD_EXAMPLE + "\n\n" + BEAM_OPTIONS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="output folder for the shards")
    add_download_arguments(parser)
    parser.set_defaults(handler=run_download_command, beam=True)


def run_download_command(args, beam_args: list[str]) -> int:
    from clipdata.pipeline.download import job as download
    from clipdata.pipeline.foundation import beam_runner
    from clipdata.pipeline.foundation.errors import UsageError

    beam_runner.quiet_beam_logs()
    if not args.input and not args.retry_failed:
        raise UsageError("give --input (curated pairs or a url/caption table), or --retry-failed")
    try:
        summary = download.run_download(download_config(args, args.input), beam_args)
    except download.DownloadError as err:
        raise UsageError(str(err)) from err
    print(format_summary(summary))
    if summary["rows"] and not summary["status"].get("success", 0):
        # nothing to train on: a failure, whatever the reasons (they are in the lines above)
        print(f"clipdata download: error: none of the {summary['rows']:,} rows gave an image; see the reasons "
              "above (--timeout, --allow-private-addresses and the input's URL column are the usual causes)",
              file=sys.stderr)
        return 1
    return 0


def format_summary(summary: dict) -> str:
    status = summary["status"]
    rows = max(summary["rows"], 1)
    lines = [f"{summary['shards']} shards in {summary['output']} ({summary['shards_downloaded_now']} written now, "
             f"{summary['seconds']:.1f} s): {status.get('success', 0):,} of {summary['rows']:,} rows downloaded",
             f"  {'success':<22}{status.get('success', 0):>10,}  {100 * status.get('success', 0) / rows:5.1f}%"]
    for kind, n in summary["errors"].items():
        lines.append(f"  {kind:<22}{n:>10,}  {100 * n / rows:5.1f}%")
    lines.append(f"  OpenCLIP: --dataset-type webdataset --train-data '{summary['train_data']}' "
                 f"--train-num-samples {summary['train_num_samples']}")
    return "\n".join(lines)
