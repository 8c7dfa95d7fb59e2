"""`clipdata demo`: every stage that exists today, end to end, on inputs the project generates.

    clipdata demo --output demo_output        # what `make demo` runs

1. queries: a small Wikipedia in the real MediaWiki dump format (multistream bz2 with its index),
   hourly pageview files and a WordNet-format database (whose synsets include the shape and
   colour words the synthetic web's alt texts use), then `clipdata queries build` over them.
2. the synthetic web: images the project draws (shapes and colours on varied backgrounds) with
   alt texts that describe them, plus dead links and bad files, served on 127.0.0.1.
3. curate: `clipdata curate` over that web's (url, alt text) pool.
4. download: `clipdata download` of the curated pairs into WebDataset shards, then
   `clipdata shards check` over them.
Everything runs offline; each step prints where its outputs are. The later stages (dedup, train)
join the demo as they are built.
"""
from __future__ import annotations

import json
import os
import random
import time

# The generated Wikipedia has ~1M words where the real one has ~4B, so CLIP's thresholds are
# scaled down with it; the real defaults are in `clipdata queries build --help`.
DEMO_THRESHOLDS = ["--min-count", "20", "--min-pmi", "12", "--min-bigram-count", "2", "--min-views", "70"]
# A few hundred pairs per class: t scaled down so balancing visibly trims the head entries.
DEMO_MAX_PER_ENTRY = "150"


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run every stage that exists on generated inputs (what `make demo` runs)"
    )
    parser.add_argument("--output", default="demo_output", help="folder for inputs and outputs (default: %(default)s)")
    parser.add_argument("--pages", type=int, default=3000, help="articles in the generated Wikipedia (default: %(default)s)")
    parser.add_argument("--images", type=int, default=3000, help="images on the synthetic web (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run_demo, beam=True)


def write_demo_sources(folder: str, pages: int, seed: int) -> dict:
    """A small Wikipedia dump, two hours of pageviews and a WordNet folder, in the real formats."""
    from clipdata.pipeline import synthetic_web
    from clipdata.query_lists import synthetic

    os.makedirs(folder, exist_ok=True)
    articles = synthetic.make_article_pages(pages, seed)
    dump = os.path.join(folder, "enwiki-demo-pages-articles-multistream.xml.bz2")
    index = synthetic.write_dump(dump, articles, multistream=True)

    rng = random.Random(seed)
    titles = [a["title"] for a in articles if a["ns"] == 0 and not a["redirect"]]
    for hour in range(2):
        rows = [("en", title, int(2000 / (rank + 1) ** 0.8) + rng.randint(0, 40)) for rank, title in enumerate(titles)]
        rows += [("de", "Hauptseite", 5000), ("en", "Special:Search", 9000)]
        synthetic.write_pageviews(os.path.join(folder, f"pageviews-20240101-{hour:02d}0000.gz"), rows)

    # Real WordNet holds "circle", "star", "red", "purple"...; the demo's WordNet does too.
    synsets = synthetic.make_synsets(800, seed)
    synsets += [dict(pos="n", words=[shape], gloss=f"a {shape} shape") for shape in synthetic_web.SHAPES]
    synsets += [dict(pos="a", words=[colour], gloss=f"of the colour {colour}") for colour in synthetic_web.COLOURS]
    wordnet = os.path.join(folder, "wordnet")
    synthetic.write_wordnet(wordnet, synsets)
    return {"dump": dump, "index": index, "pageviews": os.path.join(folder, "pageviews-*.gz"), "wordnet": wordnet,
            "vocabulary": synthetic.make_vocabulary(20_000, seed)[:2000]}


def run_demo(args, beam_args: list[str]) -> int:
    from clipdata.pipeline import cli, synthetic_web

    started = time.perf_counter()
    out = args.output
    steps = 5

    sources_dir = os.path.join(out, "sources")
    print(f"[1/{steps}] writing demo inputs (MediaWiki dump, pageviews, WordNet) to {sources_dir}", flush=True)
    sources = write_demo_sources(sources_dir, args.pages, args.seed)
    queries = os.path.join(out, "queries")
    code = cli.main(["queries", "build", "--output", queries, "--wikipedia", sources["dump"],
                     "--wikipedia-index", sources["index"], "--pageviews", sources["pageviews"],
                     "--wordnet", sources["wordnet"], *DEMO_THRESHOLDS, *beam_args])
    if code:
        return code

    web_dir = os.path.join(out, "web")
    print(f"\n[2/{steps}] drawing the synthetic web ({args.images:,} images + faults) in {web_dir}", flush=True)
    web = synthetic_web.build_web(web_dir, args.images, args.seed, vocabulary=sources["vocabulary"],
                                  workers=min(2, os.cpu_count() or 1))
    with synthetic_web.serve(web_dir) as base_url:
        pool = os.path.join(out, "pool.parquet")
        synthetic_web.write_pool(web, base_url, pool)
        print(f"      serving it on {base_url}; the pool of (url, alt text) pairs is {pool}", flush=True)

        curated = os.path.join(out, "curated")
        print(f"\n[3/{steps}] clipdata curate -> {curated}", flush=True)
        code = cli.main(["curate", "--pool", pool, "--queries", os.path.join(queries, "queries.txt"),
                         "--output", curated, "--max-per-entry", DEMO_MAX_PER_ENTRY, *beam_args])
        if code:
            return code

        shards = os.path.join(out, "shards")
        print(f"\n[4/{steps}] clipdata download -> {shards}", flush=True)
        code = cli.main(["download", "--input", curated, "--output", shards, "--rows-per-shard", "500",
                         "--allow-private-addresses", "--timeout", "10", *beam_args])
        if code:
            return code

    print(f"\n[5/{steps}] clipdata shards check {shards}", flush=True)
    code = cli.main(["shards", "check", shards])
    if code:
        return code

    summary = demo_summary(out)
    with open(os.path.join(out, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s. Outputs in {out}/:")
    print(f"  queries/queries.txt   {summary['entries']:,} entries")
    print(f"  curated/              {summary['curated']:,} of {summary['pool_rows']:,} pool rows kept")
    print(f"  shards/               {summary['samples']:,} samples in {summary['shards']} shards "
          f"(manifest.json has OpenCLIP's --train-data)")
    print("Not in the demo yet (not built): dedup (#5), train (#6).")
    return 0


def demo_summary(out: str) -> dict:
    with open(os.path.join(out, "queries", "queries.json")) as f:
        queries = json.load(f)
    with open(os.path.join(out, "curated", "curate_stats.json")) as f:
        curated = json.load(f)
    with open(os.path.join(out, "shards", "manifest.json")) as f:
        manifest = json.load(f)
    return {"entries": queries["entries"], "pool_rows": curated["rows_read"], "curated": curated["rows_kept"],
            "dropped": curated["dropped"], "shards": len(manifest["shards"]),
            "samples": manifest["totals"]["samples"], "download_errors": manifest["totals"].get("errors", {})}
