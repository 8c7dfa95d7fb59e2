"""`clipdata demo`: every stage that exists today, end to end, on inputs the project generates.

    clipdata demo --output demo_output        # what `make demo` runs

Today that is the query list: the demo writes a small Wikipedia in the real MediaWiki dump format
(multistream bz2 with its index), hourly pageview files and a WordNet-format database, then runs
`clipdata queries build` over them, exactly as a user would over the real files. The later stages
(curate, download, dedup, train) join the demo as they are built.
"""
from __future__ import annotations

import os
import random
import time

# The generated Wikipedia has ~1M words where the real one has ~4B, so CLIP's thresholds are
# scaled down with it; the real defaults are in `clipdata queries build --help`.
DEMO_THRESHOLDS = ["--min-count", "20", "--min-pmi", "12", "--min-bigram-count", "2", "--min-views", "70"]


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run every stage that exists on generated inputs (what `make demo` runs)"
    )
    parser.add_argument("--output", default="demo_output", help="folder for inputs and outputs (default: %(default)s)")
    parser.add_argument("--pages", type=int, default=3000, help="articles in the generated Wikipedia (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run_demo, beam=True)


def write_demo_sources(folder: str, pages: int, seed: int) -> dict:
    """A small Wikipedia dump, two hours of pageviews and a WordNet folder, in the real formats."""
    from clipdata.query_lists import synthetic

    os.makedirs(folder, exist_ok=True)
    articles = synthetic.make_article_pages(pages, seed)
    dump = os.path.join(folder, "enwiki-demo-pages-articles-multistream.xml.bz2")
    index = synthetic.write_dump(dump, articles, multistream=True)

    rng = random.Random(seed)
    titles = [a["title"] for a in articles if a["ns"] == 0 and not a["redirect"]]
    pageview_files = []
    for hour in range(2):
        path = os.path.join(folder, f"pageviews-20240101-{hour:02d}0000.gz")
        rows = [("en", title, int(2000 / (rank + 1) ** 0.8) + rng.randint(0, 40)) for rank, title in enumerate(titles)]
        rows += [("de", "Hauptseite", 5000), ("en", "Special:Search", 9000)]
        synthetic.write_pageviews(path, rows)
        pageview_files.append(path)

    wordnet = os.path.join(folder, "wordnet")
    synthetic.write_wordnet(wordnet, synthetic.make_synsets(800, seed))
    return {"dump": dump, "index": index, "pageviews": os.path.join(folder, "pageviews-*.gz"), "wordnet": wordnet}


def run_demo(args, beam_args: list[str]) -> int:
    from clipdata.pipeline import cli

    started = time.perf_counter()
    sources_dir = os.path.join(args.output, "sources")
    print(f"[1/2] writing demo inputs (MediaWiki dump, pageviews, WordNet) to {sources_dir}", flush=True)
    sources = write_demo_sources(sources_dir, args.pages, args.seed)

    queries_dir = os.path.join(args.output, "queries")
    print(f"[2/2] clipdata queries build -> {queries_dir}", flush=True)
    code = cli.main(
        ["queries", "build", "--output", queries_dir, "--wikipedia", sources["dump"],
         "--wikipedia-index", sources["index"], "--pageviews", sources["pageviews"],
         "--wordnet", sources["wordnet"], *DEMO_THRESHOLDS, *beam_args]
    )
    if code:
        return code
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; the query list is "
          f"{os.path.join(queries_dir, 'queries.txt')} (details in queries.json).")
    print("Not in the demo yet (not built): curate (#3), download (#4), dedup (#5), train (#6).")
    return 0
