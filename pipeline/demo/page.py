"""The demo's one page: every stage's outputs linked, with plots drawn as inline SVG.

`write_index(out)` reads what the stages wrote under `out` (queries/, curated/, shards/, dedup/,
train/) and writes `out/index.html`: a self-contained page (no script, no external file) with
  - matches per entry before and after balancing (the head entries, where balancing acts),
  - download status (successes and each error kind),
  - overlap per test set (the contamination report's %),
  - training loss and zero-shot accuracy over steps.
"""
from __future__ import annotations

import html
import json
import os

import pyarrow.parquet as pq

WIDTH, HEIGHT, PAD = 560, 220, 40


def _bars(title: str, labels: list[str], series: list[tuple[str, list[float], str]], unit: str = "") -> str:
    """Grouped bar chart: one group per label, one bar per series (name, values, colour)."""
    if not labels:
        return f"<p>{html.escape(title)}: nothing to plot.</p>"
    top = max((v for _, values, _ in series for v in values), default=1) or 1
    group = (WIDTH - 2 * PAD) / len(labels)
    bar = group * 0.8 / len(series)
    parts = [f'<svg width="{WIDTH}" height="{HEIGHT + 60}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{PAD}" y="14" font-weight="bold">{html.escape(title)}</text>']
    for i, label in enumerate(labels):
        x0 = PAD + i * group
        for j, (_, values, colour) in enumerate(series):
            h = (HEIGHT - PAD) * values[i] / top
            parts.append(f'<rect x="{x0 + j * bar:.1f}" y="{HEIGHT - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{colour}"><title>{html.escape(label)}: {values[i]:g}{unit}</title></rect>')
            if len(labels) * len(series) <= 12:  # room for the value above each bar
                parts.append(f'<text x="{x0 + (j + 0.5) * bar:.1f}" y="{HEIGHT - h - 3:.1f}" font-size="10" '
                             f'text-anchor="middle">{values[i]:,.4g}{unit}</text>')
        parts.append(f'<text x="{x0 + group / 2:.1f}" y="{HEIGHT + 12}" font-size="9" text-anchor="end" '
                     f'transform="rotate(-40 {x0 + group / 2:.1f} {HEIGHT + 12})">{html.escape(label[:18])}</text>')
    parts.append(f'<text x="2" y="{PAD}" font-size="10">{top:g}{unit}</text>')
    for j, (name, _, colour) in enumerate(series):
        parts.append(f'<rect x="{WIDTH - 150}" y="{22 + 14 * j}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{WIDTH - 135}" y="{31 + 14 * j}" font-size="11">{html.escape(name)}</text>')
    return "".join(parts) + "</svg>"


