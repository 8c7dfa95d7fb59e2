"""The demo's one page: what to take away first, then every stage's outputs linked, with its charts.

`write_index(out)` reads what the stages wrote under `out` (queries/, curated/, shards/, dedup/,
train/, demo_summary.json) and writes `out/index.html`: a self-contained page (no script, no
external file; charts are matplotlib SVGs in data URLs, see foundation/plots) with
  - first, the outcome in a few lines: planted copies found, held-out images flagged, zero-shot
    accuracy against chance, samples kept, time taken;
  - matches per entry before and after balancing (the entries with most matches, where balancing acts),
  - download status (successes and each error kind),
  - overlap per test set (the contamination report's share),
  - training loss and zero-shot accuracy over steps, and the time of each step.
"""
from __future__ import annotations

import html
import json
import os

import pyarrow.parquet as pq

from clipdata.pipeline.foundation import plots
from clipdata.pipeline.foundation.words import count, percent

TOP_ENTRIES = 25

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px 32px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:36px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.lead{color:#555;margin-top:0}
.takeaway{background:#eef6ee;border:1px solid #b9d8b9;border-radius:6px;padding:10px 16px;margin:16px 0}
.takeaway ul{margin:6px 0;padding-left:20px}.takeaway li{margin:2px 0}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img.plot{display:block;max-width:100%;height:auto;margin:12px 0}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.row>*{flex:1 1 420px;min-width:0}
.small{color:#666;font-size:13px}
"""


def _read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _link(rel: str, text: str) -> str:
    return f'<a href="{html.escape(rel, quote=True)}">{html.escape(text)}</a>'


def _table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="n">{html.escape(str(v))}</td>' if i in numeric
                                    else f"<td>{html.escape(str(v))}</td>" for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def takeaway(summary: dict) -> list[str]:
    """The page's first lines: the demo's outcome, each a sentence a reader checks at a glance."""
    lines = []
    if "planted_found" in summary:
        line = (f"Contamination: {summary['planted_found']} of "
                f"{count(summary['planted'], 'planted copy', 'planted copies')} of training images found")
        if summary.get("lookalikes"):
            line += (f"; {summary['lookalikes_flagged']} of {count(summary['lookalikes'], 'lookalike')} "
                     "(same class, another picture) flagged")
        if "heldout" in summary:
            line += f"; {summary['heldout_flagged']} of {count(summary['heldout'], 'held-out test image')} flagged"
        lines.append(line + ".")
    if "samples" in summary:
        line = (f"Data: {count(summary['samples'], 'image-text pair')} in {count(summary['shards'], 'shard')} "
                f"from {summary['pool_rows']:,} pool rows")
        if "clean_samples" in summary:
            line += f", {summary['clean_samples']:,} after the blocklist"
        lines.append(line + ".")
    if summary.get("zeroshot_top1") is not None:
        chance = f" (chance {percent(summary['chance'])})" if summary.get("chance") else ""
        lines.append(f"Training: zero-shot top-1 {percent(summary['zeroshot_top1'])} on the held-out test set{chance}.")
    if summary.get("seconds", {}).get("total"):
        lines.append(f"Time: {summary['seconds']['total']:,.0f} s for every step on this machine.")
    return lines


def _queries_section(out: str) -> str:
    queries = _read_json(os.path.join(out, "queries", "queries.json"))
    if not queries:
        return ""
    rows = [[source, f"{v['added']:,}"] for source, v in queries["per_source"].items()]
    return (f"<h2>1. Query list</h2><p>{count(queries['entries'], 'entry', 'entries')}: "
            f"{_link('queries/queries.txt', 'queries.txt')} ({_link('queries/queries.json', 'details')}).</p>"
            + _table(["source", "entries added"], rows, numeric={1}))


def _curate_section(out: str) -> str:
    counts_path = os.path.join(out, "curated", "entry_counts.parquet")
    stats = _read_json(os.path.join(out, "curated", "curate_stats.json"))
    if not stats or not os.path.exists(counts_path):
        return ""
    counts = pq.read_table(counts_path, columns=["entry", "matched", "kept"]).to_pylist()
    head = sorted((c for c in counts if c["matched"]), key=lambda c: (-c["matched"], c["entry"]))[:TOP_ENTRIES]
    t = stats["max_per_entry"]
    read = stats["rows_read"] or 1
    dropped = [[reason, f"{n:,}", percent(n / read)]
               for reason, n in sorted(stats["dropped"].items(), key=lambda kv: -kv[1])]
    chart = plots.horizontal_bars(
        f"The {len(head)} entries with the most matching pairs, before and after balancing",
        [c["entry"] for c in head],
        [("matched", [c["matched"] for c in head], plots.GREY), ("kept", [c["kept"] for c in head], plots.BLUE)],
        xlabel="image-text pairs", marker=(t, f"t = {t:,} (the balancing threshold)"))
    worldwide = ""
    languages = stats.get("languages")
    if languages:
        names = [k for k in languages if k != "other"] + (["other"] if "other" in languages else [])
        worldwide = (
            "<p>Worldwide (MetaCLIP 2): each caption's language is identified (fastText's lid.176) and "
            "matched against its own language's list; English keeps t, every other language gets the t that "
            "leaves the same share of its matches in the tail. Captions in a language without a list are "
            "<i>other</i>.</p>"
            + plots.horizontal_bars(
                "Pairs per language, before and after balancing", names,
                [("captions identified", [languages[k]["captions"] for k in names], plots.GREY),
                 ("matched its list", [languages[k]["captions_matched"] for k in names], plots.ORANGE),
                 ("kept", [languages[k]["pairs_kept"] for k in names], plots.BLUE)],
                xlabel="captions / image-text pairs")
            + _table(["language", "captions", "matched", "kept", "t"],
                     [[k, f"{languages[k]['captions']:,}", f"{languages[k]['captions_matched']:,}",
                       f"{languages[k]['pairs_kept']:,}", f"{languages[k]['t']:,}" if "t" in languages[k] else "-"]
                      for k in names], numeric={1, 2, 3, 4}))
    return (f"<h2>2. Curate</h2><p>{stats['rows_kept']:,} of {count(stats['rows_read'], 'pool row')} kept "
            f"({percent(stats['rows_kept'] / read)}). Balancing is MetaCLIP's, at t = {t:,}: an entry matched by "
            f"more than t pairs gives each of them a t / matches chance, and a pair is kept when any of its "
            f"entries keeps it. An entry matched alone keeps about t; pairs matching several head entries at once "
            f"(a colour and a shape) have several chances, so head entries keep more than t while the tail is "
            f"kept whole. {_link('curated/curate_stats.json', 'curate_stats.json')}</p>"
            + chart + worldwide + "<p>Pool rows dropped, by reason:</p>"
            + _table(["reason", "rows", "share of pool"], dropped, numeric={1, 2}))


def _download_section(out: str) -> str:
    manifest = _read_json(os.path.join(out, "shards", "manifest.json"))
    if not manifest:
        return ""
    totals = manifest["totals"]
    status = {"success": totals["samples"], **dict(sorted(totals.get("errors", {}).items(), key=lambda kv: -kv[1]))}
    rows = max(sum(status.values()), 1)
    chart = plots.horizontal_bars("Download outcome per curated row", list(status),
                                  [("rows", list(status.values()), plots.GREEN)], xlabel="rows",
                                  value_text=lambda v: f"{v:,.0f} ({percent(v / rows)})")
    return (f"<h2>3. Download</h2><p>{count(totals['samples'], 'sample')} in "
            f"{count(len(manifest['shards']), 'shard')} ({_link('shards/manifest.json', 'manifest.json')}); "
            "every failed row is kept in its shard's parquet with its error kind.</p>" + chart)


def _contamination_section(out: str, summary: dict) -> str:
    report = _read_json(os.path.join(out, "dedup", "report.json"))
    if not report:
        return ""
    sets = report["test_sets"]
    rows = [[s["name"], f"{s['size']:,}", f"{s['overlap']:,}", percent(s["overlap"] / s["size"] if s["size"] else 0)]
            for s in sets]
    blocked = _read_json(os.path.join(out, "shards_clean", "manifest.json"))
    after = f"; after the blocklist {blocked['totals']['samples']:,} samples remain" if blocked else ""
    lines = takeaway(summary)[:1] if "planted_found" in summary else []
    chart = plots.horizontal_bars(
        "Test images with a near-duplicate in the training shards", [s["name"] for s in sets],
        [("overlap", [100 * s["overlap"] / s["size"] if s["size"] else 0 for s in sets], plots.RED)],
        xlabel="share of the test set (%)", value_text=lambda v: percent(v / 100), integer=False)
    return (f"<h2>4. Contamination</h2><p>{html.escape(' '.join(lines))} "
            f"{_link('dedup/report.html', 'report.html')} shows each test image beside its training twin; "
            f"{_link('dedup/blocklist.txt', 'blocklist.txt')} lists the training keys removed{after}.</p>"
            + '<div class="row"><div>'
            + _table(["test set", "images", "with a copy", "share"], rows, numeric={1, 2, 3})
            + f"</div><div>{chart}</div></div>")


def _train_section(out: str, summary: dict) -> str:
    log_path = os.path.join(out, "train", "log.jsonl")
    if not os.path.exists(log_path):
        return ""
    with open(log_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    loss = [(r["step"], r["loss"]) for r in records if "loss" in r]
    top1 = [(r["step"], r["zeroshot/top1"]) for r in records if "zeroshot/top1" in r]
    top5 = [(r["step"], r["zeroshot/top5"]) for r in records if "zeroshot/top5" in r]
    chance = summary.get("chance")
    result = ""
    if top1:
        result = (f"Zero-shot top-1 on the held-out test set after {top1[-1][0]:,} steps: {percent(top1[-1][1])}"
                  + (f" (chance {percent(chance)})" if chance else "") + ". ")
    loss_chart = plots.line_chart("Training loss", [("loss", loss, plots.BLUE)], xlabel="training step",
                                  ylabel="contrastive loss (nats)")
    accuracy_chart = plots.line_chart(
        "Zero-shot accuracy on the held-out test set", [("top-1", top1, plots.RED), ("top-5", top5, plots.ORANGE)],
        xlabel="training step", ylabel="accuracy", percent_axis=True,
        reference=(chance, f"chance (top-1), {percent(chance)}") if chance else None)
    return (f"<h2>5. Train</h2><p>{html.escape(result)}{_link('train/log.jsonl', 'log.jsonl')}</p>"
            f'<div class="row"><div>{loss_chart}</div><div>{accuracy_chart}</div></div>')


def _time_section(summary: dict) -> str:
    seconds = summary.get("seconds")
    if not seconds:
        return ""
    rows = [[name, f"{s:,.0f} s"] for name, s in seconds.items()]
    return "<h2>Time per step</h2>" + _table(["step", "wall time"], rows, numeric={1})


def write_index(out: str) -> str:
    summary = _read_json(os.path.join(out, "demo_summary.json")) or {}
    lines = takeaway(summary)
    first = ("<div class=\"takeaway\"><b>What to take away</b><ul>"
             + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul></div>") if lines else ""
    sections = [_queries_section(out), _curate_section(out), _download_section(out),
                _contamination_section(out, summary), _train_section(out, summary), _time_section(summary)]
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>clipdata demo</title>"
            f"<style>{CSS}</style></head><body><main><h1>clipdata demo</h1>"
            "<p class=\"lead\">Every stage on the synthetic web the project generated and served on 127.0.0.1: "
            "query list &rarr; curate &rarr; download &rarr; contamination check and blocklist &rarr; train.</p>"
            + first + "".join(sections) + "</main></body></html>\n")
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
