"""`clipdata demo`: every stage that exists today, end to end, on inputs the project generates.

    clipdata demo --output demo_output        # what `make demo` runs

1. queries: a small Wikipedia in the real MediaWiki dump format (multistream bz2 with its index),
   hourly pageview files and a WordNet-format database (whose synsets include the shape and
   colour words the synthetic web's alt texts use), then `clipdata queries build` over them; and
   small Wikipedias in German, Chinese, Japanese, Thai and Arabic, each built into its own list
   with `clipdata queries build --lang` (MetaCLIP 2's recipe), all in queries/manifest.json.
2. the synthetic web: images the project draws (shapes and colours on varied backgrounds) with
   alt texts that describe them (a fifth of them in those five languages), plus dead links and bad
   files, served on 127.0.0.1.
3. curate: `clipdata curate` over that web's (url, alt text) pool with the worldwide list: each
   caption matched against its own language's list and balanced with its language's t.
4. download: `clipdata download` of the curated pairs into WebDataset shards, then
   `clipdata shards check` over them.
5. dedup: two labelled test sets of new images of the same classes, one with planted
   transformed copies of web images and lookalikes; `clipdata dedup` reports the overlap and
   `clipdata dedup apply-blocklist` writes shards without it.
6. train: a tiny CLIP trained on the clean shards, with zero-shot evaluation on the held-out
   test set ("a photo of a red circle." ...) as it trains.
7. index.html: one page linking every output, with plots.
Everything runs offline; each step prints where its outputs are.
"""
from __future__ import annotations

import json
import os
import random
import time

from clipdata.pipeline.foundation.words import count, percent

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
    parser.add_argument("--test-images", type=int, default=150,
                        help="images per synthetic test set (default: %(default)s)")
    parser.add_argument("--planted", type=int, default=15,
                        help="transformed copies of training images planted in the first test set (default: %(default)s)")
    parser.add_argument("--train-steps", type=int, default=200, help="training steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every generated input and of training (default: %(default)s)")
    parser.set_defaults(handler=run_demo, beam=True)


def write_demo_sources(folder: str, pages: int, seed: int) -> dict:
    """A small Wikipedia dump, two hours of pageviews and a WordNet folder, in the real formats."""
    from clipdata.pipeline.demo import synthetic_web
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
            "vocabulary": synthetic.make_vocabulary(20_000, seed)[:2000],
            "languages": write_language_sources(folder, seed)}


def write_language_sources(folder: str, seed: int) -> dict:
    """Per worldwide-demo language: a small Wikipedia dump in its language and script (its own
    namespace names and dbname), its titles in an hour of pageviews, and Open Multilingual Wordnet
    tab files for the languages OMW has (Chinese and Japanese here)."""
    from clipdata.pipeline.demo.synthetic_web import languages
    from clipdata.query_lists import synthetic

    rng = random.Random(f"languages:{seed}")
    dumps, views = {}, []
    for language in languages.LANGUAGES:
        pages = languages.article_pages(language, 120, seed)
        dumps[language] = os.path.join(folder, f"{language}wiki-demo-pages-articles.xml.bz2")
        synthetic.write_dump(dumps[language], pages, dbname=f"{language}wiki",
                             namespaces=languages.NAMESPACES[language], lang=language)
        views += [(language, p["title"], rng.randint(60, 900)) for p in pages if p["ns"] == 0 and not p["redirect"]]
    synthetic.write_pageviews(os.path.join(folder, "pageviews-languages-20240101-000000.gz"), views)
    omw = os.path.join(folder, "omw")
    for code, language in (("cmn", "zh"), ("jpn", "ja")):
        os.makedirs(os.path.join(omw, code), exist_ok=True)
        lemmas = list(languages.COLOURS[language].values()) + list(languages.SHAPES[language].values())
        with open(os.path.join(omw, code, f"wn-data-{code}.tab"), "w", encoding="utf-8") as f:
            f.write(f"# demo wordnet\t{code}\n")
            f.writelines(f"{10_000 + i:08d}-n\t{code}:lemma\t{lemma}\n" for i, lemma in enumerate(lemmas))
    return {"dumps": dumps, "pageviews": os.path.join(folder, "pageviews-languages-*.gz"), "omw": omw}