def _lines(title: str, series: list[tuple[str, list[tuple[float, float]], str]]) -> str:
    """Line chart of (x, y) points per series, each scaled to its own range (labelled)."""
    series = [s for s in series if s[1]]
    if not series:
        return f"<p>{html.escape(title)}: nothing to plot.</p>"
    xs = [x for _, points, _ in series for x, _ in points]
    x_lo, x_hi = min(xs), max(xs) or 1
    parts = [f'<svg width="{WIDTH}" height="{HEIGHT + 30}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{PAD}" y="14" font-weight="bold">{html.escape(title)}</text>']
    for j, (name, points, colour) in enumerate(series):
        ys = [y for _, y in points]
        y_lo, y_hi = min(ys), max(ys)
        span = (y_hi - y_lo) or 1
        coords = " ".join(f"{PAD + (WIDTH - 2 * PAD) * (x - x_lo) / ((x_hi - x_lo) or 1):.1f},"
                          f"{HEIGHT - (HEIGHT - PAD) * (y - y_lo) / span:.1f}" for x, y in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        parts.append(f'<text x="{WIDTH - 230}" y="{30 + 14 * j}" font-size="11" fill="{colour}">'
                     f'{html.escape(name)}: {y_lo:.3g} to {y_hi:.3g}</text>')
    parts.append(f'<text x="{PAD}" y="{HEIGHT + 22}" font-size="10">step {x_lo:g} to {x_hi:g}</text>')
    return "".join(parts) + "</svg>"


def _read_json(path: str):
    return json.load(open(path)) if os.path.exists(path) else None


def write_index(out: str) -> str:
    sections = []
    link = lambda rel, text: f'<a href="{html.escape(rel)}">{html.escape(text)}</a>'  # noqa: E731

    queries = _read_json(os.path.join(out, "queries", "queries.json"))
    if queries:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v['added']:,}</td></tr>" for k, v in queries["per_source"].items())
        sections.append(f"<h2>1. Query list</h2><p>{queries['entries']:,} entries: "
                        f"{link('queries/queries.txt', 'queries.txt')} ({link('queries/queries.json', 'details')})</p>"
                        f"<table><tr><th>source</th><th>entries added</th></tr>{rows}</table>")

    counts_path = os.path.join(out, "curated", "entry_counts.parquet")
    stats = _read_json(os.path.join(out, "curated", "curate_stats.json"))
    if stats and os.path.exists(counts_path):
        counts = pq.read_table(counts_path).to_pylist()
        head = sorted((c for c in counts if c["matched"]), key=lambda c: -c["matched"])[:25]
        dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(stats["dropped"].items(), key=lambda kv: -kv[1]))
        sections.append(
            f"<h2>2. Curate</h2><p>{stats['rows_kept']:,} of {stats['rows_read']:,} pool rows kept; dropped: "
            f"{html.escape(dropped)}. {link('curated/curate_stats.json', 'curate_stats.json')}</p>"
            + _bars(f"pairs per entry, before and after balancing (t = {stats['max_per_entry']})",
                    [c["entry"] for c in head],
                    [("matched", [c["matched"] for c in head], "#8aa"), ("kept", [c["kept"] for c in head], "#246")]))

    manifest = _read_json(os.path.join(out, "shards", "manifest.json"))
    if manifest:
        totals = manifest["totals"]
        status = {"success": totals["samples"], **totals.get("errors", {})}
        sections.append(
            f"<h2>3. Download</h2><p>{totals['samples']:,} samples in {len(manifest['shards'])} shards "
            f"({link('shards/manifest.json', 'manifest.json')})</p>"
            + _bars("download status", list(status), [("rows", list(status.values()), "#264")]))

    report = _read_json(os.path.join(out, "dedup", "report.json"))
    if report:
        sets = report["test_sets"]
        lines = "".join(f"<tr><td>{html.escape(s['name'])}</td><td>{s['size']}</td><td>{s['overlap']}</td>"
                        f"<td>{s['overlap_percent']:.1f}%</td></tr>" for s in sets)
        blocked = _read_json(os.path.join(out, "shards_clean", "manifest.json"))
        after = f"; after the blocklist {blocked['totals']['samples']:,} samples remain" if blocked else ""
        sections.append(
            f"<h2>4. Contamination</h2><p>{link('dedup/report.html', 'report.html')} (test images beside their "
            f"training twins), {link('dedup/blocklist.txt', 'blocklist.txt')}{after}.</p>"
            f"<table><tr><th>test set</th><th>images</th><th>overlap</th><th>%</th></tr>{lines}</table>"
            + _bars("overlap per test set", [s["name"] for s in sets],
                    [("overlap %", [s["overlap_percent"] for s in sets], "#a33")], "%"))

    log_path = os.path.join(out, "train", "log.jsonl")
    if os.path.exists(log_path):
        records = [json.loads(line) for line in open(log_path) if line.strip()]
        loss = [(r["step"], r["loss"]) for r in records if "loss" in r]
        top1 = [(r["step"], r["zeroshot/top1"]) for r in records if "zeroshot/top1" in r]
        last = top1[-1][1] if top1 else None
        summary = _read_json(os.path.join(out, "demo_summary.json")) or {}
        chance = summary.get("chance")
        result = (f"zero-shot top-1 on the held-out test set: {100 * last:.1f}%"
                  + (f" (chance {100 * chance:.1f}%)" if chance else "")) if last is not None else ""
        sections.append(f"<h2>5. Train</h2><p>{html.escape(result)}. {link('train/log.jsonl', 'log.jsonl')}</p>"
                        + _lines("training loss", [("loss", loss, "#246")])
                        + _lines("zero-shot top-1", [("top-1", top1, "#a33")]))

    summary = _read_json(os.path.join(out, "demo_summary.json")) or {}
    if summary.get("seconds"):
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{s:,.0f} s</td></tr>" for name, s in summary["seconds"].items())
        sections.append(f"<h2>Time per step</h2><table><tr><th>step</th><th>wall time</th></tr>{rows}</table>")

    page = ("<!doctype html><html><head><meta charset='utf-8'><title>clipdata demo</title>"
            "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body><h1>clipdata demo</h1>"
            "<p>Every stage on the synthetic web the project generated and served on 127.0.0.1.</p>"
            + "".join(sections) + "</body></html>")
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
