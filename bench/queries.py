"""Scan throughput of the query-list dump-counting job, against plain bz2 decompression on one core.

    .venv/bin/python bench/queries.py                 # 200 MB dump, 1 and 2 local workers
    .venv/bin/python bench/queries.py --mb 400 --workers 4

Generates (once, cached in --workdir) a multistream MediaWiki dump of at least --mb MB of
uncompressed XML with its index, in the real format, then times on the same file:
  - bz2 decompression of the whole file on one core (the floor any scan of the dump pays),
  - markup stripping alone and word/bigram counting alone on a sample of pages (where time goes),
  - the whole counting job of `clipdata queries build` (words >= 100, bigrams with their PMI join,
    outputs written) on the in-process Beam runner with 1 and with --workers worker processes.
Throughput is MB of uncompressed dump per second; the ratio is against bz2 decompression.
"""
from __future__ import annotations

import argparse
import bz2
import os
import shutil
import sys
import time

from clipdata.query_lists import build, ngrams, synthetic, wikidump


def generate_dump(workdir: str, min_mb: int, seed: int = 0) -> tuple[str, str]:
    dump = os.path.join(workdir, f"enwiki-synthetic-{min_mb}mb-pages-articles-multistream.xml.bz2")
    index = dump[: -len(".xml.bz2")] + "-index.txt.bz2"
    if os.path.exists(dump) and os.path.exists(index):
        return dump, index
    os.makedirs(workdir, exist_ok=True)
    # ~2.9 KB of XML per page: generate a few percent more pages than needed.
    n_pages = int(min_mb * 1e6 / 2900 * 1.05)
    print(f"generating a {min_mb} MB dump ({n_pages:,} pages) in {workdir} ...", flush=True)
    tmp = dump + ".tmp.xml.bz2"
    tmp_index = synthetic.write_dump(tmp, synthetic.iter_article_pages(n_pages, seed), multistream=True)
    os.replace(tmp, dump)
    os.replace(tmp_index, index)
    return dump, index


def time_bz2(dump: str) -> tuple[int, float]:
    """Uncompressed bytes and seconds to decompress every stream of the file on one core."""
    start, total = time.perf_counter(), 0
    with open(dump, "rb") as f:
        decompressor = bz2.BZ2Decompressor()
        while chunk := f.read(1 << 20):
            while chunk:
                total += len(decompressor.decompress(chunk))
                if decompressor.eof:
                    chunk = decompressor.unused_data
                    decompressor = bz2.BZ2Decompressor()
                else:
                    chunk = b""
    return total, time.perf_counter() - start


def time_steps(dump: str, index: str, sample_pages: int = 3000) -> dict[str, float]:
    """MB/s (of wikitext) of markup stripping and of counting, each alone on one core."""
    start, end = wikidump.stream_ranges(index)[0][0], None
    texts = []
    for page in wikidump.read_pages(dump, start, end):
        if wikidump.is_article(page) is None:
            texts.append(page.text)
        if len(texts) >= sample_pages:
            break
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    t0 = time.perf_counter()
    plain = [wikidump.plain_text(t) for t in texts]
    t1 = time.perf_counter()
    words, pairs = ngrams.Counter(), ngrams.Counter()
    for text in plain:
        ngrams.count_ngrams(text, words, pairs)
    t2 = time.perf_counter()
    return {"strip": mb / (t1 - t0), "count": mb / (t2 - t1)}


def time_job(dump: str, index: str, workdir: str, workers: int) -> float:
    output = os.path.join(workdir, f"out-{workers}w")
    shutil.rmtree(output, ignore_errors=True)
    config = build.BuildConfig(
        output=output, wikipedia=[dump], wikipedia_index=[index], sources=("digits", "unigrams", "bigrams")
    )
    start = time.perf_counter()
    build.run_build(config, ["--direct_num_workers", str(workers)])
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="minimum uncompressed dump size in MB")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes for the second run")
    parser.add_argument("--workdir", default="bench_output/queries")
    args = parser.parse_args(argv)

    from clipdata.pipeline.foundation import beam_runner

    beam_runner.quiet_beam_logs()
    dump, index = generate_dump(args.workdir, args.mb)
    # Several work items per worker so the local workers stay busy to the end.
    build.DUMP_BYTES_PER_WORK_ITEM = max(1, os.path.getsize(dump) // (8 * args.workers))

    raw_bytes, bz2_seconds = time_bz2(dump)
    mb = raw_bytes / 1e6
    bz2_rate = mb / bz2_seconds
    steps = time_steps(dump, index)
    rows = [("bz2 decompression, 1 core (the floor)", bz2_seconds, bz2_rate)]
    for workers in sorted({1, args.workers}):
        seconds = time_job(dump, index, args.workdir, workers)
        rows.append((f"clipdata counting job, {workers} worker(s)", seconds, mb / seconds))

    print(f"\ndump: {dump}\n  {os.path.getsize(dump) / 1e6:.1f} MB bz2, {mb:.1f} MB uncompressed XML, "
          f"{os.cpu_count()} cores")
    print(f"  alone, 1 core: markup stripping {steps['strip']:.2f} MB/s of wikitext, "
          f"word+bigram counting {steps['count']:.2f} MB/s")
    print(f"\n{'':<42}{'seconds':>9}{'MB/s':>9}{'vs bz2':>9}")
    for name, seconds, rate in rows:
        print(f"{name:<42}{seconds:>9.1f}{rate:>9.2f}{rate / bz2_rate:>8.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