def run_demo(args, beam_args: list[str]) -> int:
    from clipdata.pipeline import cli
    from clipdata.pipeline.demo import page as demo_report, synthetic_web

    started = time.perf_counter()
    out = args.output
    steps = 7
    seconds = {}  # wall time of each step, shown in the summary and on the page
    last = started

    def lap(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        seconds[name] = round(now - last, 1)
        last = now

    sources_dir = os.path.join(out, "sources")
    print(f"[1/{steps}] writing demo inputs (MediaWiki dumps in 6 languages, pageviews, WordNet) to {sources_dir}",
          flush=True)
    sources = write_demo_sources(sources_dir, args.pages, args.seed)
    queries = os.path.join(out, "queries")
    code = cli.main(["queries", "build", "--output", queries, "--wikipedia", sources["dump"],
                     "--wikipedia-index", sources["index"], "--pageviews", sources["pageviews"],
                     "--wordnet", sources["wordnet"], *DEMO_THRESHOLDS, *beam_args])
    if code:
        return code
    # The worldwide list (MetaCLIP 2): one list per language beside English's, and the manifest
    # curate reads; English's stays CLIP's list at queries/queries.txt.
    from clipdata.query_lists.build import update_manifest

    for language, dump in sources["languages"]["dumps"].items():
        code = cli.main(["queries", "build", "--lang", language, "--output", queries, "--wikipedia", dump,
                         "--pageviews", sources["languages"]["pageviews"], "--wordnet", sources["languages"]["omw"],
                         "--min-pmi", "4", *beam_args])
        if code:
            return code
    manifest = update_manifest(queries, "en", "queries.txt")
    lap("queries")

    web_dir = os.path.join(out, "web")
    print(f"\n[2/{steps}] drawing the synthetic web ({args.images:,} images + faults) in {web_dir}", flush=True)
    web = synthetic_web.build_web(web_dir, args.images, args.seed, vocabulary=sources["vocabulary"],
                                  workers=min(2, os.cpu_count() or 1), languages=synthetic_web.LANGUAGES)
    with synthetic_web.serve(web_dir) as base_url:
        pool = os.path.join(out, "pool.parquet")
        synthetic_web.write_pool(web, base_url, pool)
        print(f"      serving it on {base_url}; the pool of (url, alt text) pairs is {pool}", flush=True)
        lap("synthetic web")

        curated = os.path.join(out, "curated")
        print(f"\n[3/{steps}] clipdata curate -> {curated}", flush=True)
        code = cli.main(["curate", "--pool", pool, "--queries", manifest,
                         "--output", curated, "--max-per-entry", DEMO_MAX_PER_ENTRY, *beam_args])
        if code:
            return code
        lap("curate")

        shards = os.path.join(out, "shards")
        print(f"\n[4/{steps}] clipdata download -> {shards}", flush=True)
        code = cli.main(["download", "--input", curated, "--output", shards, "--rows-per-shard", "500",
                         "--allow-private-addresses", "--timeout", "10", *beam_args])
        if code:
            return code
        lap("download")

    print(f"\n[5/{steps}] clipdata shards check {shards}", flush=True)
    code = cli.main(["shards", "check", shards])
    if code:
        return code
    lap("shards check")

    testsets = os.path.join(out, "testsets")
    print(f"\n[6/{steps}] test sets in {testsets}; clipdata dedup -> {out}/dedup", flush=True)
    # Copies are planted from the web images that reached the shards: curation's balancing drops
    # some of every head class, and a copy of a dropped image is in no training set to be found.
    in_shards = downloaded_web(web, shards)
    synthetic_web.build_test_set(os.path.join(testsets, "planted"), args.test_images, args.seed + 1,
                               planted_from=in_shards, planted_count=args.planted,
                               lookalike_count=max(1, args.planted // 2))
    synthetic_web.build_test_set(os.path.join(testsets, "heldout"), args.test_images, args.seed + 2,
                                 planted_from=web, planted_count=0)
    dedup = os.path.join(out, "dedup")
    # Verifying the candidates on the pixels is most of the demo's time: on every core, unless
    # the user chose the workers.
    workers = [] if any(a.startswith("--direct_num_workers") for a in beam_args) or (os.cpu_count() or 1) < 2 \
        else ["--direct_num_workers", str(min(4, os.cpu_count()))]
    code = cli.main(["dedup", "--shards", shards, "--test-set", f"planted={testsets}/planted",
                     "--test-set", f"heldout={testsets}/heldout", "--output", dedup, *workers, *beam_args])
    if code:
        return code
    clean = os.path.join(out, "shards_clean")
    code = cli.main(["dedup", "apply-blocklist", "--shards", shards, "--blocklist",
                     os.path.join(dedup, "blocklist.txt"), "--output", clean])
    if code:
        return code
    lap("dedup + blocklist")

    train = os.path.join(out, "train")
    print(f"\n[7/{steps}] clipdata train (tiny-vit, {args.train_steps} steps) -> {train}", flush=True)
    code = cli.main(["train", "--data", clean, "--output", train, "--model", "tiny-vit",
                     "--steps", str(args.train_steps), "--batch-size", str(args.batch_size), "--lr", "1e-3",
                     "--warmup", str(max(1, args.train_steps // 10)), "--vocab-size", "2000",
                     "--eval-data", os.path.join(testsets, "heldout"),
                     "--eval-every", str(max(1, args.train_steps // 5)), "--log-every", "10",
                     "--ckpt-every", str(args.train_steps), "--workers", "1", "--seed", str(args.seed)])
    if code:
        return code
    lap("train + zero-shot")

    summary = demo_summary(out)
    summary["chance"] = 1 / len(synthetic_web.make_classes())
    summary["seconds"] = {**seconds, "total": round(time.perf_counter() - started, 1)}
    with open(os.path.join(out, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    index = demo_report.write_index(out)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s. Outputs in {out}/:")
    print(f"  queries/queries.txt   {summary['entries']:,} entries")
    print(f"  curated/              {summary['curated']:,} of {summary['pool_rows']:,} pool rows kept")
    if summary.get("languages"):
        print("                        kept per language: " + ", ".join(
            f"{k} {v['kept']:,}" for k, v in summary["languages"].items()))
    print(f"  shards/               {summary['samples']:,} samples in {summary['shards']} shards")
    for test_set in summary["overlap"]:
        print(f"  dedup/                {test_set['name']}: {test_set['overlap']} of {test_set['size']} test images "
              f"overlap the shards ({percent(test_set['overlap'] / test_set['size'])})")
    if "planted_found" in summary:
        print(f"                        {takeaway_contamination(summary)}")
    print(f"  shards_clean/         {summary['clean_samples']:,} samples after the blocklist")
    if summary.get("zeroshot_top1") is not None:
        print(f"  train/                zero-shot top-1 {percent(summary['zeroshot_top1'])} on the held-out test "
              f"set (chance {percent(summary['chance'])})")
    print("  time per step: " + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items()))
    print(f"Open {index} for the page with every output and plot.")
    return 0


def downloaded_web(web: dict, shards_dir: str) -> dict:
    """The web manifest with only the images the download stored (matched by the URL's path:
    the server that gave the pool its host and port is gone by now)."""
    from urllib.parse import urlsplit

    from clipdata.pipeline.foundation import shards

    paths = set()
    for shard_id in shards.committed_shards(shards_dir):
        rows = shards.read_shard_table(shards_dir, shard_id).select(["url", "status"]).to_pylist()
        paths.update(urlsplit(row["url"]).path for row in rows if row["status"] == "success")
    return dict(web, images=[image for image in web["images"] if image["url"] in paths])


def demo_summary(out: str) -> dict:
    def load(*parts):
        path = os.path.join(out, *parts)
        return json.load(open(path)) if os.path.exists(path) else None

    queries, curated = load("queries", "queries.json"), load("curated", "curate_stats.json")
    manifest, clean, report = load("shards", "manifest.json"), load("shards_clean", "manifest.json"), load("dedup", "report.json")
    summary = {"entries": queries["entries"], "pool_rows": curated["rows_read"], "curated": curated["rows_kept"],
               "languages": {k: {"matched": v["captions_matched"], "kept": v["pairs_kept"]}
                             for k, v in curated.get("languages", {}).items()},
               "dropped": curated["dropped"], "shards": len(manifest["shards"]),
               "samples": manifest["totals"]["samples"], "download_errors": manifest["totals"].get("errors", {})}
    if report:
        summary["overlap"] = [{k: s[k] for k in ("name", "size", "overlap", "overlap_percent")} for s in report["test_sets"]]
        summary.update(planted_outcome(out, report))
    if clean:
        summary["clean_samples"] = clean["totals"]["samples"]
    log = os.path.join(out, "train", "log.jsonl")
    if os.path.exists(log):
        evals = [json.loads(line) for line in open(log) if "zeroshot/top1" in line]
        summary["zeroshot_top1"] = evals[-1]["zeroshot/top1"] if evals else None
        summary["zeroshot_top5"] = evals[-1].get("zeroshot/top5") if evals else None
    return summary


def planted_outcome(out: str, report: dict) -> dict:
    """What the contamination check found of what the demo planted: copies found of those planted,
    lookalikes (same class, different picture) and held-out images wrongly flagged."""
    flagged = {s["name"]: set(s["overlap_ids"]) for s in report["test_sets"]}
    outcome = {}
    path = os.path.join(out, "testsets", "planted", "test_set.json")
    if os.path.exists(path) and "planted" in flagged:
        images = json.load(open(path))["images"]
        copies = [i["path"] for i in images if i["kind"] == "planted"]
        lookalikes = [i["path"] for i in images if i["kind"] == "lookalike"]
        outcome.update(planted=len(copies), planted_found=sum(p in flagged["planted"] for p in copies),
                       lookalikes=len(lookalikes),
                       lookalikes_flagged=sum(p in flagged["planted"] for p in lookalikes))
    if "heldout" in flagged:
        size = next(s["size"] for s in report["test_sets"] if s["name"] == "heldout")
        outcome.update(heldout=size, heldout_flagged=len(flagged["heldout"]))
    return outcome


def takeaway_contamination(summary: dict) -> str:
    """The demo's contamination outcome in one sentence (the console's summary and the page's first line)."""
    parts = [f"{summary['planted_found']} of {count(summary['planted'], 'planted copy', 'planted copies')} found"]
    if summary.get("lookalikes"):
        parts.append(f"{summary['lookalikes_flagged']} of {count(summary['lookalikes'], 'lookalike')} flagged")
    if "heldout" in summary:
        parts.append(f"{summary['heldout_flagged']} of {count(summary['heldout'], 'held-out image')} flagged")
    return ", ".join(parts)
